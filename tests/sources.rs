//! Origins other than HTTP through real daemons: a file on one host's disk seeded into the
//! swarm, and the refusals that keep the rest of that disk private; objects in a real S3
//! server (moto) and Azure's storage emulator (Azurite), read once by the seed with its own
//! credentials and spread to peers that have none; a replaced object fetched anew.

mod common;

use common::*;
use pollen_testkit::azurite::Azurite;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::origin::random_data;
use pollen_testkit::s3_server::S3Server;

fn file_url(path: &std::path::Path) -> String {
    url::Url::from_file_path(path)
        .expect("absolute")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_file_enters_the_swarm_from_the_one_host_allowed_to_read_it() {
    let size = 32 * MIB;
    let disk = tempfile::tempdir().expect("dir");
    let shared = disk.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    let data = random_data(size as usize);
    std::fs::write(shared.join("model.bin"), &data).expect("write");
    std::fs::write(disk.path().join("secret"), b"not for the swarm").expect("write");
    // A link under the shared directory that leads out of it.
    std::os::unix::fs::symlink(disk.path().join("secret"), shared.join("escape")).expect("link");

    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    spec.peer_args = vec![vec![
        "--origin-file-root".into(),
        shared.to_string_lossy().into_owned(),
    ]];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let (reader, other) = (&cluster.peers[0], &cluster.peers[1]);
    let url = file_url(&shared.join("model.bin"));

    let first = cluster.dir.path().join("first.out");
    download_within(reader, &url, &first)
        .await
        .expect("the host allowed to read the file gets it");
    assert_eq!(sha256_file(&first), pollen_core::ContentDigest::of(&data));
    assert_eq!(reader.stat().await.expect("stat").origin_bytes, size);

    // A host with no file roots gets the same file from the swarm.
    let second = cluster.dir.path().join("second.out");
    download_within(other, &url, &second)
        .await
        .expect("a peer gets the file from the one that read it");
    assert_eq!(sha256_file(&second), pollen_core::ContentDigest::of(&data));
    let s = other.stat().await.expect("stat");
    assert_eq!((s.p2p_download_bytes, s.origin_bytes), (size, 0), "{s:?}");

    // What is not under the root is refused, a link out of it too, and nothing is written.
    for (url, says) in [
        (
            file_url(&disk.path().join("secret")),
            "not under a directory",
        ),
        (file_url(&shared.join("escape")), "not under a directory"),
        (file_url(&shared.join("missing.bin")), "does not exist"),
    ] {
        let out = cluster.dir.path().join("refused.out");
        let e = download_within(reader, &url, &out)
            .await
            .expect_err("refused");
        assert!(e.message().contains(says), "{url}: {}", e.message());
        assert!(!out.exists(), "{url}: something was written");
    }
    // A host without file roots, sent to the origin for a file nobody has, says why.
    std::fs::write(shared.join("new.bin"), b"fresh").expect("write");
    let out = cluster.dir.path().join("off.out");
    let e = download_within(other, &file_url(&shared.join("new.bin")), &out)
        .await
        .expect_err("no file roots here");
    assert!(e.message().contains("origin_file_roots"), "{}", e.message());
}

/// `flag KEY=VALUE` for each setting.
fn flags(flag: &str, settings: &[(String, String)]) -> Vec<String> {
    settings
        .iter()
        .flat_map(|(k, v)| [flag.to_string(), format!("{k}={v}")])
        .collect()
}

/// A cluster whose seed alone has `seed_args` (its bucket credentials) gets `url`, an object
/// holding `data`, on three peers at once: every copy verified, only the seed read the bucket
/// (`size` bytes, and `gets()` GETs counted by the server: one). Then a key that does not
/// exist (`missing`) is one clear error naming it, nothing written.
async fn spread_from_bucket(
    url: &str,
    missing: &str,
    data: &[u8],
    seed_args: Vec<String>,
    gets: impl Fn() -> usize,
) {
    let mut spec = ClusterSpec::new(bin(), 3);
    spec.seed_args = seed_args;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, url, cluster.dir.path()).await;
    assert_all_verified(&results, pollen_core::ContentDigest::of(data));
    for p in &peers {
        let s = p.stat().await.expect("stat");
        assert_eq!(s.origin_bytes, 0, "{} read the bucket: {s:?}", p.name);
    }
    let seed = cluster.seed.as_ref().expect("seed");
    assert_eq!(
        seed.stat().await.expect("stat").origin_bytes,
        data.len() as u64
    );
    assert_eq!(gets(), 1, "one GET");

    let out = cluster.dir.path().join("missing.out");
    let e = download_within(seed, missing, &out)
        .await
        .expect_err("no such key");
    assert!(
        e.message().contains(missing) && e.message().contains("does not exist"),
        "{}",
        e.message()
    );
    assert!(!out.exists());
}

