//! `pollen-bench`: measures Pollen against baselines on this machine, in one run, and prints
//! a Markdown report for docs/BENCHMARKS.md.
//!
//! (a) one daemon fetching a file from a local origin (no scheduler) vs `curl` from the same
//! origin; (b) peer-to-peer transfer of a completed task on loopback; (c) the daemon's peak RSS
//! (VmHWM) while downloading a large file; (d) `pollen demo`'s origin bytes / file size;
//! (m) N skopeo pulls of one image at once through N daemons' registry mirrors vs straight
//! from the registry (needs docker-registry, umoci and skopeo).
//! Timings are whole `pollen get` operations (request to verified file at the output path),
//! median of `--runs`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use pollen_proto::daemon::DownloadRequest;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::origin::{random_data, Origin};

#[derive(Parser, Debug)]
struct Args {
    /// Size for (a) and (b).
    #[arg(long, default_value = "1GiB", value_parser = size)]
    size: u64,
    /// Size for the RSS measurement (c).
    #[arg(long, default_value = "2GiB", value_parser = size)]
    rss_size: u64,
    /// Runs per timing; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Peers for the demo measurement (d).
    #[arg(long, default_value_t = 8)]
    demo_peers: usize,
    /// File size for the demo measurement (d).
    #[arg(long, default_value = "256MiB")]
    demo_size: String,
    /// Also run (b) with every data directory and the output on this directory (e.g. a tmpfs
    /// such as /dev/shm), to separate the protocol's speed from the disk's.
    #[arg(long)]
    fast_dir: Option<PathBuf>,
    /// Run only these measurements (letters a, b, f (b on --fast-dir), w, c, d, m).
    #[arg(long, default_value = "abfwcdm")]
    only: String,
    /// Extra flags for every daemon of (b), space separated (e.g. `--config F` to try other
    /// data-plane settings).
    #[arg(long, default_value = "")]
    daemon_args: String,
    /// Daemons (and concurrent pulls) for the mirror measurement (m).
    #[arg(long, default_value_t = 8)]
    mirror_peers: usize,
    /// Layers of the image for (m).
    #[arg(long, default_value_t = 4)]
    mirror_layers: usize,
    /// Bytes per layer for (m) (random, so layers do not compress).
    #[arg(long, default_value = "50MiB", value_parser = size)]
    mirror_layer_size: u64,
}

mod mirror;

fn size(s: &str) -> Result<u64, String> {
    pollen_core::parse_size(s).map_err(|e| e.to_string())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn pollen_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("pollen");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Flushes dirty pages left by earlier runs, so no timed run is throttled by another's
/// write-back (done before every timed operation, Pollen's and the baseline's alike).
fn settle_page_cache() {
    nix::unistd::sync();
}

async fn timed_get(d: &DaemonProc, url: &str, out: &Path, tag: &str) -> anyhow::Result<f64> {
    let _ = std::fs::remove_file(out);
    settle_page_cache();
    let start = Instant::now();
    d.download_request(DownloadRequest {
        url: url.to_string(),
        output_path: out.to_string_lossy().into_owned(),
        tag: tag.to_string(),
        ..Default::default()
    })
    .await
    .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("  get {tag}: {secs:.2} s");
    Ok(secs)
}

fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")
}

async fn origin_vs_curl(args: &Args, bin: &Path) -> anyhow::Result<(f64, f64)> {
    let origin = Origin::start(([127, 0, 0, 1], 0).into(), random_data(args.size as usize)).await?;
    let url = origin.url("/blob");
    let tmp = tempfile::tempdir()?;
    let cluster = Cluster::start(ClusterSpec::standalone(bin, 1)).await?;
    // Interleaved (curl, get, curl, get, …) so both see the same phases of a noisy machine.
    let (mut curl, mut pollen) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let out = tmp.path().join("curl.out");
        settle_page_cache();
        let start = Instant::now();
        let st = tokio::process::Command::new("curl")
            .args(["-s", "-f", "-o"])
            .arg(&out)
            .arg(&url)
            .status()
            .await
            .context("curl")?;
        if !st.success() {
            bail!("curl failed");
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("  curl: {secs:.2} s");
        curl.push(secs);
        std::fs::remove_file(&out)?;
        let out = tmp.path().join("pollen.out");
        pollen.push(timed_get(&cluster.peers[0], &url, &out, &format!("a{run}")).await?);
        std::fs::remove_file(&out)?;
    }
    Ok((
        gbps(args.size, median(curl)),
        gbps(args.size, median(pollen)),
    ))
}

