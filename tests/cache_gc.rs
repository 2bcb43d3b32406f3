//! Cache garbage collection: over its quota, a daemon evicts the least recently used tasks,
//! keeps serving, and a file it handed out stays intact.

mod common;

use std::time::Duration;

use common::*;
use pollen::cluster::{Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_quota_the_cache_evicts_the_least_recently_used_tasks() {
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!("[gc]\ninterval = \"1s\"\nquota = {}\n", 20 * MIB),
    )
    .expect("config");
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let cluster = Cluster::start(spec).await.expect("daemon");
    let d = &cluster.peers[0];
    let mut origins = Vec::new();
    for i in 0..3 {
        let o = origin(8 * MIB).await;
        let out = work.path().join(format!("out{i}"));
        d.download(&o.url("/blob"), &out, None).await.expect("get");
        origins.push((o, out));
        // Access times have one-second resolution; keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let deadline = std::time::Instant::now() + HANG;
    let held = loop {
        let tasks = d.stat().await.expect("stat").tasks;
        let bytes: u64 = tasks.iter().map(|t| t.content_length).sum();
        if bytes <= 20 * MIB {
            break tasks;
        }
        assert!(std::time::Instant::now() < deadline, "nothing was evicted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(d.log_text().contains("evicted from the cache"));
    // The files handed out are intact, evicted or not.
    for (o, out) in &origins {
        assert_eq!(sha256_file(out), o.digest());
    }
    // The evicted one is simply fetched again.
    let (o, _) = &origins[0];
    let again = work.path().join("again");
    d.download(&o.url("/blob"), &again, None)
        .await
        .expect("get again");
    assert_eq!(sha256_file(&again), o.digest());
    assert_eq!(o.bytes_served(), 16 * MIB, "the first file was not evicted");
}
