//! `pollen demo`: a whole swarm on this machine, to see Pollen work in one command.
//!
//! Starts a built-in origin with SIZE random bytes, a scheduler, one seed and N daemons in
//! this process (the same code as the separate roles, each daemon on its own loopback address
//! and data directory), makes all N download the file at once, checks every copy's sha256,
//! and reports times and where the bytes came from. Everything is removed on exit or Ctrl-C.

mod origin;
mod swarm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use pollen_core::ContentDigest;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use origin::DemoOrigin;
use swarm::Swarm;

fn size(s: &str) -> Result<u64, String> {
    pollen_core::parse_size(s).map_err(|e| e.to_string())
}

/// `pollen demo` flags.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of peers downloading at once.
    #[arg(long, default_value_t = 8)]
    pub peers: usize,
    /// Size of the file to distribute (e.g. 256MiB).
    #[arg(long, default_value = "256MiB", value_parser = size)]
    pub size: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Upload limit of each peer, bytes per second (e.g. 50MiB); unlimited by default.
    #[arg(long, value_parser = size)]
    pub upload_rate_limit: Option<u64>,
}

#[derive(Serialize)]
struct PeerReport {
    peer: String,
    seconds: f64,
    verified: bool,
    error: Option<String>,
    bytes_from_peers: u64,
    bytes_uploaded: u64,
}

#[derive(Serialize)]
struct Report {
    peers: usize,
    file_bytes: u64,
    origin_bytes: u64,
    p2p_bytes: u64,
    origin_ratio: f64,
    all_verified: bool,
    seconds: f64,
    per_peer: Vec<PeerReport>,
}

fn sha256_file(path: &PathBuf) -> std::io::Result<ContentDigest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(ContentDigest(h.finalize().into()))
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    tokio::select! {
        r = demo(args) => r,
        _ = crate::signals::terminated() => bail!("interrupted; the demo swarm was stopped and its files removed"),
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.peers == 0 {
        bail!("--peers must be at least 1");
    }
    let size = usize::try_from(args.size).context("--size too large")?;
    let origin = DemoOrigin::start(size)
        .await
        .context("cannot start the demo's origin")?;
    let expected = origin.digest();
    if !args.json {
        eprintln!("starting origin, scheduler, seed and {} peers…", args.peers);
    }
    let swarm = Swarm::start(args.peers, args.upload_rate_limit).await?;
    let url = origin.url();
    let start = Instant::now();
    let downloads = swarm.peers.iter().map(|p| {
        let out = swarm.dir.path().join(format!("{}.out", p.name));
        let url = url.clone();
        async move {
            let r = p.download(&url, &out).await;
            let secs = start.elapsed().as_secs_f64();
            (p, out, r, secs)
        }
    });
    let results = futures::future::join_all(downloads).await;
    let seconds = start.elapsed().as_secs_f64();
    let mut per_peer = Vec::new();
    for (p, out, r, secs) in results {
        let (verified, error) = match r {
            Ok(()) => match sha256_file(&out) {
                Ok(d) if d == expected => (true, None),
                Ok(d) => (false, Some(format!("copy has {d}, origin has {expected}"))),
                Err(e) => (false, Some(e.to_string())),
            },
            Err(e) => (false, Some(e.to_string())),
        };
        per_peer.push(PeerReport {
            peer: p.name.clone(),
            seconds: secs,
            verified,
            error,
            bytes_from_peers: p.bytes_from_peers(),
            bytes_uploaded: p.bytes_uploaded(),
        });
    }
    let p2p_bytes = swarm.daemons().map(|d| d.bytes_uploaded()).sum();
    swarm.stop().await;
    let report = Report {
        peers: args.peers,
        file_bytes: args.size,
        origin_bytes: origin.bytes_served(),
        p2p_bytes,
        origin_ratio: origin.bytes_served() as f64 / args.size.max(1) as f64,
        all_verified: per_peer.iter().all(|p| p.verified),
        seconds,
        per_peer,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{:<10} {:>9} {:>9} {:>14} {:>14}",
            "peer", "seconds", "verified", "from peers", "uploaded"
        );
        for p in &report.per_peer {
            println!(
                "{:<10} {:>9.2} {:>9} {:>14} {:>14}{}",
                p.peer,
                p.seconds,
                if p.verified { "yes" } else { "NO" },
                p.bytes_from_peers,
                p.bytes_uploaded,
                p.error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
        println!();
        println!("file size:           {} bytes", report.file_bytes);
        println!("origin served:       {} bytes", report.origin_bytes);
        println!("peers served:        {} bytes", report.p2p_bytes);
        println!("origin bytes / size: {:.3}", report.origin_ratio);
        println!(
            "all copies verified: {}",
            if report.all_verified { "yes" } else { "NO" }
        );
        println!("total time:          {:.2} s", report.seconds);
    }
    Ok(if report.all_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
