//! `hf://` origins with real processes against the test kit's hub fixture, which the real
//! `huggingface_hub` client checks first: a repository at a revision pinned to its commit,
//! read once by the seed and spread to peers with every file checked (LFS files by their
//! sha256, git files by their blob id); a private repository refused without a token and
//! read with one; a file whose bytes do not match its published sha256 refused with nothing
//! written; a revision that does not exist named.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::hub::{Hub, HubFile, HubRepo};
use pollen_testkit::origin::random_data;
use pollen_testkit::tools::{runs, Need};

fn model() -> HubRepo {
    let mut bad = HubFile::lfs("bad.bin", random_data(3 << 20));
    bad.corrupt = true;
    HubRepo::model(
        "org/model",
        vec![
            HubFile::git("config.json", &b"{\"hidden_size\": 64}\n"[..]),
            HubFile::git("README.md", random_data(20_000)),
            HubFile::lfs("model.safetensors", random_data(9 << 20)),
            HubFile::lfs("shards/model-00001-of-00002.bin", random_data(5 << 20)),
            HubFile::lfs("shards/model-00002-of-00002.bin", random_data(1 << 20)),
            HubFile::git("shards/index.json", &b"{}"[..]),
            bad,
        ],
    )
}

const TOKEN: &str = "hf_test_token";

fn private_repo() -> HubRepo {
    let mut r = HubRepo::model(
        "org/private",
        vec![
            HubFile::lfs("weights.bin", random_data(2 << 20)),
            HubFile::git("config.json", &b"{\"private\": true}"[..]),
        ],
    );
    r.token = Some(TOKEN.into());
    r
}

/// Runs `pollen get ARGS -O OUT` on `daemon`; whether it succeeded, and its stderr.
async fn get(daemon: &DaemonProc, args: &[&str], out: &Path) -> (bool, String) {
    let mut all: Vec<&OsStr> = vec!["get".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    all.extend(["-O".as_ref(), out.as_os_str()]);
    let out = pollen_cli(daemon, &all).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn same(path: &Path, f: &HubFile) -> bool {
    std::fs::read(path).ok().as_deref() == Some(&f.data[..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_huggingface_hub_client_downloads_a_snapshot_from_the_fixture() {
    if !runs(&[Need::python_module("huggingface_hub", "huggingface_hub")]) {
        return;
    }
    let mut repo = model();
    repo.files.retain(|f| !f.corrupt);
    let hub = Hub::start(vec![repo.clone(), private_repo()])
        .await
        .expect("hub");
    let work = tempfile::tempdir().expect("dir");
    let script = "import sys\nfrom huggingface_hub import snapshot_download\n\
                  snapshot_download(repo_id=sys.argv[2], revision='main', endpoint=sys.argv[1], \
                  local_dir=sys.argv[3], token=(sys.argv[4] or False))\n";
    let fetch = |repo: &str, dir: &Path, token: &str| {
        std::process::Command::new("python3")
            .args(["-c", script, &hub.endpoint, repo])
            .arg(dir)
            .arg(token)
            .env("HF_HOME", work.path().join("hf-home"))
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .env("HF_HUB_DISABLE_XET", "1")
            .output()
            .expect("python3 runs")
    };
    let dir = work.path().join("snapshot");
    let out = fetch("org/model", &dir, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &repo.files {
        assert!(same(&dir.join(&f.path), f), "{} differs", f.path);
    }
    // The fixture's private repository refuses the client without a token, as the hub does.
    let refused = fetch("org/private", &work.path().join("p1"), "");
    assert!(!refused.status.success());
    let with_token = fetch("org/private", &work.path().join("p2"), TOKEN);
    assert!(
        with_token.status.success(),
        "{}",
        String::from_utf8_lossy(&with_token.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_is_read_once_by_the_seed_and_every_file_checked_on_the_peers() {
    let (repo, secret) = (model(), private_repo());
    let hub = Hub::start(vec![repo.clone(), secret.clone()])
        .await
        .expect("hub");
    let work = tempfile::tempdir().expect("dir");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let endpoint = vec!["--origin-hf-endpoint".to_string(), hub.endpoint.clone()];
    let with_token = [
        endpoint.clone(),
        vec![
            "--origin-hf-token-file".into(),
            token_file.to_string_lossy().into_owned(),
        ],
    ]
    .concat();
    let mut spec = ClusterSpec::new(bin(), 3);
    spec.seed_args = endpoint.clone();
    spec.peer_args = vec![endpoint.clone(), endpoint, with_token];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let (first, second, trusted) = (&cluster.peers[0], &cluster.peers[1], &cluster.peers[2]);

    // The whole repository at main (pinned to its commit), without the corrupt file.
    let dir = cluster.dir.path().join("model");
    let (ok, stderr) = get(
        first,
        &["-r", "hf://org/model", "--exclude", "bad.bin"],
        &dir,
    )
    .await;
    assert!(ok, "{stderr}");
    for f in repo.files.iter().filter(|f| !f.corrupt) {
        assert!(same(&dir.join(&f.path), f), "{} differs", f.path);
        assert_eq!(hub.content_gets(&repo, f), 1, "{} read once", f.path);
    }
    assert_eq!(first.stat().await.expect("stat").origin_bytes, 0);

    // One file by its branch, on another peer: from the swarm, the hub's bytes not read again.
    let one = cluster.dir.path().join("weights.safetensors");
    let (ok, stderr) = get(second, &["hf://org/model@main/model.safetensors"], &one).await;
    assert!(ok, "{stderr}");
    assert!(same(&one, &repo.files[2]));
    assert_eq!(hub.content_gets(&repo, &repo.files[2]), 1);
    assert_eq!(second.stat().await.expect("stat").origin_bytes, 0);

    // Bytes that do not match the published sha256: refused, nothing written.
    let bad = cluster.dir.path().join("bad.bin");
    let (ok, stderr) = get(second, &["hf://org/model/bad.bin"], &bad).await;
    assert!(!ok && stderr.contains("digest mismatch"), "{stderr}");
    assert!(!bad.exists());

    // A revision that does not exist is named as such.
    let (ok, stderr) = get(
        second,
        &["hf://org/model@v9/config.json"],
        &cluster.dir.path().join("nope"),
    )
    .await;
    assert!(
        !ok && stderr.contains("revision does not exist"),
        "{stderr}"
    );

    // A private repository: refused without a token, read with one.
    let private = cluster.dir.path().join("private");
    let (ok, stderr) = get(second, &["-r", "hf://org/private"], &private).await;
    assert!(!ok && stderr.contains("token"), "{stderr}");
    assert!(!private.exists());
    let (ok, stderr) = get(trusted, &["-r", "hf://org/private"], &private).await;
    assert!(ok, "{stderr}");
    for f in &secret.files {
        assert!(same(&private.join(&f.path), f), "{}", f.path);
    }
    // Its tasks are private: `pollen cache export` (which checks no token) refuses them.
    let held = trusted.stat().await.expect("stat");
    let task = held
        .tasks
        .iter()
        .find(|t| t.private)
        .expect("a private task");
    let out = cluster.dir.path().join("exported");
    let o = pollen_cli(
        trusted,
        &[
            "cache".as_ref(),
            "export".as_ref(),
            task.task_id.as_ref(),
            "-O".as_ref(),
            out.as_os_str(),
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("fetched with credentials"),
        "{err}"
    );
    assert!(!out.exists());
}
