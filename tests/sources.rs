//! Origins other than HTTP through real daemons: a file on one host's disk seeded into the
//! swarm, and the refusals that keep the rest of that disk private.

mod common;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::origin::random_data;

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
