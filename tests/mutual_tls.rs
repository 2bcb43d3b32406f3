//! Mutual TLS between every role: a cluster with it on moves the file peer to peer and
//! verified; a daemon without the cluster's certificates can neither register with the
//! scheduler nor fetch pieces from a daemon, and still gets its file from the origin.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use pollen::cluster::{tls_flags, Cluster, ClusterSpec, DaemonProc};
use pollen::origin::Origin;
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
    // Give both time to try (the host session retries with backoff) before checking.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
