//! Origins other than HTTP through real daemons: a file on one host's disk seeded into the
//! swarm, and the refusals that keep the rest of that disk private; an object in a real S3
//! server (moto) read once by the seed with its own credentials.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::origin::random_data;
use pollen_testkit::s3_server::{S3Server, ACCESS_KEY};

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

/// `--origin-s3 KEY=VALUE` flags pointing a daemon at `s3`, with its keys.
fn s3_flags(s3: &S3Server) -> Vec<String> {
    [
        format!("endpoint={}", s3.endpoint),
        "allow_http=true".into(),
        "region=us-east-1".into(),
        format!("access_key_id={}", ACCESS_KEY.0),
        format!("secret_access_key={}", ACCESS_KEY.1),
    ]
    .into_iter()
    .flat_map(|kv| ["--origin-s3".to_string(), kv])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_object_is_read_once_by_the_seed_and_spread_to_peers_without_credentials() {
    if !pollen_testkit::s3_server::present() {
        return;
    }
    let size = 48 * MIB;
    let work = tempfile::tempdir().expect("dir");
    let s3 = S3Server::start(&work.path().join("moto"))
        .await
        .expect("moto_server");
    let data = random_data(size as usize);
    let file = work.path().join("weights.bin");
    std::fs::write(&file, &data).expect("write");
    s3.put("models", &[("llama/7b/weights v1.bin", &file)])
        .await
        .expect("boto3 upload");

    // Only the seed holds credentials; peers never need any.
    let mut spec = ClusterSpec::new(bin(), 3);
    spec.seed_args = s3_flags(&s3);
    let cluster = Cluster::start(spec).await.expect("cluster");
    let url = "s3://models/llama/7b/weights%20v1.bin";
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, url, cluster.dir.path()).await;
    assert_all_verified(&results, pollen_core::ContentDigest::of(&data));
    for p in &peers {
        let s = p.stat().await.expect("stat");
        assert_eq!(s.origin_bytes, 0, "{} read the bucket: {s:?}", p.name);
    }
    let seed = cluster.seed.as_ref().expect("seed");
    assert_eq!(seed.stat().await.expect("stat").origin_bytes, size);
    assert_eq!(s3.gets("models", "llama/7b/weights v1.bin"), 1, "one GET");

    // A key that does not exist: one clear error naming the URL, nothing written.
    let out = cluster.dir.path().join("missing.out");
    let e = download_within(seed, "s3://models/llama/none.bin", &out)
        .await
        .expect_err("no such key");
    assert!(
        e.message().contains("s3://models/llama/none.bin")
            && e.message().contains("does not exist"),
        "{}",
        e.message()
    );
    assert!(!out.exists());
}
