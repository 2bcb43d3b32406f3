//! `pollen get`'s options for scripts, with real processes: `--timeout` gives up (and a rerun
//! resumes), `--no-origin` fails rather than read the origin, and an existing output is left
//! alone unless `--overwrite` says otherwise.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};

/// Runs `pollen get URL -O OUT EXTRA…` against `daemon`: its exit code and stderr.
async fn get(
    daemon: &DaemonProc,
    url: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> (i32, String) {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["get".as_ref(), url.as_ref(), "-O".as_ref(), out.as_os_str()];
    args.extend(extra.iter().map(|e| std::ffi::OsStr::new(*e)));
    let o = pollen_cli(daemon, &args).await;
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_gives_up_and_a_rerun_completes() {
    // About 4 s at the slow route's pace: longer than the timeout.
    let (origin, url, cluster) = lone_daemon_and_slow_origin(24 * MIB).await;
    let d = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    let (code, err) = get(d, &url, &out, &["--timeout", "1s"]).await;
    assert_eq!(code, 124, "{err}");
    assert!(
        err.contains("timed out after 1s (--timeout); a rerun resumes"),
        "{err}"
    );
    assert!(!out.exists(), "a partial output was left");
    // The daemon stopped the download nobody waited for.
    common::manager::wait_for_log(&d.log, "nobody waits for the download any more").await;
    let (code, err) = get(d, &url, &out, &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256_file(&out), origin.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_output_is_replaced_only_when_asked() {
    let origin = origin(2 * MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let d = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    std::fs::write(&out, b"the user's own file").expect("write");
    let (code, err) = get(d, &url, &out, &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already exists; pass --overwrite to replace it"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).expect("read"), b"the user's own file");
    assert_eq!(origin.bytes_served(), 0, "refused before any download");
    let (code, err) = get(d, &url, &out, &["--overwrite"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256_file(&out), origin.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_origin_fails_rather_than_read_the_origin_and_takes_what_peers_have() {
    let size = 8 * MIB;
    let origin = origin(size).await;
    let url = origin.url("/blob");

    // No scheduler: only the origin could serve it.
    let alone = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let (code, err) = get(
        &alone.peers[0],
        &url,
        &alone.dir.path().join("a"),
        &["--no-origin"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("no scheduler could be reached, and this download may not read the origin (--no-origin)"),
        "{err}"
    );

    // A swarm where nobody holds it: the scheduler would send this peer to the origin.
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    let swarm = Cluster::start(spec).await.expect("cluster");
    let (code, err) = get(
        &swarm.peers[0],
        &url,
        &swarm.dir.path().join("b"),
        &["--no-origin"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("the scheduler has no peer to offer") && err.contains("--no-origin"),
        "{err}"
    );
    assert!(!swarm.dir.path().join("b").exists());
    assert_eq!(origin.bytes_served(), 0, "the origin was read");

    // Once a peer holds it, --no-origin gets it from that peer.
    let (code, err) = get(&swarm.peers[0], &url, &swarm.dir.path().join("c"), &[]).await;
    assert_eq!(code, 0, "{err}");
    let out = swarm.dir.path().join("d");
    let (code, err) = get(&swarm.peers[1], &url, &out, &["--no-origin"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256_file(&out), origin.digest());
    let s = swarm.peers[1].stat().await.expect("stat");
    assert_eq!((s.p2p_download_bytes, s.origin_bytes), (size, 0), "{s:?}");
}
