//! Parent selection, the scheduler's half of the two-stage plan: which peers a downloading
//! peer should fetch from. (The daemon's piece dispatcher is the other half: it decides which
//! piece to take from which of these parents.)
//!
//! Filter, then rank. The filter looks at a bounded sample of the task's peers (every seed
//! peer plus up to `sample_limit` others, from a random place in join order), so a decision
//! costs the same with 50 peers or 50,000. A candidate must:
//! - live on another host that is alive and has a free upload slot;
//! - not be distrusted (it contradicted the task's published facts, see `task_facts`);
//! - not be blocklisted by the child, and not be a "bad" parent (piece times far above the
//!   task's typical time) unless nothing else is left;
//! - hold a piece the child lacks, or be downloading the task itself while every piece is
//!   in the swarm or on its way (some peer holds the whole task or reads the origin);
//!   otherwise the pieces it lacks may exist nowhere, and offering it would keep the child
//!   busy with a parent that can never give anything. Before the task's facts are
//!   published only a peer reading the origin counts as downloading: nothing another holds
//!   can be checked yet, and the facts may yet expose it as a liar;
//! - with `dag` on, not be a descendant of the child.
//!
//! The rank is a weighted sum of features in 0..=1 (weights in [`Weights`]): free upload
//! capacity, pieces the candidate can give, upload success rate, piece speed against the
//! task's typical, host type, IDC and location affinity, and network proximity.

use std::net::IpAddr;

use rand::{Rng, RngExt as _};
use serde::{Deserialize, Serialize};

use crate::dag::Descendants;
use crate::model::{Host, Peer, PeerState, Task};
use crate::slots::Slots;

/// Upload connections one child opens to an ordinary parent (the daemon's choice, mirrored
/// here to count slots before the host's next load report arrives).
pub const CONNECTIONS_PER_CHILD: u32 = 2;

/// Weights of the evaluator's features. They need not sum to 1; only ratios matter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Load on the candidate's host: upload per child (its upload limit over its children
    /// plus one, against the best candidate's), free upload slots and free bandwidth.
    /// Default 0.40.
    pub load: f64,
    /// Pieces the candidate holds that the child lacks, over the task's piece count.
    /// Default 0.25.
    pub pieces: f64,
    /// Share of the candidate's uploads that children verified. Default 0.15.
    pub success: f64,
    /// Piece speed: the task's typical piece time over the candidate's. Default 0.15.
    pub speed: f64,
    /// Ordinary peers over seed peers, so a seed's upload goes to pieces nobody else has
    /// yet. Default 0.10.
    pub host_type: f64,
    /// Same IDC as the child. Default 0.05.
    pub idc: f64,
    /// Shared prefix of the `region|zone|rack` location. Default 0.05.
    pub location: f64,
    /// Network proximity: same /24 (or /64) scores 1, same /16 (or /48) 0.5. Default 0.05.
    pub proximity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            load: 0.40,
            pieces: 0.25,
            success: 0.15,
            speed: 0.15,
            host_type: 0.10,
            idc: 0.05,
            location: 0.05,
            proximity: 0.05,
        }
    }
}

impl Weights {
    /// Names of the features, as in config files and the manager's cluster config.
    pub const NAMES: [&'static str; 8] = [
        "load",
        "pieces",
        "success",
        "speed",
        "host_type",
        "idc",
        "location",
        "proximity",
    ];

    /// Sets the weight of the feature `name`; false when there is no such feature.
    pub fn set(&mut self, name: &str, w: f64) -> bool {
        let slot = match name {
            "load" => &mut self.load,
            "pieces" => &mut self.pieces,
            "success" => &mut self.success,
            "speed" => &mut self.speed,
            "host_type" => &mut self.host_type,
            "idc" => &mut self.idc,
            "location" => &mut self.location,
            "proximity" => &mut self.proximity,
            _ => return false,
        };
        *slot = w;
        true
    }
}

/// Tunables of the evaluator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluatorConfig {
    /// Candidate parents returned to a peer (K). Default 6.
    pub candidate_limit: usize,
    /// Non-seed peers examined per decision. Default 40.
    pub sample_limit: usize,
    /// A parent whose mean piece time exceeds this many times the task's typical time is
    /// bad: offered only when no other candidate is left. Default 4.0.
    pub bad_parent_factor: f64,
    /// Keep the parent graph acyclic: never offer a descendant of the child as its parent
    /// (Dragonfly's rule). Default false: a piece only ever moves from a peer that holds it
    /// to one that lacks it, so two peers that are each other's parents trade different
    /// pieces, which is what a swarm needs; the simulation (docs/benchmarks-history.md) finishes
    /// the last of 1,000 peers at 1.24 x T_min without the rule and 1.76 x with it.
    pub dag: bool,
    /// Feature weights.
    pub weights: Weights,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self {
            candidate_limit: 6,
            sample_limit: 40,
            bad_parent_factor: 4.0,
            dag: false,
            weights: Weights::default(),
        }
    }
}