/// Random bytes of `size` in a file under `dir`.
fn fixture(dir: &std::path::Path, size: u64) -> (bytes::Bytes, std::path::PathBuf) {
    let data = random_data(size as usize);
    let file = dir.join("weights.bin");
    std::fs::write(&file, &data).expect("write");
    (data, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_object_is_read_once_by_the_seed_and_spread_to_peers_without_credentials() {
    let Some((work, s3)) = S3Server::for_test().await else {
        return;
    };
    let (data, file) = fixture(work.path(), 48 * MIB);
    let key = "llama/7b/weights v1.bin";
    s3.put("models", &[(key, &file)])
        .await
        .expect("boto3 upload");
    spread_from_bucket(
        "s3://models/llama/7b/weights%20v1.bin",
        "s3://models/llama/none.bin",
        &data,
        s3.daemon_flags(),
        || s3.gets("models", key),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_blob_is_read_once_by_the_seed_and_spread_to_peers_without_credentials() {
    if !pollen_testkit::azurite::present() {
        return;
    }
    let work = tempfile::tempdir().expect("dir");
    let azurite = Azurite::start(&work.path().join("azurite"))
        .await
        .expect("azurite");
    let (data, file) = fixture(work.path(), 40 * MIB);
    let name = "datasets/part 0.parquet";
    azurite
        .put("training", &[(name, &file)])
        .await
        .expect("azure client upload");
    spread_from_bucket(
        "azblob://training/datasets/part%200.parquet",
        "azblob://training/datasets/none.parquet",
        &data,
        flags("--origin-azure", &azurite.settings()),
        || azurite.gets("training", name),
    )
    .await;
}

/// A bucket object's task is the version the bucket reports (its ETag): once the object is
/// replaced, a download gets the new bytes instead of the copy cached under the same URL, and
/// the old version stays its own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_s3_object_is_a_new_task_not_the_cached_copy() {
    let Some((work, s3)) = S3Server::for_test().await else {
        return;
    };
    let (first, file) = fixture(work.path(), 3 * MIB);
    s3.put("models", &[("v/weights.bin", &file)])
        .await
        .expect("boto3 upload");
    let flags = s3.daemon_flags();
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = lone_daemon(&args).await;
    let daemon = &cluster.peers[0];
    let url = "s3://models/v/weights.bin";
    let out = cluster.dir.path().join("one");
    download_within(daemon, url, &out).await.expect("first");
    assert_eq!(sha256_file(&out), pollen_core::ContentDigest::of(&first));

    let again = work.path().join("again");
    std::fs::create_dir(&again).expect("mkdir");
    let (second, file) = fixture(&again, 3 * MIB);
    s3.put("models", &[("v/weights.bin", &file)])
        .await
        .expect("boto3 upload");
    let out = cluster.dir.path().join("two");
    download_within(daemon, url, &out).await.expect("second");
    assert_eq!(sha256_file(&out), pollen_core::ContentDigest::of(&second));
    let tasks = daemon.stat().await.expect("stat").tasks;
    assert_eq!(tasks.len(), 2, "each version is its own task: {tasks:?}");
    assert_eq!(s3.gets("models", "v/weights.bin"), 2);
}
