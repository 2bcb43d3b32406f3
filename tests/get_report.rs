//! What `pollen get` reports at the end, with real processes: how much came from the origin,
//! from peers or from the local cache (the point of the product), in human units, on its
//! final line and as JSON with `--json`.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};

/// Runs `pollen get URL -O OUT --json` against `daemon`; its final line and JSON report.
async fn get(daemon: &DaemonProc, url: &str, out: &std::path::Path) -> (String, serde_json::Value) {
    let o = tokio::time::timeout(
        HANG,
        tokio::process::Command::new(bin())
            .args(["get", url, "--json", "-O"])
            .arg(out)
            .arg("--api-socket")
            .arg(&daemon.socket)
            .output(),
    )
    .await
    .expect("not hung")
    .expect("runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "pollen get failed: {err}");
    let report = serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    let line = err.lines().last().unwrap_or_default().to_string();
    (line, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_report_says_where_the_bytes_came_from() {
    let size = 6 * MIB;
    let origin = origin(size).await;
    let url = origin.url("/blob");

    // Alone: everything from the origin, then everything from the local cache.
    let alone = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let d = &alone.peers[0];
    let (line, r) = get(d, &url, &alone.dir.path().join("a")).await;
    assert_eq!(r["bytes"], size);
    assert_eq!(r["origin_bytes"], size, "{r}");
    assert_eq!(r["peer_bytes"], 0, "{r}");
    assert_eq!(r["from_cache"], false);
    assert!(
        line.contains("6.00 MiB in ") && line.contains("0 B from peers, 6.00 MiB from the origin"),
        "{line}"
    );
    let (line, r) = get(d, &url, &alone.dir.path().join("b")).await;
    assert_eq!(r["from_cache"], true, "{r}");
    assert_eq!(
        (r["origin_bytes"].as_u64(), r["peer_bytes"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(line.contains("6.00 MiB from the local cache"), "{line}");

    // In a swarm whose seed holds the file: everything from peers.
    let swarm = Cluster::start(ClusterSpec::new(bin(), 2))
        .await
        .expect("cluster");
    let (_, first) = get(&swarm.peers[0], &url, &swarm.dir.path().join("c")).await;
    assert_eq!(first["origin_bytes"], 0, "a peer read the origin: {first}");
    let (line, r) = get(&swarm.peers[1], &url, &swarm.dir.path().join("d")).await;
    assert_eq!(r["peer_bytes"], size, "{r}");
    assert_eq!(r["origin_bytes"], 0, "{r}");
    assert!(
        line.contains("6.00 MiB from peers, 0 B from the origin"),
        "{line}"
    );
    assert_eq!(sha256_file(&swarm.dir.path().join("d")), origin.digest());
}