/// Free upload connections on a host, counting both its last report and the children the
/// scheduler assigned since (a burst of registrations must not all land on one host).
pub fn free_slots(host: &Host) -> u32 {
    let max = host.info.max_upload_connections.max(1);
    let assigned = (host.children as u32).saturating_mul(CONNECTIONS_PER_CHILD);
    max.saturating_sub(host.load.upload_connections.max(assigned))
}

/// The parents a child (slot) says it `has` (slots), as its recorded edges: each once, never
/// the child itself, and with the DAG rule on (`below`: the child's descendants), none that
/// is now a descendant of the child.
pub fn kept_parents(task: &Task, child: u32, has: &[u32], below: Option<&Descendants>) -> Vec<u32> {
    let mut kept: Vec<u32> = Vec::with_capacity(has.len());
    for &slot in has {
        if slot == child || kept.contains(&slot) {
            continue;
        }
        if below.is_some_and(|d| d.contains(task, slot)) {
            continue;
        }
        kept.push(slot);
    }
    kept
}

fn location_affinity(a: &str, b: &str) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('|').collect(), b.split('|').collect());
    let shared = pa.iter().zip(&pb).take_while(|(x, y)| x == y).count();
    shared as f64 / pa.len().max(pb.len()) as f64
}

fn proximity(a: IpAddr, b: IpAddr) -> f64 {
    // Bytes of the address that make a "near" and a "same site" network.
    let (a, b, near, site): (Vec<u8>, Vec<u8>, usize, usize) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (a.octets().into(), b.octets().into(), 3, 2),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets().into(), b.octets().into(), 8, 6),
        _ => return 0.0,
    };
    if a[..near] == b[..near] {
        1.0
    } else if a[..site] == b[..site] {
        0.5
    } else {
        0.0
    }
}

/// Ranked parent peer slots for `child` in `task`, best first, leaving out the parents it
/// `has` already and, with the DAG rule on (`below`: the child's descendants), any
/// descendant. `rng` picks where the sample starts, so different children look at
/// different peers.
pub fn select_parents(
    cfg: &EvaluatorConfig,
    task: &Task,
    hosts: &Slots<Host>,
    child_id: &str,
    has: &[u32],
    below: Option<&Descendants>,
    rng: &mut impl Rng,
) -> Vec<u32> {
    let Some(child) = task.peers.get(child_id) else {
        return Vec::new();
    };
    let Some(child_host) = child.host.and_then(|h| hosts.at(h)) else {
        return Vec::new();
    };
    let total = task.piece_count().unwrap_or(1).max(1) as f64;
    let n = task.order.len();
    let start = if n == 0 { 0 } else { rng.random_range(0..n) };
    let sample = task.seeds.iter().copied().chain(
        (0..n.min(cfg.sample_limit))
            .map(|i| task.order[(start + i) % n])
            .filter(|slot| !task.seeds.contains(slot)),
    );
    // Whether every piece is in the swarm or on its way; computed once, if needed.
    let pieces_coming = std::cell::OnceCell::new();
    // (score, place in the sample, slot): ties go to the earlier place, which is repeatable
    // for a given random start and cheaper than comparing ids.
    let mut scored: Vec<Scored> = Vec::new();
    for (place, slot) in sample.enumerate() {
        if has.contains(&slot) {
            continue;
        }
        let Some(p) = task.peers.at(slot) else {
            continue;
        };
        let Some(mut s) = score(
            cfg,
            task,
            hosts,
            child,
            child_host,
            p,
            total,
            &pieces_coming,
        ) else {
            continue;
        };
        s.place = place;
        s.bad = p
            .upload_cost
            .is_bad(&task.typical_cost, cfg.bad_parent_factor);
        scored.push(s);
    }
    // Upload per child is compared within the decision: the candidate that would give each
    // child the most scores 1. A host without an upload limit counts as the fastest known.
    let fastest = scored.iter().filter_map(|s| s.capacity).fold(0.0, f64::max);
    let fastest = if fastest > 0.0 { fastest } else { 1.0 };
    let per_child = |s: &Scored| s.capacity.unwrap_or(fastest) / (s.children as f64 + 1.0);
    let best_per_child = scored
        .iter()
        .map(per_child)
        .fold(f64::MIN_POSITIVE, f64::max);
    let mut good: Vec<(f64, usize, u32)> = Vec::new();
    let mut bad: Vec<(f64, usize, u32)> = Vec::new();
    for s in &scored {
        let total = s.score + cfg.weights.load * SHARE_PART * per_child(s) / best_per_child;
        if s.bad {
            bad.push((total, s.place, s.slot));
        } else {
            good.push((total, s.place, s.slot));
        }
    }
    let rank = |v: &mut Vec<(f64, usize, u32)>| {
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    };
    rank(&mut good);
    rank(&mut bad);
    // The DAG check runs on ranked candidates only until K are found. Adding edges from
    // non-descendants to the child cannot close a cycle among themselves: any new cycle
    // would have to pass through the child and then up to a candidate, which makes that
    // candidate a descendant.
    good.into_iter()
        .chain(bad)
        .filter(|&(_, _, c)| !below.is_some_and(|d| d.contains(task, c)))
        .take(cfg.candidate_limit)
        .map(|(_, _, slot)| slot)
        .collect()
}