/// Seconds to write `data` into a new file in `dir` with plain 1 MiB `write`s (what `dd
/// bs=1M` does), the file deleted after: the machine's ceiling for any download that lands
/// in page-cache pages there, measured right before the download it is compared with.
fn write_ceiling(dir: &Path, data: &[u8]) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join("ceiling.tmp");
    settle_page_cache();
    let start = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for chunk in data.chunks(1 << 20) {
        f.write_all(chunk)?;
    }
    drop(f);
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    eprintln!("  plain write: {secs:.2} s");
    Ok(secs)
}

/// (b): the median rate of a completed task's transfer to a second peer, and the median
/// rate of a plain write of the same bytes into the same filesystem in the same runs.
async fn p2p(args: &Args, bin: &Path, dir: Option<&Path>) -> anyhow::Result<(f64, f64)> {
    let data = random_data(args.size as usize);
    let origin = Origin::start(([127, 0, 0, 1], 0).into(), data.clone()).await?;
    let url = origin.url("/blob");
    let (mut times, mut ceilings) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        // A new pair of daemons per run, whose data is deleted after it: caches that pile up
        // across runs fill memory (page cache or tmpfs), and this VM's fresh memory is slow
        // to touch, so later runs would measure the hypervisor rather than Pollen.
        let mut spec = ClusterSpec::new(bin, 2);
        spec.seed = false;
        spec.daemon_args = args
            .daemon_args
            .split_whitespace()
            .map(String::from)
            .collect();
        let tmp = match dir {
            Some(d) => tempfile::tempdir_in(d)?,
            None => tempfile::tempdir()?,
        };
        spec.data_root = dir.map(|_| tmp.path().to_path_buf());
        let cluster = Cluster::start(spec).await?;
        let tag = format!("b{run}");
        let out = tmp.path().join("first.out");
        timed_get(&cluster.peers[0], &url, &out, &tag).await?;
        settle_page_cache();
        std::fs::remove_file(&out)?;
        // An untimed write first: the VM's first touch of memory is far slower than a reuse,
        // so both timed operations below run on recycled pages (the ceiling on the warm-up's,
        // the transfer on the ceiling's), as they would on a long-running node.
        let target_dir = dir.map_or_else(std::env::temp_dir, |_| tmp.path().to_path_buf());
        write_ceiling(&target_dir, &data)?;
        ceilings.push(write_ceiling(&target_dir, &data)?);
        let out = tmp.path().join("second.out");
        times.push(timed_get(&cluster.peers[1], &url, &out, &tag).await?);
        std::fs::remove_file(&out)?;
        let got = cluster.peers[1].stat().await?.p2p_download_bytes;
        if got != args.size {
            bail!(
                "the second peer received {got} bytes from peers, not {}",
                args.size
            );
        }
    }
    Ok((
        gbps(args.size, median(times)),
        gbps(args.size, median(ceilings)),
    ))
}

async fn rss(args: &Args, bin: &Path) -> anyhow::Result<(f64, u64)> {
    let origin = Origin::start(
        ([127, 0, 0, 1], 0).into(),
        random_data(args.rss_size as usize),
    )
    .await?;
    let spec = ClusterSpec::standalone(bin, 1);
    let cluster = Cluster::start(spec).await?;
    let d = &cluster.peers[0];
    let pid = d.pid().context("daemon pid")?;
    let tmp = tempfile::tempdir()?;
    let secs = timed_get(d, &origin.url("/blob"), &tmp.path().join("rss.out"), "c").await?;
    Ok((gbps(args.rss_size, secs), vm_hwm_kib(pid)?))
}

