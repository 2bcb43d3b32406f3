//! Cache garbage collection: over its quota, a daemon evicts the least recently used tasks,
//! keeps serving, and a file it handed out stays intact.

mod common;

use std::time::Duration;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};

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
    let get = |o: &pollen_testkit::origin::Origin, name: &str| {
        let out = work.path().join(name);
        let url = o.url("/blob");
        async move {
            d.download(&url, &out, None).await.expect("get");
            out
        }
    };
    // Access times have one-second resolution: a pause between uses keeps their order
    // unambiguous (a fixed wait is the point here, not a guess at how long something takes).
    let tick = || tokio::time::sleep(Duration::from_millis(1100));
    // A, then B (16 MiB, within the 20 MiB quota), then A used again from the cache, then C:
    // one must go. The least recently used is B; the first stored (what FIFO would drop) is A.
    let (a, b, c) = (
        origin(8 * MIB).await,
        origin(8 * MIB).await,
        origin(8 * MIB).await,
    );
    let out_a = get(&a, "a").await;
    tick().await;
    let out_b = get(&b, "b").await;
    tick().await;
    let out_a2 = get(&a, "a2").await;
    assert_eq!(a.bytes_served(), 8 * MIB, "A was not served from the cache");
    tick().await;
    let out_c = get(&c, "c").await;
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
    for (o, out) in [(&a, &out_a), (&b, &out_b), (&a, &out_a2), (&c, &out_c)] {
        assert_eq!(sha256_file(out), o.digest());
    }
    // B was evicted and is simply fetched again; A and C are still held.
    for (o, name) in [(&a, "a3"), (&b, "b2"), (&c, "c2")] {
        let again = get(o, name).await;
        assert_eq!(sha256_file(&again), o.digest());
    }
    assert_eq!(
        b.bytes_served(),
        16 * MIB,
        "B, the least recently used, was kept"
    );
    assert_eq!(
        a.bytes_served(),
        8 * MIB,
        "A, used again after B, was evicted"
    );
    assert_eq!(c.bytes_served(), 8 * MIB, "C, the newest, was evicted");
}