/// Part of the load feature given to upload per child (the rest is free slots and free
/// bandwidth): a 200 Mbit/s host with ten children serves each more than a 50 Mbit/s host
/// with five, and sending children where each gets most is what keeps the slowest peer of
/// a large swarm near the bound (docs/benchmarks-history.md).
const SHARE_PART: f64 = 0.5;

/// A candidate that passed the filter: its weighted score without the upload-per-child
/// part, which needs the other candidates to be scaled.
struct Scored {
    slot: u32,
    score: f64,
    /// The host's upload limit in bytes/s, if it has one.
    capacity: Option<f64>,
    children: usize,
    place: usize,
    bad: bool,
}

/// The weighted score of `p` as a parent of `child`, or `None` when it fails the filter.
#[allow(clippy::too_many_arguments)]
fn score(
    cfg: &EvaluatorConfig,
    task: &Task,
    hosts: &Slots<Host>,
    child: &Peer,
    child_host: &Host,
    p: &Peer,
    total: f64,
    pieces_coming: &std::cell::OnceCell<bool>,
) -> Option<Scored> {
    // Host slots are compared, not host ids: a candidate's host is known by slot or not
    // offered at all, and the child's host has one (the caller found it).
    if p.slot == child.slot || p.host == child.host || p.distrusted {
        return None;
    }
    if !child.blocklist.is_empty() && child.blocklist.contains(&p.id) {
        return None;
    }
    if p.tx.is_none() && p.state != PeerState::Succeeded {
        return None;
    }
    // The peer's own facts first: the host lookup is the costly step (a cache miss per
    // candidate in a large model), so it runs only for candidates that can help.
    let useful = p.finished.count_missing_from(&child.finished);
    // Before the origin reader publishes the task's facts, nothing another peer holds can
    // be checked, and a peer that joined early may be a liar the facts will expose: only
    // the reader is worth asking.
    let downloading = match p.state {
        PeerState::BackToSource => true,
        PeerState::Running => task.content_length.is_some(),
        _ => false,
    };
    if useful == 0
        && !(downloading
            && p.finished.len() < total as u32
            && *pieces_coming.get_or_init(|| task.every_piece_reachable()))
    {
        return None;
    }
    let host = hosts.at(p.host?)?;
    if host.info.upload_port == 0 || host.blocked_until.is_some() {
        return None;
    }
    let free = free_slots(host);
    if free == 0 {
        return None;
    }
    let w = &cfg.weights;
    let max = host.info.max_upload_connections.max(1) as f64;
    let bandwidth_free = match host.info.upload_rate_limit {
        0 => 1.0,
        limit => 1.0 - (host.load.upload_bytes_per_sec as f64 / limit as f64).min(1.0),
    };
    let rest = (1.0 - SHARE_PART) / 2.0;
    let load = rest * (free as f64 / max) + rest * bandwidth_free;
    let attempts = p.uploads_ok + p.uploads_failed;
    let success = if attempts == 0 {
        1.0
    } else {
        p.uploads_ok as f64 / attempts as f64
    };
    let pieces = (useful as f64 / total).min(1.0);
    let speed = p.upload_cost.speed_score(&task.typical_cost);
    let host_type = if host.info.seed { 0.0 } else { 1.0 };
    let same_idc = !host.info.idc.is_empty() && host.info.idc == child_host.info.idc;
    let idc = if same_idc { 1.0 } else { 0.0 };
    let location = location_affinity(&host.info.location, &child_host.info.location);
    let near = proximity(host.ip, child_host.ip);
    let score = w.load * load
        + w.pieces * pieces
        + w.success * success
        + w.speed * speed
        + w.host_type * host_type
        + w.idc * idc
        + w.location * location
        + w.proximity * near;
    Some(Scored {
        slot: p.slot,
        score,
        capacity: (host.info.upload_rate_limit > 0).then_some(host.info.upload_rate_limit as f64),
        children: host.children,
        place: 0,
        bad: false,
    })
}

#[cfg(test)]
#[path = "evaluator_rank_tests.rs"]
mod rank_tests;
#[cfg(test)]
#[path = "evaluator_tests.rs"]
mod unit_tests;