async fn demo(args: &Args, bin: &Path) -> anyhow::Result<serde_json::Value> {
    let out = tokio::process::Command::new(bin)
        .args([
            "demo",
            "--json",
            "--peers",
            &args.demo_peers.to_string(),
            "--size",
            &args.demo_size,
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!("demo failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = pollen_bin()?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let want = |c: char| args.only.contains(c);
    println!("| measurement | result | baseline / target |");
    println!("|---|---|---|");
    if want('a') {
        eprintln!("(a) origin → one daemon vs curl…");
        let (curl, get) = origin_vs_curl(&args, &bin).await?;
        println!(
            "| (a) origin → daemon, {:.2} GiB, `pollen get` | {get:.2} GB/s ({:.2} x curl) | curl {curl:.2} GB/s; target ≥ 0.8 x curl |",
            gib(args.size),
            get / curl
        );
    }
    if want('b') {
        eprintln!("(b) peer-to-peer transfer of a completed task…");
        let (p2p_disk, ceiling) = p2p(&args, &bin, None).await?;
        println!(
            "| (b) peer → peer, completed {:.2} GiB task, `pollen get`, data on disk | {p2p_disk:.2} GB/s | target ≥ 1 GB/s; a plain write of the same bytes there: {ceiling:.2} GB/s |",
            gib(args.size)
        );
    }
    if let (true, Some(dir)) = (want('f'), &args.fast_dir) {
        eprintln!("(b) peer-to-peer transfer, data on {}…", dir.display());
        let (p2p_fast, ceiling) = p2p(&args, &bin, Some(dir)).await?;
        println!(
            "| (b) peer → peer, completed {:.2} GiB task, `pollen get`, data and output on {} | {p2p_fast:.2} GB/s | target ≥ 1 GB/s; a plain write of the same bytes there: {ceiling:.2} GB/s |",
            gib(args.size),
            dir.display()
        );
    }
    if want('w') {
        eprintln!("(w) data plane alone…");
        let dir = args.fast_dir.clone().unwrap_or_else(std::env::temp_dir);
        let rate = wire_only::run(args.size, &dir, false).await?;
        println!(
            "| (w) data plane alone: {:.2} GiB over loopback, sendfile → 2 pipelined connections → BLAKE3 verify, no disk write | {rate:.2} GB/s | (context for (b)) |",
            gib(args.size)
        );
        eprintln!("(w) data plane alone, mutual TLS…");
        let tls = wire_only::run(args.size, &dir, true).await?;
        println!(
            "| (w) the same with mutual TLS on (pieces read into a buffer and encrypted) | {tls:.2} GB/s ({:.2} x plain) | (the cost of `[tls]`) |",
            tls / rate
        );
    }
    if want('c') {
        eprintln!("(c) peak RSS while downloading…");
        let (rss_rate, hwm) = rss(&args, &bin).await?;
        println!(
            "| (c) daemon peak RSS (VmHWM), {:.2} GiB download | {:.1} MiB (at {rss_rate:.2} GB/s) | target ≤ 150 MiB |",
            gib(args.rss_size),
            hwm as f64 / 1024.0
        );
    }
    if want('d') {
        eprintln!("(d) pollen demo…");
        let d = demo(&args, &bin).await?;
        println!(
            "| (d) `pollen demo --peers {} --size {}` | origin bytes / size = {:.3}, {:.2} s, all verified: {} | target ≤ 1.1 |",
            args.demo_peers,
            args.demo_size,
            d["origin_ratio"].as_f64().unwrap_or(f64::NAN),
            d["seconds"].as_f64().unwrap_or(f64::NAN),
            d["all_verified"]
        );
    }
    if want('m') {
        eprintln!("(m) registry mirror, fleet pull…");
        let m = mirror::run(
            &bin,
            args.mirror_peers,
            args.mirror_layers,
            args.mirror_layer_size as usize,
        )
        .await?;
        let mib = m.image_bytes as f64 / (1u64 << 20) as f64;
        println!(
            "| (m) {n} skopeo pulls at once of one {mib:.0} MiB image through {n} daemons' mirrors | registry blob bytes / image size = {:.3}, {:.2} s | straight from the registry: {:.3}, {:.2} s; target ≤ 1.1 |",
            m.pollen.registry_ratio,
            m.pollen.seconds,
            m.direct.registry_ratio,
            m.direct.seconds,
            n = args.mirror_peers,
        );
    }
    Ok(())
}

/// The data plane alone: one client fetching every slice of a file held in `dir` from an
/// upload server over loopback (sendfile on the server, pipelined requests on 2 connections),
/// verifying each slice with BLAKE3 and discarding it, so no disk write is involved.
mod wire_only {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pollen_core::slice::{piece_root, slice_hashes, SliceHasher};
    use pollen_core::TaskId;
    use pollen_core::{Bitfield, PieceDigest, PieceLayout, RateLimiter, SliceHash, SliceLayout};
    use pollen_wire::{
        ClientTls, PieceClient, PieceProvider, PieceResponse, ServedSlice, UploadServer,
        UploadStats,
    };
    use tokio_util::sync::CancellationToken;

    struct OneFile {
        file: Arc<std::fs::File>,
        slices: SliceLayout,
        hashes: Vec<Arc<[SliceHash]>>,
    }

    impl PieceProvider for OneFile {
        fn bitfield(&self, _: &TaskId) -> Option<Bitfield> {
            let mut b = Bitfield::new(self.slices.count());
            (0..self.slices.count()).for_each(|n| b.set(n));
            Some(b)
        }
        fn slice(&self, _: &TaskId, n: u32) -> Option<ServedSlice> {
            let spot = self.slices.spot(n)?;
            Some(ServedSlice {
                file: self.file.clone(),
                offset: spot.offset,
                length: spot.length as u32,
                piece: spot.piece,
                hashes: Some(self.hashes.get(spot.piece as usize)?.clone()),
            })
        }
    }

    pub async fn run(size: u64, dir: &std::path::Path, tls: bool) -> anyhow::Result<f64> {
        let certs = tempfile::tempdir_in(dir)?;
        let material = if tls {
            let c = pollen_tls::make_dev_certs(certs.path(), &[])?;
            Some(pollen_tls::Material::load(&c.daemon_config())?)
        } else {
            None
        };
        let client_tls = match &material {
            Some(m) => Some(ClientTls::new(m.client_config()?, m.peer_name().clone())),
            None => None,
        };
        let data = pollen_testkit::origin::random_data(size as usize);
        let layout = PieceLayout::for_content(size);
        let slices = SliceLayout::new(layout);
        let hashes: Vec<Arc<[SliceHash]>> = (0..layout.piece_count())
            .map(|n| {
                let (a, l) = (layout.offset(n) as usize, layout.length(n) as usize);
                slice_hashes(&data[a..a + l]).into()
            })
            .collect();
        let digests: Vec<PieceDigest> = (0..layout.piece_count())
            .map(|n| {
                let (a, l) = (layout.offset(n) as usize, layout.length(n) as usize);
                PieceDigest::of(&data[a..a + l])
            })
            .collect();
        let path = dir.join("wire-only.bin");
        std::fs::write(&path, &data)?;
        drop(data);
        let provider = Arc::new(OneFile {
            file: Arc::new(std::fs::File::open(&path)?),
            slices,
            hashes,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let server = UploadServer::new(
            listener,
            provider,
            RateLimiter::unlimited(),
            Arc::new(UploadStats::default()),
            8,
        );
        let server = match &material {
            Some(m) => server.with_tls(m.server_config(&[])?),
            None => server,
        };
        tokio::spawn(server.run(stop.clone()));
        let task = TaskId([1; 32]);
        let start = Instant::now();
        let mut conns = Vec::new();
        for c in 0..2u32 {
            let digests = digests.clone();
            let tls = client_tls.clone();
            conns.push(tokio::spawn(async move {
                let mut client =
                    PieceClient::connect_with(addr, Duration::from_secs(3), tls.as_ref()).await?;
                let mine: Vec<u32> = (0..slices.count()).filter(|n| n % 2 == c).collect();
                let mut buf = vec![0u8; 1 << 20];
                let mut next = 0;
                let mut inflight = std::collections::VecDeque::new();
                while next < mine.len() || !inflight.is_empty() {
                    while inflight.len() < 4 && next < mine.len() {
                        client.request_slice(task, mine[next]).await?;
                        inflight.push_back(mine[next]);
                        next += 1;
                    }
                    let n = inflight.pop_front().expect("in flight");
                    let PieceResponse::Slice { header: h, hashes } = client.next_response().await?
                    else {
                        anyhow::bail!("slice {n} missing");
                    };
                    let spot = slices.spot(n).expect("slice in range");
                    let piece_len = layout.length(spot.piece);
                    if piece_root(&hashes, piece_len) != Some(digests[spot.piece as usize]) {
                        anyhow::bail!("slice hashes of piece {} do not add up", spot.piece);
                    }
                    let mut hasher = SliceHasher::new(piece_len, spot.index);
                    let mut left = h.length as usize;
                    while left > 0 {
                        let take = left.min(buf.len());
                        client.read_payload(&mut buf[..take]).await?;
                        hasher.update(&buf[..take]);
                        left -= take;
                    }
                    if hasher.finish() != [hashes[spot.index as usize]] {
                        anyhow::bail!("slice {n} failed verification");
                    }
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for c in conns {
            c.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        stop.cancel();
        std::fs::remove_file(&path)?;
        Ok(size as f64 / secs / 1e9)
    }
}
