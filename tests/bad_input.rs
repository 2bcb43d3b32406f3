//! Bad input and hostile bytes: each gives one clear error line and a non-zero exit, never a
//! panic, and never a corrupt file at the output path or in the cache.

mod common;

use std::process::Output;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pollen_get(daemon: &DaemonProc, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.arg("get")
        .args(args)
        .arg("--api-socket")
        .arg(&daemon.socket);
    tokio::time::timeout(HANG, cmd.output())
        .await
        .expect("not hung")
        .expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails_with(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
}

async fn single_daemon() -> Cluster {
    let spec = ClusterSpec::standalone(bin(), 1);
    Cluster::start(spec).await.expect("cluster")
}

async fn complete_tasks(d: &DaemonProc) -> usize {
    d.stat()
        .await
        .expect("stat")
        .tasks
        .iter()
        .filter(|t| t.complete)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_errors_wrong_digests_and_bad_urls_fail_cleanly() {
    let origin = origin(6 * MIB).await;
    let cluster = single_daemon().await;
    let d = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    let out_s = out.to_str().expect("utf-8");

    let o = pollen_get(d, &[&origin.url("/missing"), "-O", out_s]).await;
    assert_fails_with(&o, "origin returned HTTP 404");

    let o = pollen_get(d, &[&origin.url("/truncated"), "-O", out_s]).await;
    assert_fails_with(&o, "closed the connection after");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = pollen_get(d, &[&origin.url("/blob"), "-O", out_s, "--digest", &wrong]).await;
    assert_fails_with(&o, "digest mismatch");

    // A closed port: its cause once, without the HTTP client's layers (which repeated the
    // URL and said "error" three times).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = format!("http://{closed}/x");
    let o = pollen_get(d, &[&url, "-O", out_s]).await;
    assert_fails_with(
        &o,
        &format!("cannot reach the origin for {url}: Connection refused"),
    );
    assert_eq!(stderr(&o).matches("error").count(), 1, "{}", stderr(&o));
    assert_eq!(stderr(&o).matches(&url).count(), 1, "{}", stderr(&o));

    let o = pollen_get(d, &["http://[not-a-url", "-O", out_s]).await;
    assert_fails_with(&o, "malformed URL");

    let o = pollen_get(
        d,
        &[&origin.url("/blob"), "-O", out_s, "--digest", "sha256:xyz"],
    )
    .await;
    assert_fails_with(&o, "malformed digest");

    let o = pollen_get(d, &[&origin.url("/blob"), "-O", "/nonexistent-dir/out"]).await;
    assert_fails_with(&o, "does not exist");

    assert!(!out.exists(), "a failed get left a file at the output path");
    assert_eq!(
        complete_tasks(d).await,
        0,
        "a failed download left a complete task in the cache"
    );
    let leftovers: Vec<_> = std::fs::read_dir(cluster.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".pollen-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );

    // The right digest still works afterwards, and the daemon is alive.
    let right = origin.digest().to_string();
    let o = pollen_get(d, &[&origin.url("/blob"), "-O", out_s, "--digest", &right]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256_file(&out).to_string(), right);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_without_a_daemon_says_how_to_start_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = tokio::process::Command::new(bin())
        .args(["get", "http://127.0.0.1:9/x", "-O"])
        .arg(dir.path().join("out"))
        .arg("--api-socket")
        .arg(dir.path().join("nobody.sock"))
        .output()
        .await
        .expect("runs");
    assert_fails_with(&o, "no pollen daemon is running");
    assert!(stderr(&o).contains("pollen daemon --scheduler"));
}

/// An output under a path that is a file is named as such (not as a missing directory),
/// `pollen ca export` without a CA says where the daemon makes one and creates nothing, and
/// `pollen certs dev` names a directory it cannot use once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_for_a_directory_and_a_missing_ca_are_named_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").expect("file");
    let o = tokio::process::Command::new(bin())
        .args(["get", "http://127.0.0.1:9/x", "-O"])
        .arg(file.join("out"))
        .arg("--api-socket")
        .arg(dir.path().join("nobody.sock"))
        .output()
        .await
        .expect("runs");
    assert_fails_with(&o, "a-file is a file, not a directory");

    let data = dir.path().join("data");
    let o = tokio::process::Command::new(bin())
        .args(["ca", "export", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .expect("runs");
    assert_fails_with(&o, "no proxy CA under");
    assert!(stderr(&o).contains("first start"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "a certificate was printed");
    assert!(!data.exists(), "ca export created {}", data.display());

    // A directory the dev certificates cannot go to is named once.
    let o = tokio::process::Command::new(bin())
        .args(["certs", "dev", "--out"])
        .arg(file.join("certs"))
        .output()
        .await
        .expect("runs");
    assert_fails_with(&o, "cannot write the dev certificates");
    let shown = file.join("certs").display().to_string();
    assert_eq!(stderr(&o).matches(&shown).count(), 1, "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_frame_on_the_upload_port_is_refused_and_the_daemon_keeps_serving() {
    let origin = origin(6 * MIB).await;
    let cluster = single_daemon().await;
    let d = &cluster.peers[0];
    let upload = d.upload_addr().await.expect("upload addr");
    for frame in [
        vec![0x01, 0xff, 0xff, 0xff, 0xff],
        vec![0x04, 0x00, 0x00, 0x00, 0x01, 0x00],
        vec![0x99, 0, 0, 0, 0],
    ] {
        let mut s = tokio::net::TcpStream::connect(upload)
            .await
            .expect("connect");
        s.write_all(&frame).await.expect("write");
        let mut reply = Vec::new();
        tokio::time::timeout(HANG, s.read_to_end(&mut reply))
            .await
            .expect("the daemon closes the connection")
            .expect("read");
        assert_eq!(
            reply.first(),
            Some(&0x7f),
            "expected an error frame, got {reply:?}"
        );
    }
    assert_eq!(
        d.stat().await.expect("stat").upload_protocol_errors,
        3,
        "the refused connections are not counted"
    );
    let out = cluster.dir.path().join("out");
    d.download(&origin.url("/blob"), &out, None)
        .await
        .expect("still serves");
    assert_eq!(sha256_file(&out), origin.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_plainly_and_leaves_no_file_behind() {
    // Mounting a small tmpfs needs root.
    if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::root()]) {
        return;
    }
    let origin = origin(32 * MIB).await;
    let work = tempfile::tempdir().expect("tempdir");
    let small_data = work.path().join("data");
    let small_out = work.path().join("out");
    assert!(
        mount_tmpfs(&small_data, "8m"),
        "cannot mount a tmpfs for the data dir"
    );
    assert!(
        mount_tmpfs(&small_out, "8m"),
        "cannot mount a tmpfs for the output"
    );
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.data_root = Some(small_data.clone());
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d = &cluster.peers[0];

    // The data directory fills up while storing pieces.
    let out = work.path().join("result");
    let o = pollen_get(
        d,
        &[&origin.url("/blob"), "-O", out.to_str().expect("utf-8")],
    )
    .await;
    assert_fails_with(&o, "no space left on device");
    assert!(!out.exists());
    assert_eq!(complete_tasks(d).await, 0);
    drop(cluster);
    unmount(&small_data);

    // The output's filesystem fills up while writing the result.
    let spec = ClusterSpec::standalone(bin(), 1);
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d = &cluster.peers[0];
    let out = small_out.join("result");
    let o = pollen_get(
        d,
        &[&origin.url("/blob"), "-O", out.to_str().expect("utf-8")],
    )
    .await;
    assert_fails_with(&o, "no space left on device");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&small_out).expect("dir").count(),
        0,
        "partial output left behind"
    );
    drop(cluster);
    unmount(&small_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_flooding_the_upload_port_are_cut_off_and_children_still_fetch_from_it() {
    let size = 16 * MIB;
    let origin = origin(size).await;
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("daemon.toml");
    std::fs::write(
        &config,
        "max_upload_connections = 4\nupload_first_request_timeout = \"1s\"\n",
    )
    .expect("config");
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.daemon_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let seed = cluster.seed.as_ref().expect("a seed");
    let addr = seed.upload_addr().await.expect("upload address");
    // Every connection slot of the seed, and some of its accept queue, taken by sockets that
    // never send a byte.
    let mut flood = Vec::new();
    for _ in 0..12 {
        flood.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let peer = &cluster.peers[0];
    let r = get_all(&[peer], &origin.url("/blob"), cluster.dir.path()).await;
    assert_all_verified(&r, origin.digest());
    // The seed served the child: the flood did not push it to the origin.
    let got = peer.stat().await.expect("stat").p2p_download_bytes;
    assert!(got > 0, "the child got nothing from the flooded seed");
    for mut s in flood {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(HANG, s.read(&mut byte))
            .await
            .expect("the seed closes an idle socket")
            .unwrap_or(0);
        assert_eq!(n, 0, "an idle socket was sent data");
    }
    let cut = seed.stat().await.expect("stat").upload_timed_out;
    assert!(cut >= 12, "only {cut} idle sockets were cut off");
}
