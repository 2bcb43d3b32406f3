//! What `pollen get` reports at the end, with real processes: how much came from the origin,
//! from peers or from the local cache (the point of the product), in human units, on its
//! final line and as JSON with `--json`.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};

/// Runs `pollen get URL -O OUT --json` against `daemon`; its final line and JSON report.
async fn get(daemon: &DaemonProc, url: &str, out: &std::path::Path) -> (String, serde_json::Value) {
    let o = pollen_cli(
        daemon,
        &[
            "get".as_ref(),
            url.as_ref(),
            "--json".as_ref(),
            "-O".as_ref(),
            out.as_os_str(),
        ],
    )
    .await;
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

/// Ctrl-C on `pollen get`: it says a rerun resumes and exits 130; the daemon, with nobody
/// else waiting for the task, stops that download (it says so) and keeps what it holds, and
/// the rerun fetches only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_download_and_a_rerun_resumes() {
    // About 4 s at the slow route's pace: Ctrl-C surely lands mid-download.
    let (origin, url, cluster) = lone_daemon_and_slow_origin(24 * MIB).await;
    let d = &cluster.peers[0];
    let out = cluster.dir.path().join("out");
    let child = tokio::process::Command::new(bin())
        .args(["get", &url, "-O"])
        .arg(&out)
        .arg("--api-socket")
        .arg(&d.socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pollen get");
    // Under way: the daemon has read part of the file.
    let deadline = std::time::Instant::now() + HANG;
    while d.stat().await.expect("stat").origin_bytes < 2 * MIB {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let o = tokio::time::timeout(HANG, child.wait_with_output())
        .await
        .expect("pollen get did not exit on Ctrl-C")
        .expect("wait");
    assert_eq!(o.status.code(), Some(130));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("interrupted; a rerun resumes"), "{err}");
    assert!(!out.exists(), "a partial output was left");
    // The daemon stopped the download nobody waited for.
    common::manager::wait_for_log(&d.log, "nobody waits for the download any more").await;

    let (line, r) = get(d, &url, &out).await;
    assert!(r["held_bytes"].as_u64().unwrap_or(0) > 0, "{r}");
    assert!(line.contains("already held"), "{line}");
    assert_eq!(sha256_file(&out), origin.digest());
}

/// The daemon says what a download is doing: the last message of a download alone says it
/// read the origin; after failed transfers, which attempt it is on; in a swarm whose seed
/// holds the file, that it fetched from peers. (On a terminal `pollen get` shows it beside
/// the bar, and alone before the length is known.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_download_says_what_it_is_doing() {
    use pollen_proto::daemon::DownloadRequest;
    async fn doing(d: &DaemonProc, url: &str, out: &std::path::Path) -> Vec<String> {
        let mut stream = d
            .client()
            .await
            .expect("client")
            .download(DownloadRequest {
                url: url.into(),
                output_path: out.display().to_string(),
                ..Default::default()
            })
            .await
            .expect("download")
            .into_inner();
        let mut seen = Vec::new();
        while let Some(m) = tokio::time::timeout(HANG, stream.message())
            .await
            .expect("hung")
            .expect("stream")
        {
            assert!(
                !m.doing.is_empty(),
                "a message says nothing of what it does"
            );
            if seen.last() != Some(&m.doing) {
                seen.push(m.doing.clone());
            }
            if m.done {
                return seen;
            }
        }
        panic!("the stream ended without a last message: {seen:?}");
    }
    let origin = origin(4 * MIB).await;
    let url = origin.url("/blob");
    let alone = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let said = doing(&alone.peers[0], &url, &alone.dir.path().join("a")).await;
    assert_eq!(
        said.last().map(String::as_str),
        Some("reading the origin"),
        "{said:?}"
    );
    // `/flaky` answers 503, then breaks off half way, then serves.
    let said = doing(
        &alone.peers[0],
        &origin.url("/flaky"),
        &alone.dir.path().join("f"),
    )
    .await;
    assert_eq!(
        origin.flaky_requests(),
        3,
        "the fault did not happen as planned"
    );
    for attempt in [2, 3] {
        let want = format!("reading the origin, attempt {attempt} of 4 (the last one failed)");
        assert!(said.contains(&want), "{want:?} not among {said:?}");
    }
    let swarm = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let said = doing(&swarm.peers[0], &url, &swarm.dir.path().join("b")).await;
    assert_eq!(
        said.last().map(String::as_str),
        Some("fetching from peers"),
        "{said:?}"
    );
}

/// `-O -` writes the content, verified, to stdout and nothing else there; the report goes to
/// stderr; with `--json` (also stdout) it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_writes_the_verified_content_to_stdout() {
    let origin = origin(3 * MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("cluster");
    let run = |extra: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(["get", &url, "-O", "-"])
            .args(extra)
            .arg("--api-socket")
            .arg(&cluster.peers[0].socket);
        async move {
            tokio::time::timeout(HANG, cmd.output())
                .await
                .expect("not hung")
                .expect("runs")
        }
    };
    let o = run(&[]).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        o.stdout.as_slice(),
        origin.data(),
        "stdout is not the content"
    );
    assert!(err.contains("saved to stdout: 3.00 MiB"), "{err}");
    let o = run(&["--json"]).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("-O - and --json both write to stdout"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `pollen status ARGS` against `daemon`; its stdout.
async fn status(daemon: &DaemonProc, args: &[&str]) -> String {
    let mut all: Vec<&std::ffi::OsStr> = vec!["status".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let o = pollen_cli(daemon, &all).await;
    assert!(
        o.status.success(),
        "pollen status failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

/// `pollen status` after a download in a swarm: the daemon, its scheduler link, the bytes
/// it moved and the task it holds, its URL shown without the query (a signature may be
/// there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_link_the_cache_and_the_task_just_fetched() {
    let size = 5 * MIB;
    let origin = origin(size).await;
    let cluster = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let d = &cluster.peers[0];
    let url = format!("{}?signature=s3cr3t", origin.url("/blob"));
    get(d, &url, &cluster.dir.path().join("m")).await;

    let text = status(d, &[]).await;
    for want in [
        format!("scheduler  connected, 1 of 1 ({})", cluster.scheduler_url),
        "cache      5.00 MiB held in 1 tasks (1 complete), no quota".to_string(),
        "5.00 MiB from peers".to_string(),
        "recent tasks, last used first:".to_string(),
        "complete         5.00 MiB  ".to_string(),
        format!("{}\n", origin.url("/blob")),
    ] {
        assert!(text.contains(&want), "{want:?} missing from\n{text}");
    }
    assert!(!text.contains("s3cr3t"), "the query was shown:\n{text}");

    let j: serde_json::Value =
        serde_json::from_str(&status(d, &["--json"]).await).expect("one JSON object");
    assert_eq!(j["scheduler_sessions"], 1, "{j}");
    assert_eq!(j["cache"]["held_bytes"], size, "{j}");
    assert_eq!(j["peer_bytes"], size, "{j}");
    let task = &j["recent_tasks"][0];
    assert_eq!(task["complete"], true, "{j}");
    assert_eq!(task["url"], origin.url("/blob"), "{j}");
    assert!(task["last_access"].as_u64().is_some_and(|t| t > 0), "{j}");
}
