//! Mutual TLS between every role: a cluster with it on moves the file peer to peer and
//! verified; a daemon without the cluster's certificates can neither register with the
//! scheduler nor fetch pieces from a daemon, and still gets its file from the origin; with a
//! manager, only schedulers and daemons holding the certificates reach its gRPC port.

mod common;

use std::path::Path;
use std::time::Duration;

use common::manager::*;
use common::*;
use pollen_testkit::cluster::{tls_flags, Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::origin::Origin;
use pollen_tls::{make_dev_certs, Material};
use pollen_wire::{ClientTls, PieceClient, PieceResponse};

/// Downloads `url` on a daemon outside the cluster's trust and checks it came from the
/// origin alone, without the daemon ever opening a session with the scheduler.
async fn fetches_alone(stranger: &DaemonProc, origin: &Origin, dir: &Path) {
    let size = origin.data().len() as u64;
    let results = get_all(&[stranger], &origin.url("/blob"), dir).await;
    assert_all_verified(&results, origin.digest());
    let s = stranger.stat().await.expect("stat");
    assert!(
        !s.scheduler_connected,
        "{} registered with the scheduler",
        stranger.name
    );
    assert_eq!(
        s.p2p_download_bytes, 0,
        "{} got pieces from peers",
        stranger.name
    );
    assert_eq!(
        s.origin_bytes, size,
        "{} did not use the origin",
        stranger.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_daemons_holding_the_cluster_certificates_take_part() {
    let size = 32 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let url = origin.url("/blob");
    let mut spec = ClusterSpec::new(bin(), 3);
    spec.tls = true;
    let cluster = Cluster::start(spec).await.expect("cluster with mutual TLS");
    assert!(cluster.scheduler_url.starts_with("https://"));

    // The cluster itself: peer to peer, every copy verified, the origin read about once.
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, &url, cluster.dir.path()).await;
    assert_all_verified(&results, expected);
    for p in &cluster.peers {
        let s = p.stat().await.expect("stat");
        assert_eq!(s.origin_bytes, 0, "{} went to the origin", p.name);
        assert_eq!(s.p2p_download_bytes, size, "{} missed pieces", p.name);
    }
    let served = origin.bytes_served();
    assert!(
        served as f64 <= 1.1 * size as f64,
        "origin served {served} bytes for a {size}-byte file"
    );

    // Certificates from another CA: the scheduler refuses it (and it refuses the scheduler).
    let other = make_dev_certs(&cluster.dir.path().join("other-ca"), &[]).expect("certs");
    let mut foreign = cluster.stranger("foreign", tls_flags(&other.ca_cert, &other.daemon));
    foreign.start().await.expect("a foreign daemon starts");
    // No TLS at all, pointed at the scheduler's port over plain HTTP/2.
    let plain_url = cluster.scheduler_url.replacen("https://", "http://", 1);
    let mut plain = cluster.stranger("plain", vec!["--scheduler".into(), plain_url]);
    plain.start().await.expect("a plain daemon starts");
    // Both tried, and were turned away, twice (the host session retries with backoff),
    // before anything is checked.
    for stranger in [&foreign, &plain] {
        wait_for_log_count(&stranger.log, "cannot open a host session", 2).await;
    }
    fetches_alone(&foreign, &origin, cluster.dir.path()).await;
    fetches_alone(&plain, &origin, cluster.dir.path()).await;

    // Neither can fetch pieces from a cluster daemon directly.
    let parent = cluster.peers[0].upload_addr().await.expect("upload addr");
    let theirs = Material::load(&other.daemon_config()).expect("load");
    let name = theirs.peer_name().clone();
    let foreign_tls = ClientTls::new(theirs.client_config().expect("client"), name);
    for tls in [Some(&foreign_tls), None] {
        let refused = async {
            let mut c = PieceClient::connect_with(parent, Duration::from_secs(5), tls).await?;
            c.request_bitfield(pollen_core::TaskId([0; 32])).await?;
            c.next_response().await
        }
        .await;
        assert!(
            !matches!(refused, Ok(PieceResponse::Bitfield(_))),
            "a daemon without the cluster's certificate was answered: {refused:?}"
        );
    }

    // A daemon with no certificates pointed at the https:// scheduler is stopped at start
    // with a clear message.
    let mut bare = cluster.stranger("bare", Vec::new());
    assert!(bare.start().await.is_err(), "started without certificates");
    assert!(
        bare.log_text().contains("[tls] is not set"),
        "unclear error: {}",
        bare.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_only_roles_holding_the_cluster_certificates_reach_the_manager() {
    let size = 8 * MIB;
    let origin = origin(size).await;
    let mut spec = ClusterSpec::standalone(bin(), 0);
    spec.tls = true;
    let cluster = Cluster::start(spec)
        .await
        .expect("cluster with certificates");
    let certs = cluster.certs.clone().expect("certificates");
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"3s\"\n")
        .await
        .expect("manager with mutual TLS");
    assert!(m.grpc.starts_with("https://"), "{}", m.grpc);
    let admin = Admin::sign_in(&m).await;

    // A scheduler and two daemons with the cluster's certificates: placed by the manager,
    // connected to the scheduler, peer to peer. (The scheduler listens where its certificate
    // is valid: 127.0.0.1.)
    let mut args = scheduler_args(&m, 0);
    args.extend(tls_flags(&certs.ca_cert, &certs.scheduler));
    let sched = cluster
        .start_scheduler("sched", "127.0.0.1:0", &args)
        .await
        .expect("scheduler");
    admin
        .wait_for("/api/v1/schedulers?active=true", "the scheduler", |v| {
            v.as_array().map(Vec::len) == Some(1)
        })
        .await;
    let ours = tls_flags(&certs.ca_cert, &certs.daemon);
    let ours: Vec<&str> = ours.iter().map(String::as_str).collect();
    let mut a = daemon(&cluster, &m, "member-a", "127.0.1.5", &ours);
    let mut b = daemon(&cluster, &m, "member-b", "127.0.1.6", &ours);
    for d in [&mut a, &mut b] {
        d.start().await.expect("daemon starts");
    }
    for d in [&a, &b] {
        d.wait_connected().await.expect("placed and connected");
        let urls = placement_urls(d);
        assert_eq!(urls.len(), 1, "{urls:?}");
        assert!(urls[0].starts_with("https://127.0.0.1:"), "{urls:?}");
    }
    let url = origin.url("/blob");
    assert_all_verified(
        &get_all(&[&a], &url, cluster.dir.path()).await,
        origin.digest(),
    );
    assert_all_verified(
        &get_all(&[&b], &url, cluster.dir.path()).await,
        origin.digest(),
    );
    let s = b.stat().await.expect("stat");
    assert_eq!(
        s.p2p_download_bytes, size,
        "member-b did not fetch from member-a"
    );
    drop(sched);

    // Outsiders: a daemon and a scheduler with another CA's certificates, a daemon speaking
    // plain HTTP/2 to the TLS port. None is recorded by the manager; the daemons get no
    // placement.
    let other = make_dev_certs(&cluster.dir.path().join("other-ca"), &[]).expect("certs");
    let theirs = tls_flags(&other.ca_cert, &other.daemon);
    let theirs: Vec<&str> = theirs.iter().map(String::as_str).collect();
    let mut foreign = daemon(&cluster, &m, "foreign", "127.0.1.7", &theirs);
    let plain_url = m.grpc.replacen("https://", "http://", 1);
    let mut plain = cluster.stranger(
        "plain",
        vec![
            "--manager".into(),
            plain_url,
            "--upload-listen".into(),
            "127.0.1.8:0".into(),
        ],
    );
    for d in [&mut foreign, &mut plain] {
        d.start().await.expect("an outsider daemon starts");
    }
    let mut args = scheduler_args(&m, 0);
    args.extend(tls_flags(&other.ca_cert, &other.scheduler));
    let _foreign_sched = cluster
        .start_scheduler("foreign-sched", "127.0.0.3:0", &args)
        .await
        .expect("a foreign scheduler starts");
    // The daemons' sessions and the scheduler's registration retry with backoff: give them
    // several tries, then check what each one saw.
    wait_for_log(&foreign.log, "cannot reach the manager").await;
    wait_for_log(&plain.log, "cannot reach the manager").await;
    wait_for_log(
        &cluster.dir.path().join("foreign-sched.log"),
        "cannot register with the manager",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peers = admin.get("/api/v1/peers").await;
    let mut names: Vec<&str> = peers
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["hostname"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["member-a", "member-b"], "an outsider was recorded");
    let schedulers = admin.get("/api/v1/schedulers").await;
    assert_eq!(
        schedulers.as_array().map(Vec::len),
        Some(1),
        "a foreign scheduler registered: {schedulers}"
    );
    for d in [&foreign, &plain] {
        assert!(placement_urls(d).is_empty(), "{} got a placement", d.name);
        let s = d.stat().await.expect("stat");
        assert!(!s.scheduler_connected, "{} reached a scheduler", d.name);
    }

    // No certificates at all, pointed at the https:// manager: stopped at start, saying why.
    let mut bare = cluster.stranger("bare", vec!["--manager".into(), m.grpc.clone()]);
    assert!(bare.start().await.is_err(), "started without certificates");
    assert!(
        bare.log_text().contains("[tls] is not set"),
        "unclear error: {}",
        bare.log_text()
    );
}

/// How a raw TLS client fared against a port: the server's alert if it refused us.
async fn tls_probe(
    addr: &str,
    cfg: std::sync::Arc<pollen_tls::rustls::ClientConfig>,
    h2: bool,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = pollen_tls::rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Under TLS 1.3 the server judges the client's certificate after the client finished
    // its side: a refusal arrives as an alert on the first read. A gRPC server that took us
    // answers the HTTP/2 preface with its SETTINGS frame; the data plane waits for a request,
    // so its check is done by the caller with a real request.
    if h2 {
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .map_err(|e| format!("write: {e}"))?;
    } else {
        tls.write_all(&[0u8; 1])
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    let mut head = [0u8; 9];
    match tokio::time::timeout(HANG, tls.read_exact(&mut head)).await {
        Err(_) => Err("no answer".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Ok(Ok(_)) if h2 && head[3] != 0x4 => Err(format!("not a SETTINGS frame: {head:?}")),
        Ok(Ok(_)) => Ok(()),
    }
}

/// A client config that trusts `ca` and shows `cert` (none: no certificate at all).
fn client_config(
    ca: &Path,
    cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
    h2: bool,
) -> std::sync::Arc<pollen_tls::rustls::ClientConfig> {
    use pollen_tls::rustls;
    use rustls::pki_types::pem::PemObject as _;
    let mut cfg = match cert {
        Some((c, k)) => {
            let m = Material::load(&pollen_tls::TlsConfig::new(
                ca.to_path_buf(),
                c.clone(),
                k.clone(),
            ))
            .expect("certificates");
            (*m.client_config().expect("client config")).clone()
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
                roots.add(c.expect("pem")).expect("a root");
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    if h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    std::sync::Arc::new(cfg)
}

/// Each TLS port of a cluster (the scheduler's and the manager's gRPC ports, a daemon's
/// upload port) refuses a client that trusts the cluster's CA, so that the client goes on
/// with the handshake, but shows no certificate or one another CA signed: the refusal comes
/// from the server (its alert names why). The same client with the cluster's certificate is
/// taken, so the probe itself works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tls_port_refuses_a_client_without_a_certificate_from_the_cluster_ca() {
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.tls = true;
    let cluster = Cluster::start(spec).await.expect("cluster with mutual TLS");
    let certs = cluster.certs.clone().expect("certificates");
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"3s\"\n")
        .await
        .expect("manager");
    let other = make_dev_certs(&cluster.dir.path().join("other-ca"), &[]).expect("certs");
    let strip = |u: &str| u.split_once("://").map_or(u, |(_, a)| a).to_string();
    let upload = cluster.peers[0].upload_addr().await.expect("upload addr");
    let ports = [
        ("scheduler", strip(&cluster.scheduler_url), true),
        ("manager", m.addrs().1, true),
        ("upload", upload.to_string(), false),
    ];
    for (what, addr, h2) in &ports {
        let none = tls_probe(addr, client_config(&certs.ca_cert, None, *h2), *h2).await;
        let e = none.expect_err(&format!(
            "the {what} port took a client without a certificate"
        ));
        assert!(
            e.contains("received fatal alert: CertificateRequired"),
            "{what}: {e}"
        );
        let foreign = client_config(&certs.ca_cert, Some(&other.daemon), *h2);
        let e = tls_probe(addr, foreign, *h2)
            .await
            .expect_err(&format!("the {what} port took another CA's certificate"));
        // Both dev CAs are named alike, so the server finds "its" issuer and the signature
        // check fails (DecryptError); a CA named otherwise gets UnknownCA.
        assert!(
            ["UnknownCA", "BadCertificate", "DecryptError"]
                .iter()
                .any(|a| e.contains(&format!("received fatal alert: {a}"))),
            "{what}: {e}"
        );
        if *h2 {
            let ours = client_config(&certs.ca_cert, Some(&certs.daemon), true);
            tls_probe(addr, ours, true).await.unwrap_or_else(|e| {
                panic!("the {what} port refused the cluster's certificate: {e}")
            });
        }
    }
    // The data plane with the cluster's certificate answers a real request.
    let ours = Material::load(&certs.daemon_config()).expect("load");
    let tls = ClientTls::new(
        ours.client_config().expect("client"),
        ours.peer_name().clone(),
    );
    let mut c = PieceClient::connect_with(upload, Duration::from_secs(5), Some(&tls))
        .await
        .expect("connect");
    c.request_bitfield(pollen_core::TaskId([0; 32]))
        .await
        .expect("request");
    c.next_response()
        .await
        .expect("the upload port answers a client with the cluster's certificate");
}
