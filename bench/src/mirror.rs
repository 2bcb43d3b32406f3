//! (m) The registry mirror under a fleet pull: N daemons on loopback, each with a skopeo pull
//! of the same image at once through its own daemon's mirror, against the same N pulls
//! straight from the registry. Reports the registry's blob bytes served / image size and the
//! wall time of all N pulls, for both.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use pollen_testkit::registry_kit::{self as kit, Registry};

/// One side of the comparison.
pub struct Side {
    /// Registry blob bytes served / image size.
    pub registry_ratio: f64,
    /// Wall time of all pulls, seconds.
    pub seconds: f64,
}

/// Results of both sides.
pub struct MirrorResult {
    pub image_bytes: u64,
    pub direct: Side,
    pub pollen: Side,
}

fn served(reg: &Registry) -> u64 {
    reg.blob_bytes_served().values().sum()
}

/// A registries.conf that sends nothing through a mirror (plain HTTP to the registry).
fn direct_conf(dir: &Path, host: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join("direct.conf");
    std::fs::write(
        &p,
        format!("[[registry]]\nprefix = \"{host}\"\nlocation = \"{host}\"\ninsecure = true\n"),
    )?;
    Ok(p)
}

/// Runs `confs.len()` skopeo pulls of `reference` at once; wall time in seconds.
async fn pull_all(confs: &[PathBuf], reference: &str, dir: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let jobs = confs.iter().enumerate().map(|(i, conf)| {
        let out = dir.join(format!("out{i}"));
        async move { kit::skopeo_pull(conf, reference, &out, None).await }
    });
    for r in futures::future::join_all(jobs).await {
        r?;
    }
    let secs = start.elapsed().as_secs_f64();
    for i in 0..confs.len() {
        let _ = std::fs::remove_dir_all(dir.join(format!("out{i}")));
    }
    Ok(secs)
}

pub async fn run(
    bin: &Path,
    peers: usize,
    layers: usize,
    layer_bytes: usize,
) -> anyhow::Result<MirrorResult> {
    let tmp = tempfile::tempdir()?;
    let reg = Registry::start(&tmp.path().join("reg"), None).await?;
    let layout = kit::build_image(&tmp.path().join("img"), layers, layer_bytes).await?;
    kit::push(&layout, &reg.host, "bench/app", None).await?;
    let image_bytes = kit::image_bytes(&layout)?;
    let reference = format!("{}/bench/app:v1", reg.host);

    let conf = direct_conf(tmp.path(), &reg.host)?;
    let before = served(&reg);
    let seconds = pull_all(&vec![conf; peers], &reference, tmp.path()).await?;
    let direct = Side {
        registry_ratio: (served(&reg) - before) as f64 / image_bytes as f64,
        seconds,
    };

    let mut spec = ClusterSpec::new(bin, peers);
    spec.daemon_args = vec!["--default-registry".into(), format!("http://{}", reg.host)];
    let cluster = Cluster::start(spec).await.context("cluster")?;
    let mut confs = Vec::new();
    for (i, d) in cluster.peers.iter().enumerate() {
        let root = tmp.path().join(format!("root{i}"));
        let mirror = d.proxy_addr().await?;
        kit::pollen_init(
            bin,
            "podman",
            &root,
            &format!("http://{}", reg.host),
            &mirror,
        )
        .await?;
        confs.push(root.join("etc/containers/registries.conf.d/50-pollen.conf"));
    }
    let before = served(&reg);
    let seconds = pull_all(&confs, &reference, tmp.path()).await?;
    let pollen = Side {
        registry_ratio: (served(&reg) - before) as f64 / image_bytes as f64,
        seconds,
    };
    drop(cluster);
    reg.stop().await;
    Ok(MirrorResult {
        image_bytes,
        direct,
        pollen,
    })
}
