//! `pollen get --recursive` with real processes against a real S3 server (moto): a 3-level
//! prefix of many objects read once by the seed and spread to peers file by file, globs that
//! pick a subset, a rerun that keeps what is there, and an interrupted run resumed without
//! fetching a finished file again; and a real web server's directory index.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::origin::random_data;
use pollen_testkit::s3_server::S3Server;

/// Puts `files` (relative path, size) under `prefix/` in `bucket` and keeps a copy of each
/// in `local` to compare with.
async fn put_tree(
    s3: &S3Server,
    bucket: &str,
    prefix: &str,
    files: &[(&str, usize)],
    local: &Path,
) {
    let mut objects = Vec::new();
    for (i, (path, size)) in files.iter().enumerate() {
        let file = local.join(format!("{i}.src"));
        std::fs::write(&file, random_data(*size)).expect("write fixture");
        objects.push((format!("{prefix}/{path}"), file));
    }
    let refs: Vec<(&str, &Path)> = objects
        .iter()
        .map(|(k, f)| (k.as_str(), f.as_path()))
        .collect();
    s3.put(bucket, &refs).await.expect("boto3 upload");
}

/// Whether `dir/path` holds the bytes of fixture `i`.
fn same(dir: &Path, path: &str, local: &Path, i: usize) -> bool {
    std::fs::read(dir.join(path)).ok() == std::fs::read(local.join(format!("{i}.src"))).ok()
}

