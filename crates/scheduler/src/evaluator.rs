//! Parent selection: which peers a downloading peer should fetch from.
//!
//! Filter, then rank. A candidate must hold at least one piece the child lacks, live on
//! another live host, and not be blocklisted by the child. Ranking weighs how much the
//! candidate can give, how loaded its host is, and how reliably it has uploaded; seed peers
//! rank below ordinary peers that can serve the same pieces, so the seed's upload is kept for
//! pieces nobody else has yet.
//!
//! Unlike Dragonfly, two peers may be each other's parents: a piece only ever moves from a
//! peer that holds it (verified) to one that lacks it, so a "cycle" of parents is two peers
//! trading different pieces, which is exactly what a swarm needs. Forcing a DAG turned the
//! parent graph into a chain in which the last peer could only use the seed.

use std::collections::HashMap;

use crate::model::{Host, Task};

/// Tunables of the evaluator.
#[derive(Clone, Debug)]
pub struct EvaluatorConfig {
    /// Most parents returned to one peer.
    pub max_parents: usize,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        Self { max_parents: 6 }
    }
}

/// Ranked parent peer ids for `child` in `task`, best first.
pub(crate) fn select_parents(
    cfg: &EvaluatorConfig,
    task: &Task,
    hosts: &HashMap<String, Host>,
    child_id: &str,
) -> Vec<String> {
    let Some(child) = task.peers.get(child_id) else {
        return Vec::new();
    };
    let total = task
        .content_length
        .filter(|_| task.piece_length > 0)
        .map(|l| l.div_ceil(task.piece_length).max(1) as f64)
        .unwrap_or(1.0);
    let mut scored: Vec<(f64, String)> = task
        .peers
        .values()
        .filter(|p| p.id != child_id && p.host_id != child.host_id)
        .filter(|p| !child.blocklist.contains(&p.id))
        .filter_map(|p| {
            let host = hosts.get(&p.host_id)?;
            if host.info.upload_port == 0 {
                return None;
            }
            let useful = p
                .finished
                .iter()
                .filter(|n| !child.finished.contains(n))
                .count();
            if useful == 0 {
                return None;
            }
            let slots = host.info.max_upload_connections.max(1) as f64;
            let load = 1.0 - (host.children as f64 / slots).min(1.0);
            let attempts = p.uploads_ok + p.uploads_failed;
            let reliability = if attempts == 0 {
                1.0
            } else {
                p.uploads_ok as f64 / attempts as f64
            };
            let progress = p.finished.len() as f64 / total;
            let host_type = if host.info.seed { 0.0 } else { 1.0 };
            let score = 0.3 * progress.min(1.0) + 0.3 * load + 0.2 * reliability + 0.2 * host_type;
            Some((score, p.id.clone()))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored
        .into_iter()
        .take(cfg.max_parents)
        .map(|(_, id)| id)
        .collect()
}
