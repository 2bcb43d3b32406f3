//! What a simulated swarm looks like: peer bandwidth classes, late joiners, the origin, and
//! the theoretical lower bound on completion time the results are measured against.

use pollen_scheduler::SchedulerConfig;
use serde::Serialize;

/// A class of peers: upload and download in bytes per second, and its share of the swarm.
#[derive(Clone, Debug, Serialize)]
pub struct PeerClass {
    /// Upload, bytes per second.
    pub upload: f64,
    /// Download, bytes per second.
    pub download: f64,
    /// Fraction of the peers in this class.
    pub share: f64,
}

/// A simulated swarm.
#[derive(Clone, Debug)]
pub struct SimSpec {
    /// Peers downloading the task (the seed peer is extra).
    pub peers: usize,
    /// Pieces in the task.
    pub pieces: u32,
    /// Bytes per piece.
    pub piece_bytes: f64,
    /// The origin's upload in bytes per second. The seed peer sits beside it: it reads the
    /// origin at this rate and uploads at this rate.
    pub origin: f64,
    /// Bandwidth classes, assigned to peers in proportion to their share.
    pub classes: Vec<PeerClass>,
    /// Fraction of peers that join late, spread evenly over `late_window` x T_min.
    pub late_fraction: f64,
    /// The window late joiners spread over, in multiples of T_min.
    pub late_window: f64,
    /// Virtual seconds per step.
    pub dt: f64,
    /// Seeds the scheduler's and the peers' random choices.
    pub rng_seed: u64,
    /// The scheduler's configuration (the real evaluator runs).
    pub scheduler: SchedulerConfig,
    /// Node stage, as in the daemon: most parents at once, most concurrent pieces per
    /// ordinary parent (a seed parent gets one), pieces in flight spread over the parents
    /// (each gets `in_flight` over their number, at least one; 0: `pieces_per_parent`
    /// each), and how long a parent with nothing to give is kept: most parents at once.
    pub max_parents: usize,
    /// Most concurrent pieces per ordinary parent.
    pub pieces_per_parent: usize,
    /// Pieces in flight, spread over the parents.
    pub in_flight: usize,
    /// Seconds a parent with nothing to give is kept.
    pub idle_drop: f64,
    /// Pieces a parent uploads at once (0: no cap); a child finding a parent at its cap
    /// asks its other parents instead of queueing.
    pub upload_cap: usize,
    /// With `upload_cap` 0: a parent uploads at once as many pieces as its upload holds at
    /// this many bytes per second each (at least one); 0: no cap.
    pub upload_cap_rate: f64,
    /// A seed offers only the pieces it has handed out least often (the daemon's
    /// super-seeding, `upload_provider.rs`); off only to measure what it brings.
    pub seed_spread: bool,
}

impl SimSpec {
    /// The default study: 1 GiB in 4 MiB pieces; peers at 50/100/200 Mbit/s upload with
    /// twice that download; the origin at 1 Gbit/s; a fifth of the peers join late over the
    /// first half of T_min.
    pub fn standard(peers: usize) -> Self {
        let mbit = 1e6 / 8.0;
        Self {
            peers,
            pieces: 256,
            piece_bytes: 4.0 * 1024.0 * 1024.0,
            origin: 1000.0 * mbit,
            classes: vec![
                PeerClass {
                    upload: 50.0 * mbit,
                    download: 100.0 * mbit,
                    share: 0.25,
                },
                PeerClass {
                    upload: 100.0 * mbit,
                    download: 200.0 * mbit,
                    share: 0.5,
                },
                PeerClass {
                    upload: 200.0 * mbit,
                    download: 400.0 * mbit,
                    share: 0.25,
                },
            ],
            late_fraction: 0.2,
            late_window: 0.5,
            dt: 0.02,
            rng_seed: 1,
            scheduler: SchedulerConfig::default(),
            max_parents: 16,
            pieces_per_parent: 2,
            in_flight: 8,
            idle_drop: 3.0,
            upload_cap: 0,
            upload_cap_rate: 0.0,
            seed_spread: true,
        }
    }

    /// Upload and download of peer `i`, by class share (deterministic: classes are dealt
    /// round-robin in proportion).
    pub fn class_of(&self, i: usize) -> &PeerClass {
        let mut acc = 0.0;
        let x = ((i as f64 * 0.618_033_988_75) % 1.0 + 1.0) % 1.0;
        for c in &self.classes {
            acc += c.share;
            if x < acc {
                return c;
            }
        }
        self.classes.last().expect("at least one class")
    }

    /// Content size in bytes.
    pub fn size(&self) -> f64 {
        self.pieces as f64 * self.piece_bytes
    }

    /// T_min = max(S/O, S/D_min, N*S/(O + sum U)): no peer can finish sooner than its own
    /// download allows, the origin must send every byte once, and the swarm's total upload
    /// must carry N copies.
    pub fn t_min(&self) -> f64 {
        let s = self.size();
        let d_min = (0..self.peers)
            .map(|i| self.class_of(i).download)
            .fold(f64::INFINITY, f64::min);
        let u_sum: f64 = (0..self.peers).map(|i| self.class_of(i).upload).sum();
        (s / self.origin)
            .max(s / d_min)
            .max(self.peers as f64 * s / (self.origin + u_sum))
    }

    /// When peer `i` joins, in virtual seconds.
    pub fn join_time(&self, i: usize) -> f64 {
        let late = (self.peers as f64 * self.late_fraction).round() as usize;
        let first_late = self.peers - late;
        if i < first_late || late == 0 {
            return 0.0;
        }
        let k = (i - first_late) as f64;
        (k + 1.0) / late as f64 * self.late_window * self.t_min()
    }
}
