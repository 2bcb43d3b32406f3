//! `pollen-soak`: loops a swarm of real daemons for a number of rounds with random kills and
//! restarts, and reports what a long-running fleet would care about: rounds, bytes moved,
//! failures (the target is 0) and peak RSS per role. Run by hand, not in CI:
//!
//! `cargo build --release -p pollen -p pollen-bench && ./target/release/pollen-soak --rounds 20`
//!
//! Each round every peer downloads a new task (the same bytes under a new URL) at once. While
//! the round runs, `--kills` random daemons (ordinary peers, and now and then the seed) are
//! SIGKILLed at a random moment and restarted once the others finish; a killed peer then asks
//! for the same task again, which must resume and verify. Every copy is checked against the
//! origin's sha256. A download that fails without having been killed is a failure, and so is
//! a killed peer whose second attempt fails, and any copy that does not verify.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use pollen_core::ContentDigest;
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};
use pollen_testkit::origin::{random_data, Origin};
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};

/// Loops a swarm with random kills and restarts and reports failures and peak memory.
#[derive(Parser, Debug)]
struct Args {
    /// Ordinary daemons (a scheduler and a seed are added).
    #[arg(long, default_value_t = 8)]
    peers: usize,
    /// Rounds to run.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Bytes each round downloads (e.g. 64MiB).
    #[arg(long, default_value = "64MiB", value_parser = size)]
    size: u64,
    /// Daemons killed (and restarted) per round.
    #[arg(long, default_value_t = 2)]
    kills: usize,
    /// Upload limit of every daemon in bytes/s (e.g. 50MiB), so rounds last long enough for
    /// kills to land mid-transfer; 0 is unlimited.
    #[arg(long, default_value = "50MiB", value_parser = size)]
    upload_rate_limit: u64,
    /// Random seed (victims and kill times).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The `pollen` binary [default: beside this one].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Print one JSON object at the end instead of a table.
    #[arg(long)]
    json: bool,
}

fn size(s: &str) -> Result<u64, String> {
    pollen_core::parse_size(s).map_err(|e| e.to_string())
}

