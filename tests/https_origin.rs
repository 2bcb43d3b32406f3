//! HTTPS origins: fetched over rustls when the origin's CA is trusted, refused when it is not.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::origin::{random_data, Origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_origin_is_fetched_when_its_ca_is_trusted_and_refused_otherwise() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let origin = Origin::start_tls(
        ([127, 0, 0, 1], 0).into(),
        random_data((6 * MIB) as usize),
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .await
    .expect("tls origin");
    let url = format!("https://localhost:{}/blob", origin.addr.port());
    let work = tempfile::tempdir().expect("tempdir");
    let ca = work.path().join("origin-ca.pem");
    std::fs::write(&ca, &cert_pem).expect("write ca");

    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = vec!["--origin-ca-cert".into(), ca.to_string_lossy().into_owned()];
    let trusting = Cluster::start(spec).await.expect("cluster");
    let out = work.path().join("out");
    trusting.peers[0]
        .download(&url, &out, None)
        .await
        .expect("https get");
    assert_eq!(sha256_file(&out), origin.digest());

    let untrusting = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let refused = untrusting.peers[0]
        .download(&url, &work.path().join("refused"), None)
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        refused.message().contains("certificate") || refused.message().contains("Unknown"),
        "unclear TLS error: {}",
        refused.message()
    );
    assert!(!work.path().join("refused").exists());
}
