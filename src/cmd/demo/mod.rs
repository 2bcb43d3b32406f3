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
    bytes_from_origin: u64,
    bytes_from_peers: u64,
    bytes_uploaded: u64,
}

/// The seed's part: it reads the origin and serves the first copies.
#[derive(Serialize)]
struct SeedReport {
    bytes_from_origin: u64,
    bytes_uploaded: u64,
}

#[derive(Serialize)]
struct Report {
    peers: usize,
    file_bytes: u64,
    origin_bytes: u64,
    p2p_bytes: u64,
    origin_ratio: f64,
    /// Verified bytes the peers took from other nodes.
    p2p_received_bytes: u64,
    all_verified: bool,
    seconds: f64,
    seed: SeedReport,
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
            bytes_from_origin: p.bytes_from_origin(),
            bytes_from_peers: p.bytes_from_peers(),
            bytes_uploaded: p.bytes_uploaded(),
        });
    }
    let p2p_bytes = swarm.daemons().map(|d| d.bytes_uploaded()).sum();
    let seed = SeedReport {
        bytes_from_origin: swarm.seed.bytes_from_origin(),
        bytes_uploaded: swarm.seed.bytes_uploaded(),
    };
    swarm.stop().await;
    let report = Report {
        peers: args.peers,
        file_bytes: args.size,
        origin_bytes: origin.bytes_served(),
        p2p_bytes,
        origin_ratio: origin.bytes_served() as f64 / args.size.max(1) as f64,
        p2p_received_bytes: per_peer.iter().map(|p| p.bytes_from_peers).sum(),
        all_verified: per_peer.iter().all(|p| p.verified),
        seconds,
        seed,
        per_peer,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(if report.all_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The demo's report as a table in human units, with the totals explained.
fn table(r: &Report) -> String {
    use indicatif::HumanBytes as H;
    let mut out = format!(
        "{:<10} {:>8} {:>9} {:>12} {:>12} {:>12}\n",
        "node", "seconds", "verified", "from origin", "from peers", "sent"
    );
    let mut row = |name: &str, secs: String, ok: &str, origin: u64, peers: u64, sent: u64| {
        out.push_str(&format!(
            "{name:<10} {secs:>8} {ok:>9} {:>12} {:>12} {:>12}\n",
            H(origin).to_string(),
            H(peers).to_string(),
            H(sent).to_string()
        ));
    };
    row(
        "seed",
        "-".into(),
        "-",
        r.seed.bytes_from_origin,
        0,
        r.seed.bytes_uploaded,
    );
    for p in &r.per_peer {
        row(
            &p.peer,
            format!("{:.2}", p.seconds),
            if p.verified { "yes" } else { "NO" },
            p.bytes_from_origin,
            p.bytes_from_peers,
            p.bytes_uploaded,
        );
    }
    for p in r.per_peer.iter().filter(|p| p.error.is_some()) {
        out.push_str(&format!(
            "{}: {}\n",
            p.peer,
            p.error.as_deref().unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "\n{} peers fetched a {} file in {:.2} s; the origin served {} ({:.3} x the file), \
         every other byte moved between nodes.\n",
        r.peers,
        H(r.file_bytes),
        r.seconds,
        H(r.origin_bytes),
        r.origin_ratio
    ));
    let extra = r.p2p_bytes.saturating_sub(r.p2p_received_bytes);
    if extra > 0 {
        out.push_str(&format!(
            "Nodes sent {} to peers, which kept {}: the {} more were slices a peer asked of two \
             parents at once (near its end, or when one was late) or that were cut off when a \
             connection closed; only verified bytes count as kept.\n",
            H(r.p2p_bytes),
            H(r.p2p_received_bytes),
            H(extra)
        ));
    }
    out.push_str(&format!(
        "Every copy checked against the origin's sha256: {}.\n",
        if r.all_verified {
            "all match"
        } else {
            "SOME DIFFER"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, from_peers: u64, sent: u64) -> PeerReport {
        PeerReport {
            peer: name.into(),
            seconds: 2.5,
            verified: true,
            error: None,
            bytes_from_origin: 0,
            bytes_from_peers: from_peers,
            bytes_uploaded: sent,
        }
    }

    #[test]
    fn the_table_has_the_seed_human_units_and_explains_the_totals() {
        const MIB: u64 = 1 << 20;
        let r = Report {
            peers: 2,
            file_bytes: 256 * MIB,
            origin_bytes: 256 * MIB,
            p2p_bytes: 520 * MIB,
            origin_ratio: 1.0,
            p2p_received_bytes: 512 * MIB,
            all_verified: true,
            seconds: 2.5,
            seed: SeedReport {
                bytes_from_origin: 256 * MIB,
                bytes_uploaded: 300 * MIB,
            },
            per_peer: vec![
                peer("peer-1", 256 * MIB, 120 * MIB),
                peer("peer-2", 256 * MIB, 100 * MIB),
            ],
        };
        let t = table(&r);
        for want in [
            "node        seconds  verified  from origin   from peers         sent",
            "seed              -         -   256.00 MiB          0 B   300.00 MiB",
            "peer-1         2.50       yes          0 B   256.00 MiB   120.00 MiB",
            "2 peers fetched a 256.00 MiB file in 2.50 s; the origin served 256.00 MiB (1.000 x the file)",
            "Nodes sent 520.00 MiB to peers, which kept 512.00 MiB: the 8.00 MiB more were slices",
            "Every copy checked against the origin's sha256: all match.",
        ] {
            assert!(t.contains(want), "{want:?} missing from\n{t}");
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        assert!(
            !words
                .windows(2)
                .any(|w| w[0].chars().all(|c| c.is_ascii_digit()) && w[1].starts_with("bytes")),
            "no raw byte counts:\n{t}"
        );
    }
}