/// How one `pollen get` run ended.
struct Run {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

/// `pollen get -r URL -O DIR EXTRA…` on `daemon`.
async fn get_r(
    daemon: &pollen_testkit::cluster::DaemonProc,
    url: &str,
    dir: &Path,
    extra: &[&str],
) -> Run {
    let mut args: Vec<&OsStr> = ["get", "-r", url, "-O"].map(OsStr::new).to_vec();
    args.push(dir.as_os_str());
    args.extend(extra.iter().map(OsStr::new));
    let out = pollen_cli(daemon, &args).await;
    Run {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`get_r`], and it must succeed.
async fn get_r_ok(
    daemon: &pollen_testkit::cluster::DaemonProc,
    url: &str,
    dir: &Path,
    extra: &[&str],
) -> Run {
    let run = get_r(daemon, url, dir, extra).await;
    assert!(run.ok, "{url}: {}", run.stderr);
    run
}

const TREE: &[(&str, usize)] = &[
    ("config.json", 700),
    ("tokenizer.json", 40_000),
    ("weights/part-1.bin", 5 << 20),
    ("weights/part-2.bin", 3 << 20),
    ("weights/shards/a/0.bin", 1 << 20),
    ("weights/shards/a/1.bin", 1_500_000),
    ("weights/shards/b/0.bin", 900_000),
    ("weights/shards/b/notes.json", 1),
    ("eval/results.json", 12_345),
    ("eval/plots/loss.png", 300_000),
    ("eval/plots/acc.png", 200_001),
    ("README.md", 4096),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_read_once_by_the_seed_and_every_file_lands_on_the_peers() {
    let Some((work, s3)) = S3Server::for_test().await else {
        return;
    };
    put_tree(&s3, "models", "org/model-7b", TREE, work.path()).await;
    // Another object beside the prefix, and one whose name only starts like it.
    let beside = work.path().join("beside");
    std::fs::create_dir(&beside).expect("mkdir");
    put_tree(
        &s3,
        "models",
        "org",
        &[
            ("model-7b.txt", 10),
            ("evil/a.txt", 1),
            ("evil/../../escape.txt", 10),
        ],
        &beside,
    )
    .await;

    // The seed reads the bucket; the peers list it (that takes credentials) but read nothing.
    let flags = s3.daemon_flags();
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed_args = flags.clone();
    spec.peer_args = vec![flags.clone(), flags];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let (first, second) = (&cluster.peers[0], &cluster.peers[1]);

    let dir = cluster.dir.path().join("model");
    const MODEL: &str = "s3://models/org/model-7b/";
    let run = get_r_ok(first, MODEL, &dir, &["--concurrency", "3", "--json"]).await;
    for (i, (path, _)) in TREE.iter().enumerate() {
        assert!(same(&dir, path, work.path(), i), "{path} differs");
    }
    // Nothing else: not the object beside the prefix, no temporary file left.
    let mut names = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                pending.push(p);
            } else {
                names.push(p.strip_prefix(&dir).expect("below").display().to_string());
            }
        }
    }
    assert_eq!(names.len(), TREE.len(), "{names:?}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(report["saved"], TREE.len());
    assert!(
        run.stderr
            .contains(&format!("saved {} of {} files", TREE.len(), TREE.len())),
        "{}",
        run.stderr
    );
    // Only the seed read the bucket, each object once.
    for (path, _) in TREE {
        assert_eq!(
            s3.gets("models", &format!("org/model-7b/{path}")),
            1,
            "{path}"
        );
    }
    assert_eq!(first.stat().await.expect("stat").origin_bytes, 0);

    // Another peer takes only the JSON files below the weights, from the swarm.
    let subset = cluster.dir.path().join("subset");
    get_r_ok(
        second,
        "s3://models/org/model-7b",
        &subset,
        &[
            "--include",
            "weights/**/*.json",
            "--include",
            "*.json",
            "--exclude",
            "tokenizer.json",
        ],
    )
    .await;
    assert!(same(&subset, "config.json", work.path(), 0));
    assert!(same(&subset, "weights/shards/b/notes.json", work.path(), 7));
    assert!(!subset.join("tokenizer.json").exists());
    assert!(!subset.join("eval").exists());
    let s = second.stat().await.expect("stat");
    assert_eq!(s.origin_bytes, 0, "{s:?}");

    // A rerun into the first directory keeps every file as it is and reads nothing.
    let before = first.stat().await.expect("stat");
    let run = get_r_ok(first, MODEL, &dir, &[]).await;
    assert!(
        run.stderr.contains(&format!(
            "nothing to fetch: the {} files in {} already hold their content",
            TREE.len(),
            dir.display()
        )),
        "{}",
        run.stderr
    );
    let after = first.stat().await.expect("stat");
    assert_eq!(
        (after.p2p_download_bytes, after.origin_bytes),
        (before.p2p_download_bytes, before.origin_bytes)
    );

    // A file changed locally is not silently replaced: it is named, the rest kept.
    std::fs::write(dir.join("README.md"), b"my notes").expect("edit");
    let run = get_r(first, MODEL, &dir, &[]).await;
    assert!(
        !run.ok && run.stderr.contains("README.md") && run.stderr.contains("--overwrite"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(dir.join("README.md")).expect("kept"),
        b"my notes"
    );
    get_r_ok(first, MODEL, &dir, &["--overwrite"]).await;
    assert!(same(&dir, "README.md", work.path(), 11));

    // Nothing matching, a prefix with nothing below it, a bucket that does not exist.
    for (url, extra, says) in [
        (
            "s3://models/org/model-7b",
            vec!["--include", "*.gguf"],
            "none of them matching",
        ),
        ("s3://models/nothing-here/", vec![], "lists 0 objects"),
        (
            "s3://no-such-bucket/x/",
            vec![],
            "cannot list s3://no-such-bucket/x/",
        ),
        // A key that would climb out of the destination: the listing is refused whole.
        ("s3://models/org/evil/", vec![], "escape.txt"),
    ] {
        let empty = cluster.dir.path().join("empty");
        let run = get_r(first, url, &empty, &extra).await;
        assert!(
            !run.ok && run.stderr.contains(says),
            "{url}: {}",
            run.stderr
        );
        assert!(!empty.exists(), "{url}: nothing made");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_resumes_without_fetching_a_finished_file_again() {
    let Some((work, s3)) = S3Server::for_test().await else {
        return;
    };
    let files: &[(&str, usize)] = &[("a.bin", 6 << 20), ("b.bin", 6 << 20), ("c.bin", 6 << 20)];
    put_tree(&s3, "data", "set", files, work.path()).await;
    // One daemon, no scheduler, reading the bucket slowly enough to interrupt.
    let mut args = s3.daemon_flags();
    args.extend(["--back-to-source-rate-limit".into(), "8MiB".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cluster = lone_daemon(&args).await;
    let daemon = &cluster.peers[0];
    let dir = cluster.dir.path().join("set");

    let run = tokio::process::Command::new(bin())
        .args(["get", "-r", "s3://data/set", "-O"])
        .arg(&dir)
        .args(["--concurrency", "1", "--api-socket"])
        .arg(&daemon.socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pollen get");
    // Interrupt once the first file is in place.
    tokio::time::timeout(HANG, async {
        while !dir.join("a.bin").exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first file lands");
    let pid = nix::unistd::Pid::from_raw(run.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = tokio::time::timeout(HANG, run.wait_with_output())
        .await
        .expect("exits")
        .expect("waits");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("c.bin").exists(), "the run was cut short");

    let run = get_r_ok(daemon, "s3://data/set", &dir, &["--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(report["kept"], 1, "{report}");
    for (i, (path, _)) in files.iter().enumerate() {
        assert!(same(&dir, path, work.path(), i), "{path}");
    }
    assert_eq!(
        s3.gets("data", "set/a.bin"),
        1,
        "the finished file was not read again"
    );
}

/// A real web server's directory index (`python3 -m http.server`), three levels deep: every
/// file below the URL is downloaded, through the seed, keeping the layout. One directory's
/// index is a hostile page: links that leave the directory (a parent, another host, cloud
/// metadata, a sort query) are not followed, and nothing is written outside the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_directory_index_is_downloaded_whole_and_its_links_kept_inside() {
    let cluster = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let root = cluster.dir.path().join("www");
    let files: &[(&str, usize)] = &[
        ("models/a.bin", 3 << 20),
        ("models/weights v1.bin", 200 << 10),
        ("models/sub/b.json", 1000),
        ("models/sub/deeper/c.txt", 10),
        ("models/odd/kept.bin", 5000),
    ];
    for (path, size) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, random_data(*size)).expect("write");
    }
    std::fs::write(root.join("secret.bin"), b"outside the listed directory").expect("write");
    // A directory whose index is a page of its own, with links that lead elsewhere.
    std::fs::write(
        root.join("models/odd/index.html"),
        r#"<html><a href="kept.bin">kept</a> <a href="../../secret.bin">up</a>
        <a href="/secret.bin">abs</a> <a href="http://169.254.169.254/latest/meta-data/">md</a>
        <a href="?C=M;O=A">sort</a> <a href="../odd/kept.bin">again</a></html>"#,
    )
    .expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut server = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(&root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 -m http.server");
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let dir = cluster.dir.path().join("out");
    let run = get_r_ok(&cluster.peers[0], &format!("{base}/models/"), &dir, &[]).await;
    for (path, _) in files {
        let rel = path.trim_start_matches("models/");
        assert_eq!(
            std::fs::read(dir.join(rel)).ok(),
            std::fs::read(root.join(path)).ok(),
            "{rel}"
        );
    }
    let mut written = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                written.push(e.path());
            }
        }
    }
    assert_eq!(written.len(), files.len(), "{written:?}\n{}", run.stderr);
    assert!(!cluster.dir.path().join("secret.bin").exists());
    let s = cluster.peers[0].stat().await.expect("stat");
    assert_eq!(s.origin_bytes, 0, "the seed read the origin: {s:?}");

    // A URL that is no directory is refused, saying how to name one.
    let run = get_r(
        &cluster.peers[0],
        &format!("{base}/models"),
        &cluster.dir.path().join("x"),
        &[],
    )
    .await;
    assert!(
        !run.ok && run.stderr.contains("ending with /"),
        "{}",
        run.stderr
    );
    let _ = server.kill().await;
}
