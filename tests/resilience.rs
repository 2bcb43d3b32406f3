//! Faults a download must survive: no scheduler, a daemon killed mid-download, restarts, a
//! link that loses a fifth of its packets.

mod common;

use std::time::Duration;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scheduler_get_goes_to_the_origin_and_the_daemon_says_why() {
    let size = 16 * MIB;
    let origin = origin(size).await;
    let cluster = lone_daemon(&[]).await;
    let peer = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    download_within(peer, &origin.url("/blob"), &out)
        .await
        .expect("download succeeds without a scheduler");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(origin.bytes_served(), size);
    let log = peer.log_text();
    assert!(
        log.contains("scheduler unreachable; downloading from the origin"),
        "the daemon did not log why it went to the origin:\n{log}"
    );
}

/// Starts downloading `url` on the first daemon and SIGKILLs it once it holds 3 pieces.
async fn kill_mid_download(cluster: &mut Cluster, url: &str, out: &std::path::Path) {
    {
        let peer = &cluster.peers[0];
        let download = peer.download(url, out, None);
        tokio::pin!(download);
        let wait_for_pieces = async {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let held = peer
                    .stat()
                    .await
                    .ok()
                    .and_then(|s| s.tasks.first().map(|t| t.pieces_present))
                    .unwrap_or(0);
                if held >= 3 {
                    return;
                }
            }
        };
        tokio::select! {
            _ = wait_for_pieces => {}
            r = &mut download => panic!("download ended before the kill: {r:?}"),
        }
    }
    cluster.peers[0].kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_whose_content_changed_is_not_mixed_with_the_pieces_held() {
    let size = 96 * MIB;
    let origin = origin(size).await;
    let mut cluster = lone_daemon(&["--back-to-source-rate-limit", "24MiB"]).await;
    let url = origin.url("/mutable");
    let out = cluster.dir.path().join("out");
    kill_mid_download(&mut cluster, &url, &out).await;
    let new_digest = origin.change();
    cluster.peers[0].restart().await.expect("restart");
    let peer = &cluster.peers[0];
    let err = download_within(peer, &url, &out)
        .await
        .expect_err("a resumed download over changed content must not succeed silently");
    assert!(
        err.message()
            .contains("changed since this download started"),
        "unclear error: {}",
        err.message()
    );
    assert!(!out.exists());
    assert!(
        peer.stat().await.expect("stat").tasks.is_empty(),
        "the stale pieces were kept"
    );
    download_within(peer, &url, &out)
        .await
        .expect("a fresh download of the new content");
    assert_eq!(sha256_file(&out), new_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_download_resumes_without_refetching_its_pieces() {
    let size = 96 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    // Slow the origin read so the kill lands mid-download.
    let mut cluster = lone_daemon(&["--back-to-source-rate-limit", "24MiB"]).await;
    let url = origin.url("/blob");
    let out = cluster.dir.path().join("out");
    kill_mid_download(&mut cluster, &url, &out).await;
    assert!(
        !out.exists(),
        "a partial download must never appear at the output path"
    );
    let served_before = origin.bytes_served();
    cluster.peers[0].restart().await.expect("restart");
    let peer = &cluster.peers[0];
    let task = peer
        .stat()
        .await
        .expect("stat")
        .tasks
        .into_iter()
        .next()
        .expect("task kept");
    assert!(task.pieces_present >= 3 && !task.complete);
    let piece_len = 4 * MIB; // 96 MiB → 4 MiB pieces
                             // As after a power cut that lost a written piece whose metadata was committed: the last
                             // held piece's bytes on disk are no longer what was verified. The resumed download must
                             // find it and fetch it again, never serve it.
    let content = peer.data_dir.join("content").join(&task.task_id);
    {
        use std::os::unix::fs::FileExt as _;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&content)
            .expect("open content");
        let last = u64::from(task.pieces_present - 1) * piece_len;
        f.write_all_at(&[0xAB; 4096], last + 1000)
            .expect("corrupt the last held piece");
    }
    let task = pollen_proto::daemon::TaskStat {
        pieces_present: task.pieces_present - 1,
        ..task
    };
    download_within(peer, &url, &out)
        .await
        .expect("resumed download succeeds");
    assert_eq!(sha256_file(&out), expected);
    let stat = peer.stat().await.expect("stat");
    assert_eq!(
        stat.pieces_from_origin,
        u64::from(task.piece_count - task.pieces_present),
        "pieces held before the restart (bar the corrupted one) were fetched again"
    );
    assert_eq!(
        origin.bytes_served() - served_before,
        size - u64::from(task.pieces_present) * piece_len,
        "the origin served more than the missing pieces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_task_survives_a_restart_and_is_served_from_the_cache_and_to_peers() {
    let size = 24 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    let mut cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    let first = cluster.dir.path().join("first");
    cluster.peers[0]
        .download(&url, &first, None)
        .await
        .expect("first get");
    assert_eq!(origin.bytes_served(), size);

    cluster.peers[0].restart().await.expect("restart");
    cluster.peers[0].wait_connected().await.expect("reconnects");
    let second = cluster.dir.path().join("second");
    cluster.peers[0]
        .download(&url, &second, None)
        .await
        .expect("second get");
    assert_eq!(sha256_file(&second), expected);
    let s = cluster.peers[0].stat().await.expect("stat");
    assert_eq!(
        (s.origin_bytes, s.p2p_download_bytes),
        (0, 0),
        "the cache hit touched the network"
    );
    assert_eq!(
        origin.bytes_served(),
        size,
        "the cache hit reached the origin"
    );

    // The restarted daemon re-announced what it holds, so the other peer gets it from there.
    let third = cluster.dir.path().join("third");
    cluster.peers[1]
        .download(&url, &third, None)
        .await
        .expect("peer get");
    assert_eq!(sha256_file(&third), expected);
    assert_eq!(
        origin.bytes_served(),
        size,
        "the other peer went to the origin"
    );
    let s = cluster.peers[0].stat().await.expect("stat");
    assert_eq!(
        s.upload_bytes, size,
        "the restarted daemon did not serve its cached copy"
    );
}

/// The edits a user may make to a downloaded file: append, cut short, rewrite in place.
fn edit_output(path: &std::path::Path, how: &str) {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open output");
    match how {
        "append" => (&f).write_all(b"an edit at the end").expect("append"),
        "truncate" => f.set_len(100).expect("truncate"),
        "rewrite" => f.write_all_at(b"tampered", 5 * MIB).expect("rewrite"),
        other => panic!("no edit {other}"),
    }
}

/// How often the daemon logged that it dropped a changed cached copy.
fn drops(d: &pollen_testkit::cluster::DaemonProc) -> usize {
    d.log_text()
        .matches("the cached copy was changed on disk")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaded_file_is_the_users_own_and_editing_it_never_changes_the_cache() {
    use std::os::unix::fs::MetadataExt;
    let size = 12 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d = &cluster.peers[0];
    let url = origin.url("/blob");
    let first = cluster.dir.path().join("first");
    d.download(&url, &first, None).await.expect("first get");
    assert_eq!(
        std::fs::metadata(&first).expect("meta").nlink(),
        1,
        "a copy, not a link"
    );
    for how in ["append", "truncate", "rewrite"] {
        edit_output(&first, how);
        let out = cluster.dir.path().join(format!("out-{how}"));
        d.download(&url, &out, None).await.expect("get again");
        assert_eq!(sha256_file(&out), expected, "after {how}");
    }
    assert_eq!(
        origin.bytes_served(),
        size,
        "every later get came from the cache"
    );
    assert_eq!(drops(d), 0, "the cache never saw the edits");
    let other = cluster.dir.path().join("other");
    cluster.peers[1]
        .download(&url, &other, None)
        .await
        .expect("second node");
    assert_eq!(sha256_file(&other), expected);
    assert_eq!(
        origin.bytes_served(),
        size,
        "the second node got it from the first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_hard_linked_output_is_dropped_from_the_cache_and_fetched_again() {
    use std::os::unix::fs::MetadataExt;
    let size = 12 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    spec.daemon_args = vec!["--output-hardlink".into(), "true".into()];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let d = &cluster.peers[0];
    let url = origin.url("/blob");
    let mut last = cluster.dir.path().join("first");
    d.download(&url, &last, None).await.expect("first get");
    assert_eq!(
        std::fs::metadata(&last).expect("meta").nlink(),
        2,
        "linked, as asked"
    );
    for (i, how) in ["append", "truncate", "rewrite"].into_iter().enumerate() {
        edit_output(&last, how);
        let out = cluster.dir.path().join(format!("out-{how}"));
        d.download(&url, &out, None).await.expect("get again");
        assert_eq!(
            sha256_file(&out),
            expected,
            "the copy handed out after {how}"
        );
        assert_eq!(
            drops(d),
            i + 1,
            "the log says the copy was dropped after {how}"
        );
        assert_eq!(
            origin.bytes_served(),
            (i as u64 + 2) * size,
            "fetched again after {how}"
        );
        last = out;
    }
    // What the first node serves now is intact.
    let other = cluster.dir.path().join("other");
    cluster.peers[1]
        .download(&url, &other, None)
        .await
        .expect("second node");
    assert_eq!(sha256_file(&other), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_on_another_filesystem_is_copied_and_verified() {
    use std::os::unix::fs::MetadataExt;
    let other = std::path::Path::new("/dev/shm");
    let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let size = 20 * MIB;
    let origin = origin(size).await;
    let cluster = lone_daemon(&[]).await;
    let elsewhere = dev(other).is_some() && dev(other) != dev(cluster.dir.path());
    if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::condition(
        "shm-filesystem",
        elsewhere,
        "mount a tmpfs on /dev/shm, apart from the filesystem of the temporary directory",
    )]) {
        return;
    }
    let out_dir = tempfile::tempdir_in(other).expect("tempdir");
    let out = out_dir.path().join("copy");
    cluster.peers[0]
        .download(&origin.url("/blob"), &out, None)
        .await
        .expect("get");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(
        std::fs::metadata(&out).expect("meta").nlink(),
        1,
        "not a copy"
    );
}

/// A network namespace joined to the root namespace by a bridge of its own, with a share of
/// the packets entering the namespace dropped (iptables `statistic`); removed on drop.
struct LossyNet {
    ns: String,
    bridge: String,
    host_ip: String,
    ns_ip: String,
}

fn run(args: &[&str]) {
    let ok = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{}` failed (this test needs root, iproute2 and iptables)",
        args.join(" ")
    );
}

impl LossyNet {
    fn up(loss: f64) -> Self {
        let id = std::process::id();
        let net = Self {
            ns: format!("pollen-loss-{id}"),
            bridge: format!("plb{id}"),
            host_ip: format!("10.231.{}.254", id % 250),
            ns_ip: format!("10.231.{}.1", id % 250),
        };
        let veth = format!("plv{id}");
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.host_ip),
            "dev",
            &net.bridge,
        ]);
        run(&["ip", "link", "set", &net.bridge, "up"]);
        run(&["ip", "netns", "add", &net.ns]);
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &net.ns,
        ]);
        run(&["ip", "link", "set", &veth, "master", &net.bridge, "up"]);
        run(&[
            "ip",
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{}/24", net.ns_ip),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &net.ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &net.ns, "link", "set", "lo", "up"]);
        let p = loss.to_string();
        run(&[
            "ip",
            "netns",
            "exec",
            &net.ns,
            "iptables",
            "-A",
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &p,
            "-j",
            "DROP",
        ]);
        net
    }
}

impl LossyNet {
    /// Packets the rule has dropped so far.
    fn dropped(&self) -> u64 {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "iptables", "-L", "INPUT", "-v", "-x", "-n",
            ])
            .output()
            .expect("iptables runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("DROP"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for LossyNet {
    fn drop(&mut self) {
        for args in [
            vec!["ip", "netns", "del", self.ns.as_str()],
            vec!["ip", "link", "del", self.bridge.as_str()],
        ] {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_link_drops_a_fifth_of_its_packets_completes_and_verifies() {
    let net = LossyNet::up(0.2);
    let size = 16 * MIB;
    let addr = format!("{}:0", net.host_ip).parse().expect("address");
    let origin = pollen_testkit::origin::Origin::start(
        addr,
        pollen_testkit::origin::random_data(size as usize),
    )
    .await
    .expect("origin");
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.listen_ip = Some(net.host_ip.clone());
    spec.peer_netns = vec![None, Some((net.ns.clone(), net.ns_ip.clone()))];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    // The clean peer first, so the lossy one has two parents (it and the seed) to fetch from.
    let (clean, lossy) = (&cluster.peers[0], &cluster.peers[1]);
    let dir = cluster.dir.path();
    let r = get_all(&[clean], &url, dir).await;
    assert_all_verified(&r, origin.digest());
    let r = get_all(&[lossy], &url, dir).await;
    assert_all_verified(&r, origin.digest());
    // The lossy peer's cache holds the whole task, every piece verified and committed.
    let stat = lossy.stat().await.expect("stat");
    let task = stat
        .tasks
        .iter()
        .find(|t| t.content_length == size)
        .expect("the task is held");
    assert!(task.complete && task.pieces_present == task.piece_count);
    assert_eq!(stat.pieces_rejected, 0);
    assert!(
        net.dropped() >= 10,
        "the link lost nothing: the fault was not injected"
    );
    assert!(
        origin.bytes_served() <= size + size / 10,
        "the origin served {} bytes for a {size}-byte file",
        origin.bytes_served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_fails_twice_is_retried_and_the_download_resumes_where_it_broke() {
    let size = 24 * MIB;
    let origin = origin(size).await;
    let cluster = lone_daemon(&[]).await;
    let peer = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    // First a 503, then a connection dropped halfway, then the whole answer.
    download_within(peer, &origin.url("/flaky"), &out)
        .await
        .expect("the download survives two origin failures");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(origin.flaky_requests(), 3);
    // The third request asked only for what was missing: pieces (4 MiB each) that arrived
    // whole before the drop were kept. Starting over would cost the half sent plus the whole.
    let served = origin.bytes_served();
    assert!(
        served <= size + size / 2 - 4 * MIB,
        "the origin served {served} bytes for {size}: the retry started over"
    );
    let stat = peer.stat().await.expect("stat");
    assert!(stat
        .tasks
        .iter()
        .all(|t| t.complete && t.pieces_present == t.piece_count));
    let log = peer.log_text();
    assert!(
        log.contains("retrying from the first missing piece"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_is_only_slow_and_one_that_stops_sending_is_retried() {
    let size = 16 * MIB;
    let origin = origin(size).await;
    let cluster = lone_daemon(&["--origin-read-timeout", "2s"]).await;
    let peer = &cluster.peers[0];

    // Slow but steady (64 KiB every 10 ms, for seconds): never taken for a stall.
    let out = cluster.dir.path().join("slow.out");
    download_within(peer, &origin.url("/slow"), &out)
        .await
        .expect("a slow origin is waited for");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(origin.bytes_served(), size, "a slow transfer was retried");
    assert!(
        !peer
            .log_text()
            .contains("retrying from the first missing piece"),
        "{}",
        peer.log_text()
    );

    // Half the file, then silence on an open connection: given up after the read timeout
    // and resumed from the first missing piece.
    let before = origin.bytes_served();
    let out = cluster.dir.path().join("stalling.out");
    download_within(peer, &origin.url("/stalling"), &out)
        .await
        .expect("the download survives a stalled origin");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(origin.stalling_requests(), 2, "one stall, one retry");
    let served = origin.bytes_served() - before;
    assert!(
        served <= size + size / 2 - 4 * MIB,
        "the origin served {served} bytes for {size}: the retry started over"
    );
    let stat = peer.stat().await.expect("stat");
    assert!(stat
        .tasks
        .iter()
        .all(|t| t.complete && t.pieces_present == t.piece_count));
    assert!(peer
        .log_text()
        .contains("retrying from the first missing piece"));
}
