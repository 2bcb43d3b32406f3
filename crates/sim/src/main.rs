//! `pollen-sim`: runs the swarm simulation for some swarm sizes and prints a table (and, with
//! `--json`, one JSON object per run).

use std::time::Instant;

use clap::Parser;
use pollen_sim::{SimSpec, Swarm};

/// Simulates Pollen swarms in virtual time with the real scheduler core.
#[derive(Parser, Debug)]
struct Args {
    /// Swarm sizes to run (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    peers: Vec<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Turn the scheduler's DAG rule on (no peer is offered a descendant as parent).
    #[arg(long)]
    dag: bool,
    /// Candidate parents per decision (K).
    #[arg(long)]
    candidate_limit: Option<usize>,
    /// Parents a peer downloads from at once (the daemon's `max_parents`).
    #[arg(long, default_value_t = 16)]
    max_parents: usize,
    /// Most concurrent pieces per ordinary parent.
    #[arg(long, default_value_t = 2)]
    pieces_per_parent: usize,
    /// Pieces a peer keeps in flight, spread over its parents: each gets this over their
    /// number, at least one and at most --pieces-per-parent (the daemon's
    /// `slices_in_flight`); 0 gives each parent --pieces-per-parent.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Scheduler TOML config (as for `pollen scheduler --config`), e.g. other weights.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Pieces in the task (256 of 4 MiB: 1 GiB; 64: 256 MiB).
    #[arg(long, default_value_t = 256)]
    pieces: u32,
    /// Bytes per piece, in MiB (DESIGN.md's minimum is 4).
    #[arg(long, default_value_t = 4.0)]
    piece_mib: f64,
    /// The origin's (and seed's) upload in Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    origin_mbit: f64,
    /// Give every peer this upload and download in Mbit/s instead of the three classes
    /// (the shaped real swarm of bench/swarm.py: every node at the same rate).
    #[arg(long)]
    uniform_mbit: Option<f64>,
    /// Fraction of peers that join late (over the first half of T_min).
    #[arg(long, default_value_t = 0.2)]
    late_fraction: f64,
    /// Pieces a parent uploads at once (0: no cap); a child finding a parent at its cap
    /// asks its other parents instead of queueing.
    #[arg(long, default_value_t = 0)]
    upload_cap: usize,
    /// Without --upload-cap: a parent uploads at once as many pieces as its upload holds at
    /// this many Mbit/s each (0: no cap).
    #[arg(long, default_value_t = 0.0)]
    upload_cap_mbit: f64,
    /// Turn off the seed's spreading (it offers only the pieces it has handed out least
    /// often, as the daemon's seed does), to measure what it brings.
    #[arg(long)]
    no_seed_spread: bool,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.json {
        println!("| N | T_min (s) | first | median | last | origin / S | unfinished | wall (s) |");
        println!("|---|---|---|---|---|---|---|---|");
    }
    for &n in &args.peers {
        let mut spec = SimSpec::standard(n);
        if let Some(path) = &args.config {
            spec.scheduler = toml::from_str(&std::fs::read_to_string(path)?)?;
        }
        spec.rng_seed = args.seed;
        spec.pieces = args.pieces;
        spec.upload_cap = args.upload_cap;
        spec.seed_spread = !args.no_seed_spread;
        spec.upload_cap_rate = args.upload_cap_mbit * 1e6 / 8.0;
        spec.piece_bytes = args.piece_mib * (1u64 << 20) as f64;
        spec.origin = args.origin_mbit * 1e6 / 8.0;
        spec.late_fraction = args.late_fraction;
        if let Some(mbit) = args.uniform_mbit {
            spec.classes = vec![pollen_sim::PeerClass {
                upload: mbit * 1e6 / 8.0,
                download: mbit * 1e6 / 8.0,
                share: 1.0,
            }];
        }
        spec.scheduler.evaluator.dag |= args.dag;
        spec.max_parents = args.max_parents;
        spec.pieces_per_parent = args.pieces_per_parent;
        spec.in_flight = args.in_flight;
        if let Some(k) = args.candidate_limit {
            spec.scheduler.evaluator.candidate_limit = k;
        }
        let started = Instant::now();
        let out = Swarm::new(spec).run(10.0);
        let wall = started.elapsed().as_secs_f64();
        if args.json {
            let mut v = serde_json::to_value(&out)?;
            v["ratios"] = serde_json::Value::Null;
            v["first"] = out.first().into();
            v["median"] = out.median().into();
            v["last"] = out.last().into();
            v["wall_seconds"] = wall.into();
            println!("{v}");
        } else {
            println!(
                "| {n} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {wall:.1} |",
                out.t_min,
                out.first(),
                out.median(),
                out.last(),
                out.origin_bytes_over_size,
                out.unfinished
            );
        }
    }
    Ok(())
}
