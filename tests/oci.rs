//! `oci://` origins against a real registry (Debian's `docker-registry`) holding a
//! ModelPack-style artifact pushed by the real ORAS client (PyPI `oras`): one file read once by
//! the seed and spread to peers, the whole artifact with `--recursive`, a layer the registry
//! serves corrupted refused with nothing written, and a file the artifact lacks named.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::registry_kit::{tools_present, Registry};

/// The artifact's files: (title, media type, size).
const FILES: &[(&str, &str, usize)] = &[
    (
        "model.safetensors",
        "application/vnd.cncf.model.weight.v1.raw",
        7 << 20,
    ),
    (
        "tokenizer.json",
        "application/vnd.cncf.model.weight.config.v1.raw",
        300 << 10,
    ),
    ("README.md", "application/vnd.cncf.model.doc.v1.raw", 1000),
];

/// Writes the files into `dir` and pushes them with ORAS as `host/repo:tag`, with a ModelPack
/// model config.
async fn push_artifact(dir: &Path, host: &str, repo: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, _, size) in FILES {
        std::fs::write(dir.join(name), pollen_testkit::origin::random_data(*size)).expect("write");
    }
    std::fs::write(
        dir.join("config.json"),
        br#"{"descriptor":{"name":"tiny"},"modelfs":{"type":"layers"},"config":{"format":"safetensors"}}"#,
    )
    .expect("write");
    let files: Vec<String> = FILES
        .iter()
        .map(|(name, media, _)| format!("'{name}:{media}'"))
        .collect();
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(insecure=True)\n\
         c.push(target='{host}/{repo}', files=[{}], \
         manifest_config='config.json:application/vnd.cncf.model.config.v1+json', quiet=True)\n",
        files.join(", ")
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "oras push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(daemon: &DaemonProc, args: &[&str], out: &Path) -> (bool, String) {
    let mut all: Vec<&OsStr> = vec!["get".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    all.extend(["-O".as_ref(), out.as_os_str()]);
    let o = pollen_cli(daemon, &all).await;
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oras_artifact_is_read_once_by_the_seed_and_every_layer_checked() {
    if !tools_present(&["docker-registry"]) {
        return;
    }
    let cluster = Cluster::start(ClusterSpec::new(bin(), 2))
        .await
        .expect("cluster");
    let dir = cluster.dir.path();
    let registry = Registry::start(&dir.join("registry"), None)
        .await
        .expect("registry");
    let files = dir.join("files");
    push_artifact(&files, &registry.host, "org/tiny:v1").await;
    let artifact = format!("oci://{}/org/tiny:v1", registry.host);
    let weights = files.join("model.safetensors");
    let digest = sha256_file(&weights);

    // One file on both peers: the seed reads it from the registry once, the peers share it.
    for (n, peer) in cluster.peers.iter().enumerate() {
        let out = dir.join(format!("weights-{n}"));
        let (ok, err) = get(peer, &[&format!("{artifact}/model.safetensors")], &out).await;
        assert!(ok, "{err}");
        assert_eq!(sha256_file(&out), digest);
    }
    let served = registry.blob_bytes_served();
    assert_eq!(
        served.get(&digest.to_string()).copied(),
        Some(FILES[0].2 as u64),
        "the registry served the layer once: {served:?}"
    );
    let peer_bytes = cluster.peers[1]
        .stat()
        .await
        .expect("stat")
        .p2p_download_bytes;
    assert_eq!(peer_bytes, FILES[0].2 as u64);

    // The whole artifact, each layer by its title.
    let all = dir.join("all");
    let (ok, err) = get(&cluster.peers[1], &["--recursive", &artifact], &all).await;
    assert!(ok, "{err}");
    for (name, _, _) in FILES {
        assert_eq!(
            sha256_file(&all.join(name)),
            sha256_file(&files.join(name)),
            "{name}"
        );
    }

    // A file the artifact lacks: named, with what it has.
    let (ok, err) = get(
        &cluster.peers[0],
        &[&format!("{artifact}/missing.bin")],
        &dir.join("m"),
    )
    .await;
    assert!(!ok && err.contains("tokenizer.json"), "{err}");
    assert!(!dir.join("m").exists());

    // A layer the registry serves with other bytes than its digest: refused, nothing written.
    let other = dir.join("other");
    push_artifact(&other, &registry.host, "org/broken:v1").await;
    let broken = format!("oci://{}/org/broken:v1", registry.host);
    let readme = sha256_file(&other.join("README.md"));
    let hex = readme.to_string().trim_start_matches("sha256:").to_string();
    let stored = dir
        .join("registry/data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    let mut bytes = std::fs::read(&stored).expect("the registry's copy");
    bytes[10] ^= 0xff;
    std::fs::write(&stored, bytes).expect("tamper");
    let out = dir.join("readme");
    let (ok, err) = get(&cluster.peers[0], &[&format!("{broken}/README.md")], &out).await;
    assert!(!ok && err.contains("digest mismatch"), "{err}");
    assert!(!out.exists());
    registry.stop().await;
}
