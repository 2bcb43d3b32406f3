//! The HTTPS proxy: `curl --proxy` to an HTTPS origin with a self-signed certificate. A host
//! listed for interception is answered with a certificate from the daemon's own CA (exported
//! with `pollen ca export`), and its matching URLs go through P2P; a host not listed is
//! tunnelled untouched (curl sees the origin's own certificate).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::origin::{random_data, Origin};

async fn tls_origin(cert_pem: &str, key_pem: &str, size: u64) -> Origin {
    Origin::start_tls(
        ([127, 0, 0, 1], 0).into(),
        random_data(size as usize),
        cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .await
    .expect("tls origin")
}

/// `pollen ca export` for a daemon, written to `dir/NAME-ca.pem`.
async fn export_ca(d: &DaemonProc, dir: &Path) -> std::path::PathBuf {
    let out = tokio::process::Command::new(bin())
        .args(["ca", "export", "--data-dir"])
        .arg(&d.data_dir)
        .output()
        .await
        .expect("pollen ca export runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("pem");
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
    let path = dir.join(format!("{}-ca.pem", d.name));
    std::fs::write(&path, text).expect("write ca");
    path
}

/// curl through `proxy`, trusting `ca`; the output path on success, curl's stderr otherwise.
async fn curl(proxy: &str, ca: &Path, url: &str, out: &Path) -> Result<(), String> {
    let o = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "120", "--proxy"])
        .arg(format!("http://{proxy}"))
        .arg("--cacert")
        .arg(ca)
        .arg("-o")
        .arg(out)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs");
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intercepted_https_urls_go_through_p2p_and_other_hosts_are_tunnelled() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let size = 24 * MIB;
    let intercepted = tls_origin(&cert_pem, &key_pem, size).await;
    let tunnelled = tls_origin(&cert_pem, &key_pem, MIB).await;
    let work = tempfile::tempdir().expect("tmp");
    let origin_ca = work.path().join("origin-ca.pem");
    std::fs::write(&origin_ca, &cert_pem).expect("write");
    let config = work.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!(
            "origin_ca_certs = [{ca:?}]\n[proxy]\nintercept_hosts = [{host:?}]\n[[proxy.rules]]\nregex = \"/blob$\"\n",
            ca = origin_ca.display().to_string(),
            host = format!("^127\\.0\\.0\\.1:{}$", intercepted.addr.port()),
        ),
    )
    .expect("config");
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.daemon_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let cluster = Cluster::start(spec).await.expect("cluster");

    // Both peers fetch the intercepted URL, each trusting its own daemon's CA.
    let url = format!("https://127.0.0.1:{}/blob", intercepted.addr.port());
    for d in &cluster.peers {
        let ca = export_ca(d, work.path()).await;
        let proxy = d.proxy_addr().await.expect("proxy");
        let out = work.path().join(format!("{}.out", d.name));
        curl(&proxy, &ca, &url, &out)
            .await
            .expect("curl through the intercepting proxy");
        assert_eq!(
            sha256_file(&out),
            intercepted.digest(),
            "{} got other bytes",
            d.name
        );
        let s = d.stat().await.expect("stat");
        assert_eq!(
            s.proxy_p2p_served, 1,
            "{}: the URL did not go through P2P",
            d.name
        );
        assert_eq!(s.origin_bytes, 0, "{} went to the origin itself", d.name);
    }
    let served = intercepted.bytes_served();
    assert!(
        served as f64 <= 1.1 * size as f64,
        "the origin served {served} bytes for a {size}-byte file to two peers"
    );
    let p2p: u64 = {
        let mut t = 0;
        for d in &cluster.peers {
            t += d.stat().await.expect("stat").p2p_download_bytes;
        }
        t
    };
    assert_eq!(p2p, 2 * size, "the peers did not get the file from peers");

    // A URL on the intercepted host that no rule matches is relayed, not P2P.
    let d = &cluster.peers[0];
    let ca = work.path().join(format!("{}-ca.pem", d.name));
    let proxy = d.proxy_addr().await.expect("proxy");
    let err = curl(
        &proxy,
        &ca,
        &format!("https://127.0.0.1:{}/missing", intercepted.addr.port()),
        &work.path().join("missing"),
    )
    .await
    .expect_err("a 404 fails curl --fail");
    assert!(err.contains("404"), "{err}");
    assert_eq!(d.stat().await.expect("stat").proxy_p2p_served, 1);

    // A host not listed is tunnelled: curl sees the origin's own certificate (and would
    // reject the Pollen CA's).
    let out = work.path().join("tunnelled");
    let url = format!("https://127.0.0.1:{}/blob", tunnelled.addr.port());
    curl(&proxy, &origin_ca, &url, &out)
        .await
        .expect("tunnelled curl");
    assert_eq!(sha256_file(&out), tunnelled.digest());
    assert!(
        curl(&proxy, &ca, &url, &work.path().join("x"))
            .await
            .is_err(),
        "a tunnelled host presented the Pollen CA's certificate"
    );
}