/// Peak resident memory (VmHWM) of a process in bytes, if it is running.
fn peak_rss(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[derive(Default, serde::Serialize)]
struct Totals {
    rounds: usize,
    downloads: usize,
    kills: usize,
    /// Kills that landed while the victim was still downloading (the others hit a daemon
    /// that had finished, which must then serve from its cache after the restart).
    interrupted: usize,
    failures: usize,
    /// Verified bytes handed to users (downloads that succeeded, times the size).
    delivered_bytes: u64,
    origin_bytes: u64,
    peak_rss_scheduler: u64,
    peak_rss_seed: u64,
    peak_rss_peer: u64,
    seconds: f64,
}

impl Totals {
    fn sample_rss(&mut self, cluster: &Cluster) {
        self.peak_rss_scheduler = self
            .peak_rss_scheduler
            .max(peak_rss(cluster.scheduler_pid()));
        let seed = cluster.seed.as_ref().and_then(DaemonProc::pid);
        self.peak_rss_seed = self.peak_rss_seed.max(peak_rss(seed));
        for p in &cluster.peers {
            self.peak_rss_peer = self.peak_rss_peer.max(peak_rss(p.pid()));
        }
    }
}

/// Downloads `url` on `d` to `out` and checks the copy; the error says what went wrong.
async fn fetch(d: &DaemonProc, url: &str, out: &Path, want: ContentDigest) -> Result<(), String> {
    d.download(url, out, None)
        .await
        .map_err(|s| format!("{}: {}", d.name, s.message()))?;
    let got = std::fs::read(out).map_err(|e| format!("{}: {e}", d.name))?;
    let _ = std::fs::remove_file(out);
    if ContentDigest::of(&got) != want {
        return Err(format!("{}: the copy does not match the origin", d.name));
    }
    Ok(())
}

async fn round(
    cluster: &mut Cluster,
    origin: &Origin,
    r: usize,
    args: &Args,
    rng: &mut StdRng,
    totals: &mut Totals,
) -> anyhow::Result<Vec<String>> {
    let url = origin.url(&format!("/blob?round={r}"));
    let want = origin.digest();
    let dir = cluster.dir.path().to_path_buf();
    // Victims: indices into peers, or None for the seed (one round in four may take it).
    let mut victims: Vec<Option<usize>> = Vec::new();
    while victims.len() < args.kills.min(args.peers) {
        let v = if rng.random_ratio(1, 4) && !victims.contains(&None) {
            None
        } else {
            Some(rng.random_range(0..args.peers))
        };
        if !victims.contains(&v) {
            victims.push(v);
        }
    }
    let pids: Vec<Option<u32>> = victims
        .iter()
        .map(|v| match v {
            Some(i) => cluster.peers[*i].pid(),
            None => cluster.seed.as_ref().and_then(DaemonProc::pid),
        })
        .collect();
    let delays: Vec<Duration> = victims
        .iter()
        .map(|_| Duration::from_millis(rng.random_range(200..3000)))
        .collect();
    let mut errors = Vec::new();
    let outcomes = {
        let jobs = cluster.peers.iter().enumerate().map(|(i, d)| {
            let out = dir.join(format!("round-{r}-{i}.out"));
            let url = url.clone();
            async move { (i, fetch(d, &url, &out, want).await) }
        });
        let downloads = futures::future::join_all(jobs);
        let kills = async {
            for (pid, delay) in pids.iter().zip(&delays) {
                tokio::time::sleep(*delay).await;
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        };
        let (outcomes, ()) = tokio::join!(downloads, kills);
        outcomes
    };
    totals.sample_rss(cluster);
    totals.kills += victims.len();
    for v in &victims {
        match v {
            Some(i) => cluster.peers[*i].restart().await?,
            None => {
                if let Some(s) = cluster.seed.as_mut() {
                    s.restart().await?;
                }
            }
        }
    }
    for (i, outcome) in outcomes {
        totals.downloads += 1;
        let killed = victims.contains(&Some(i));
        let result = match (outcome, killed) {
            (Err(_), true) => {
                totals.interrupted += 1;
                let out = dir.join(format!("round-{r}-{i}.again"));
                fetch(&cluster.peers[i], &url, &out, want)
                    .await
                    .map_err(|e| format!("after its restart, {e}"))
            }
            (other, _) => other,
        };
        match result {
            Ok(()) => totals.delivered_bytes += args.size,
            Err(e) => errors.push(e),
        }
    }
    Ok(errors)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("pollen"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p pollen` or pass --bin",
            bin.display()
        );
    }
    let origin = Origin::start(([127, 0, 0, 1], 0).into(), random_data(args.size as usize)).await?;
    let mut spec = ClusterSpec::new(&bin, args.peers);
    if args.upload_rate_limit > 0 {
        spec.peer_upload_limit = Some(args.upload_rate_limit);
        spec.seed_upload_limit = Some(args.upload_rate_limit);
    }
    let mut cluster = Cluster::start(spec).await?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut totals = Totals::default();
    let started = Instant::now();
    if !args.json {
        println!("| round | seconds | killed | failures | origin bytes / S |");
        println!("|---|---|---|---|---|");
        // (Per round; the totals below also count kills that interrupted a download.)
    }
    for r in 0..args.rounds {
        let t = Instant::now();
        let origin_before = origin.bytes_served();
        let errors = round(&mut cluster, &origin, r, &args, &mut rng, &mut totals).await?;
        totals.rounds += 1;
        totals.failures += errors.len();
        let origin_round = origin.bytes_served() - origin_before;
        if !args.json {
            println!(
                "| {r} | {:.1} | {} | {} | {:.2} |",
                t.elapsed().as_secs_f64(),
                args.kills.min(args.peers),
                errors.len(),
                origin_round as f64 / args.size as f64
            );
        }
        for e in errors {
            eprintln!("round {r}: {e}");
        }
    }
    totals.origin_bytes = origin.bytes_served();
    totals.seconds = started.elapsed().as_secs_f64();
    totals.sample_rss(&cluster);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    if args.json {
        println!("{}", serde_json::to_string(&totals)?);
    } else {
        println!(
            "\n{} rounds, {} downloads, {} kills ({} mid-download), {} failures in {:.0} s; {:.0} MiB delivered \
             verified, the origin sent {:.0} MiB; peak RSS: scheduler {:.0} MiB, seed {:.0} MiB, \
             peer {:.0} MiB",
            totals.rounds,
            totals.downloads,
            totals.kills,
            totals.interrupted,
            totals.failures,
            totals.seconds,
            mib(totals.delivered_bytes),
            mib(totals.origin_bytes),
            mib(totals.peak_rss_scheduler),
            mib(totals.peak_rss_seed),
            mib(totals.peak_rss_peer),
        );
    }
    if totals.failures > 0 {
        bail!("{} failures", totals.failures);
    }
    Ok(())
}
