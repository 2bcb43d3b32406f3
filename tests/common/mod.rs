//! Helpers shared by the multi-process tests: the binary, a counting origin, sha256 of files.

#![allow(dead_code)]

pub mod hostile_peer;
pub mod manager;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pollen_core::ContentDigest;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::origin::{random_data, Origin};

/// A failsafe against a hung test, not a performance bound.
pub const HANG: Duration = Duration::from_secs(240);

pub const MIB: u64 = 1 << 20;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pollen"))
}

pub async fn origin(size: u64) -> Origin {
    Origin::start(([127, 0, 0, 1], 0).into(), random_data(size as usize))
        .await
        .expect("origin starts")
}

pub fn sha256_file(path: &Path) -> ContentDigest {
    ContentDigest::of(&std::fs::read(path).expect("output readable"))
}

/// One daemon and no scheduler (every download goes to the origin), with `args` as extra
/// daemon flags.
pub async fn lone_daemon(args: &[&str]) -> Cluster {
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = args.iter().map(|a| a.to_string()).collect();
    Cluster::start(spec).await.expect("cluster")
}

/// Runs `pollen ARGS --api-socket SOCKET` against `daemon`, within `HANG`.
pub async fn pollen_cli(daemon: &DaemonProc, args: &[&std::ffi::OsStr]) -> std::process::Output {
    tokio::time::timeout(
        HANG,
        tokio::process::Command::new(bin())
            .args(args)
            .arg("--api-socket")
            .arg(&daemon.socket)
            .output(),
    )
    .await
    .expect("not hung")
    .expect("runs")
}

/// One daemon with no scheduler and an origin serving `size` bytes slowly (about 6 MiB/s, so
/// 24 MiB take some 4 s: long enough to interrupt): the origin, the slow URL, the cluster.
pub async fn lone_daemon_and_slow_origin(size: u64) -> (Origin, String, Cluster) {
    let origin = origin(size).await;
    let url = origin.url("/slow");
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    (origin, url, cluster)
}

/// Downloads `url` on `peer` to `out`; panics if it hangs, returns how it ended.
pub async fn download_within(
    peer: &DaemonProc,
    url: &str,
    out: &Path,
) -> Result<(), tonic::Status> {
    tokio::time::timeout(HANG, peer.download(url, out, None))
        .await
        .expect("the download hung")
}

/// Downloads `url` on every daemon in `peers` at once; returns each outcome.
pub async fn get_all(peers: &[&DaemonProc], url: &str, dir: &Path) -> Vec<Result<PathBuf, String>> {
    let jobs = peers.iter().map(|p| {
        let out = dir.join(format!("{}.out", p.name));
        async move {
            match tokio::time::timeout(HANG, p.download(url, &out, None)).await {
                Ok(Ok(())) => Ok(out),
                Ok(Err(s)) => Err(format!("{}: {}", p.name, s.message())),
                Err(_) => Err(format!("{}: hung", p.name)),
            }
        }
    });
    futures::future::join_all(jobs).await
}

pub fn assert_all_verified(results: &[Result<PathBuf, String>], expected: ContentDigest) {
    for r in results {
        let path = r.as_ref().expect("download succeeded");
        assert_eq!(
            sha256_file(path),
            expected,
            "{} differs from the origin",
            path.display()
        );
    }
}

/// Mounts a tmpfs of `size` (e.g. `8m`) on `dir` (root only); false when that failed.
pub fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Lazily unmounts `dir`.
pub fn unmount(dir: &Path) {
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status();
}
