//! The scheduler's decisions, free of gRPC: what happens to the model when a host opens or
//! closes its session, reports load, and when a peer registers, reports, or leaves.
//!
//! The gRPC service wraps this in a mutex; the throughput benchmark and the swarm simulation
//! drive it directly, so what they measure is exactly the code that serves daemons. Answers
//! go out through each peer's channel with `try_send` (never blocking under the lock).
//!
//! Seeds: a new task triggers the least-loaded seed host; if that seed fails or leaves before
//! finishing, another seed (one not yet tried for the task) is triggered, and only when none
//! is left are waiting peers sent to the origin.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Instant;

use pollen_proto::scheduler::{
    peer_event, scheduler_event, BackToSource, PieceDigest, PieceDigests, Register, TaskInfo,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::config::SchedulerConfig;
use crate::model::{Model, Peer, PeerState, PeerTx, Task};

mod hosts;
mod parents;

/// How long a host session must have been silent (no load report; daemons send one about
/// every second) before another address may open a session under its host id.
pub const TAKEOVER_QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// The model plus the rules that change it.
pub struct Core {
    /// Every host, task and peer the scheduler knows.
    pub model: Model,
    cfg: SchedulerConfig,
    rng: StdRng,
    /// Seed hosts already triggered per task (a replacement is picked among the others).
    seeds_tried: std::collections::HashMap<String, SeedsTried>,
    /// Registered peers per host id, for `max_peers_per_host`.
    host_peers: std::collections::HashMap<String, u32>,
    /// Signs upload grants for private tasks (see `pollen_core::grant`).
    grants: pollen_core::grant::GrantSigner,
    /// Early piece claims held over all tasks (see `Task::early_claims`).
    early_claims_total: usize,
    /// Bad-data reports per parent host id: which other hosts reported it, and when.
    bad_reports: std::collections::HashMap<String, Vec<(String, Instant)>>,
    /// Hosts blocked fleet-wide, until when (kept across their reconnects).
    blocked_hosts: std::collections::HashMap<String, Instant>,
    /// The join tokens a seed claim may show (see [`crate::join_gate`]).
    pub join: crate::join_gate::JoinGate,
    /// Host ids some connection proved with a certificate naming them: from then on only a
    /// connection whose certificate names the same id may speak for them.
    bound_hosts: HashSet<String>,
    /// What the scheduler counts (see [`crate::metrics`]).
    pub metrics: std::sync::Arc<crate::metrics::SchedulerMetrics>,
}

/// The seed hosts asked to fetch one task.
#[derive(Default)]
struct SeedsTried {
    hosts: HashSet<String>,
    /// Set to [`Model::seed_epoch`] when every seed host had been tried: until another seed
    /// host opens a session, asking again would only walk them all to find none.
    exhausted_at: Option<u64>,
}

/// Most parents read from one `NeedParents` list; a daemon holds far fewer, and the list
/// is walked once per candidate, so a longer one is cut rather than trusted.
const MAX_NAMED_PARENTS: usize = 256;

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Checks the lengths reported before the task's was published against it, now
/// `published`: a peer that reported another is distrusted (offered to nobody).
fn check_early_layouts(task: &mut Task, tid: &str, published: (u64, u64)) {
    for p in task.peers.values_mut() {
        if p.claimed_layout.take().is_some_and(|c| c != published) && !p.distrusted {
            warn!(task = %short(tid), peer = %p.id, "peer reported another length before the task's was published; it is distrusted");
            p.distrusted = true;
        }
    }
}

/// Checks the claims made to hold piece `n` before its digest was published against that
/// digest, now `digest`: a peer that claimed the same holds the piece from now on, one that
/// claimed another is distrusted (offered to nobody).
/// Returns how many claims it checked (and dropped).
fn check_early_claims(task: &mut Task, tid: &str, n: u32, digest: &[u8]) -> usize {
    let Some(claims) = task.early_claims.remove(&n) else {
        return 0;
    };
    let checked = claims.len();
    task.early_claim_count -= checked;
    for (pid, prefix) in claims {
        let Some(p) = task.peers.get_mut(&pid) else {
            continue;
        };
        if digest.get(..8) == Some(&prefix[..]) {
            p.finished.insert(n);
        } else if !p.distrusted {
            warn!(task = %short(tid), peer = %pid, piece = n, "peer claimed the piece with another digest before it was published; it is distrusted");
            p.distrusted = true;
        }
    }
    checked
}

/// Drops the early claims of pieces past the task's `count` (the published layout has no
/// such piece, so no digest will ever check them); returns how many.
fn drop_early_claims_past(task: &mut Task, count: u32) -> usize {
    let mut dropped = 0;
    task.early_claims.retain(|n, claims| {
        let keep = *n < count;
        if !keep {
            dropped += claims.len();
        }
        keep
    });
    task.early_claim_count -= dropped;
    dropped
}

/// A grant for the child whose host session comes from `child` to fetch task `tid` from its
/// parents, for `ttl`; `None` when the child's address or the id is unknown.
fn grant_for(
    signer: &pollen_core::grant::GrantSigner,
    tid: &str,
    child: Option<IpAddr>,
    ttl: std::time::Duration,
) -> Option<pollen_proto::scheduler::UploadGrant> {
    let task: pollen_core::TaskId = tid.parse().ok()?;
    let now = pollen_core::grant::unix_now();
    let g = signer.sign(&task, child?, now + ttl.as_secs());
    Some(pollen_proto::scheduler::UploadGrant {
        expires: g.expires,
        signature: g.signature.to_vec(),
    })
}

fn back_to_source(reason: &str) -> scheduler_event::Event {
    scheduler_event::Event::BackToSource(BackToSource {
        reason: reason.to_string(),
    })
}

impl Core {
    /// An empty model; `seed` fixes the random choices (the simulation needs repeatable runs).
    pub fn new(cfg: SchedulerConfig, seed: u64) -> Self {
        Self {
            model: Model::default(),
            cfg,
            rng: StdRng::seed_from_u64(seed),
            seeds_tried: Default::default(),
            host_peers: Default::default(),
            bad_reports: Default::default(),
            blocked_hosts: Default::default(),
            grants: pollen_core::grant::GrantSigner::generate(),
            early_claims_total: 0,
            join: Default::default(),
            bound_hosts: Default::default(),
            metrics: Default::default(),
        }
    }

    /// The metrics text, with the gauges read now.
    pub fn metrics_text(&self) -> String {
        let now = Instant::now();
        let blocked = self.blocked_hosts.values().filter(|u| **u > now).count();
        self.metrics
            .render(self.model.tasks.len(), self.model.hosts.len(), blocked)
    }

    /// Early piece claims held over all tasks, waiting for their digests (see
    /// `Task::early_claims`).
    pub fn early_claims_held(&self) -> usize {
        self.early_claims_total
    }

    /// The public key of the grants this scheduler signs.
    pub fn grant_key(&self) -> pollen_core::grant::GrantKey {
        self.grants.public_key()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Replaces the evaluator's tunables (dynamic config from the manager); decisions made
    /// from now on use them.
    pub fn set_evaluator(&mut self, e: crate::EvaluatorConfig) {
        self.cfg.evaluator = e;
    }

    /// A peer's first announce event. Returns (task id, peer id).
    pub fn register(&mut self, reg: Register, tx: PeerTx) -> Result<(String, String), Status> {
        let task_req = reg
            .task
            .ok_or_else(|| Status::invalid_argument("register without a task"))?;
        if task_req.task_id.is_empty() || reg.peer_id.is_empty() {
            return Err(Status::invalid_argument(
                "register needs a task id and a peer id",
            ));
        }
        if let Err(e) = crate::task_facts::check_task_id(&task_req) {
            warn!(host = %reg.host_id, peer = %reg.peer_id, error = %e, "register refused");
            return Err(Status::invalid_argument(e.to_string()));
        }
        if !self.model.hosts.contains_key(&reg.host_id) {
            // Daemons open their host session before any announce. Without one the peer is
            // never offered as a parent (its address is unknown) and gets no parents itself:
            // it waits for a seed or is sent to the origin.
            debug!(host = %reg.host_id, "register from a host without a session");
        }
        let (tid, pid) = (task_req.task_id.clone(), reg.peer_id.clone());
        // A private task's credentials stay with the peers that hold them: none is kept
        // here, relayed to a seed or logged, whatever the register carried.
        let mut task_req = task_req;
        if task_req.private {
            task_req
                .headers
                .retain(|h| !pollen_core::credentials::is_credential_header(&h.name));
        }
        let known = self
            .model
            .tasks
            .get(&tid)
            .is_some_and(|t| t.peers.slot_of(&pid).is_some());
        let held = self.host_peers.get(&reg.host_id).copied().unwrap_or(0);
        let cap = self.cfg.max_peers_per_host;
        if !known && cap > 0 && held >= cap {
            warn!(host = %reg.host_id, peers = held, "register refused: the host is at max_peers_per_host");
            return Err(Status::resource_exhausted(format!(
                "host {} already has {held} peers registered, the most this scheduler takes from one host (max_peers_per_host); fetch from the origin",
                reg.host_id
            )));
        }
        let now = Instant::now();
        let host_slot = self.model.hosts.slot_of(&reg.host_id);
        let is_seed = self
            .model
            .hosts
            .get(&reg.host_id)
            .is_some_and(|h| h.info.seed);
        let task = self
            .model
            .tasks
            .entry(tid.clone())
            .or_insert_with(|| Task::new(task_req, now));
        task.last_active = now;
        let (len, piece_length) = (task.content_length, task.piece_length);
        let digests: Vec<PieceDigest> = task
            .digests
            .iter()
            .map(|(n, d)| PieceDigest {
                number: *n,
                digest: d.clone(),
            })
            .collect();
        let peer = task.add_peer(
            Peer::new(pid.clone(), reg.host_id.clone(), host_slot),
            is_seed,
        );
        peer.tx = Some(tx);
        if !known {
            *self.host_peers.entry(reg.host_id.clone()).or_insert(0) += 1;
        }
        if let Some(len) = len {
            peer.send(scheduler_event::Event::TaskInfo(TaskInfo {
                content_length: len,
                piece_length,
            }));
            peer.send(scheduler_event::Event::PieceDigests(PieceDigests {
                pieces: digests,
            }));
        }
        info!(task = %short(&tid), peer = %pid, seed = is_seed, "peer registered");
        if is_seed {
            // A seed host's peer reads the origin (or holds the whole task): its facts count.
            self.send_to_origin(&tid, &pid, "seed peers read new tasks from the origin");
        } else {
            self.schedule(&tid, &pid);
        }
        Ok((tid, pid))
    }

    /// Any later announce event of a peer.
    pub fn event(&mut self, tid: &str, pid: &str, ev: peer_event::Event) {
        let now = Instant::now();
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        task.last_active = now;
        match ev {
            peer_event::Event::Register(_) => debug!(peer = pid, "duplicate register ignored"),
            peer_event::Event::ContentInfo(info) => {
                let caps = self.cfg.caps();
                let Some(reporter) = task.peers.get_mut(pid) else {
                    return;
                };
                let reported = (info.content_length, info.piece_length);
                if !reporter.reads_origin {
                    // Counts for nothing; a length that contradicts the task's, now or once
                    // it is published, marks the reporter.
                    match task.content_length {
                        None => reporter.claimed_layout = Some(reported),
                        Some(len) if (len, task.piece_length) != reported => {
                            warn!(task = %short(tid), peer = pid, "peer not reading the origin reports another length than the one published; it is distrusted");
                            reporter.distrusted = true;
                        }
                        Some(_) => {}
                    }
                    return;
                }
                match task.content_length {
                    None => match crate::task_facts::check_layout(&info, caps) {
                        Ok(layout) => {
                            task.content_length = Some(info.content_length);
                            task.piece_length = info.piece_length;
                            check_early_layouts(task, tid, reported);
                            self.early_claims_total -=
                                drop_early_claims_past(task, layout.piece_count());
                            let ev = scheduler_event::Event::TaskInfo(TaskInfo {
                                content_length: info.content_length,
                                piece_length: info.piece_length,
                            });
                            for p in task.peers.values().filter(|p| p.id != pid) {
                                p.send(ev.clone());
                            }
                        }
                        Err(e) => {
                            warn!(task = %short(tid), peer = pid, error = %e, "task length refused; the reporter is distrusted");
                            reporter.distrusted = true;
                        }
                    },
                    Some(len)
                        if len != info.content_length || task.piece_length != info.piece_length =>
                    {
                        warn!(task = %short(tid), peer = pid, "peer reports another length than the one published; it is distrusted");
                        reporter.distrusted = true;
                    }
                    Some(_) => {}
                }
            }
            peer_event::Event::PiecesFinished(done) => {
                let count = task.piece_count().unwrap_or(crate::piece_set::MAX_PIECES);
                let trusted = task.peers.get(pid).is_some_and(|p| p.reads_origin);
                let mut fresh = Vec::new();
                for piece in &done.pieces {
                    if piece.digest.len() != 32 || piece.number >= count {
                        continue;
                    }
                    match task.digests.get(&piece.number) {
                        None if trusted => {
                            task.digests.insert(piece.number, piece.digest.clone());
                            fresh.push(PieceDigest {
                                number: piece.number,
                                digest: piece.digest.clone(),
                            });
                            self.early_claims_total -=
                                check_early_claims(task, tid, piece.number, &piece.digest);
                        }
                        // Only a peer reading the origin publishes a digest. Another's claim
                        // to hold the piece counts once it is checked against that digest,
                        // when it is published.
                        None => {
                            if task.early_claim_count < crate::model::MAX_EARLY_CLAIMS
                                && self.early_claims_total < crate::model::MAX_EARLY_CLAIMS_TOTAL
                            {
                                let mut prefix = [0u8; 8];
                                prefix.copy_from_slice(&piece.digest[..8]);
                                task.early_claims
                                    .entry(piece.number)
                                    .or_default()
                                    .push((pid.to_string(), prefix));
                                task.early_claim_count += 1;
                                self.early_claims_total += 1;
                            }
                            continue;
                        }
                        Some(d) if *d != piece.digest => {
                            warn!(task = %short(tid), peer = pid, piece = piece.number, "conflicting piece digest ignored; the reporter is distrusted");
                            if let Some(p) = task.peers.get_mut(pid) {
                                p.distrusted = true;
                            }
                            continue;
                        }
                        Some(_) => {}
                    }
                    if !piece.parent_peer_id.is_empty() {
                        if let Some(parent) = task.peers.get_mut(&piece.parent_peer_id) {
                            parent.uploads_ok += 1;
                            if piece.cost_ms > 0 {
                                parent.upload_cost.record(piece.cost_ms);
                                task.typical_cost.record(piece.cost_ms);
                            }
                        }
                    }
                    if let Some(p) = task.peers.get_mut(pid) {
                        p.finished.insert(piece.number);
                    }
                }
                if !fresh.is_empty() {
                    let ev = scheduler_event::Event::PieceDigests(PieceDigests { pieces: fresh });
                    for p in task.peers.values().filter(|p| p.id != pid) {
                        p.send(ev.clone());
                    }
                }
                for w in task.waiting() {
                    self.schedule(tid, &w);
                }
            }
            peer_event::Event::ParentFailed(f) => {
                let mut accused = None;
                if let Some(parent) = task.peers.get_mut(&f.parent_peer_id) {
                    parent.uploads_failed += 1;
                    if f.bad_data {
                        accused = Some(parent.host_id.clone());
                    }
                }
                let reporter = task.peers.get(pid).map(|p| p.host_id.clone());
                if let Some(p) = task.peers.get_mut(pid) {
                    info!(task = %short(tid), peer = pid, parent = %f.parent_peer_id, reason = %f.reason, "parent failed; blocklisted");
                    if p.blocklist.len() < 4096 {
                        p.blocklist.insert(f.parent_peer_id);
                    }
                }
                if let (Some(accused), Some(reporter)) = (accused, reporter) {
                    self.report_bad_data(&accused, &reporter, now);
                }
                self.schedule(tid, pid);
            }
            peer_event::Event::NeedParents(n) => self.schedule_more(tid, pid, &n.parents),
            peer_event::Event::Finished(_) => {
                if let Some(p) = task.peers.get_mut(pid) {
                    p.state = PeerState::Succeeded;
                }
                task.set_waiting(pid, false);
                self.set_parents(tid, pid, Vec::new());
                self.seeds_tried.remove(tid);
            }
            peer_event::Event::Failed(f) => {
                info!(task = %short(tid), peer = pid, reason = %f.reason, "peer failed");
                self.remove_peer(tid, pid, &f.reason);
            }
        }
    }

    /// A peer's announce stream ended. A finished peer stays (as a parent) while its host
    /// session lives; any other is forgotten.
    pub fn disconnect(&mut self, tid: &str, pid: &str) {
        let Some(peer) = self
            .model
            .tasks
            .get_mut(tid)
            .and_then(|t| t.peers.get_mut(pid))
        else {
            return;
        };
        if peer.state == PeerState::Succeeded {
            peer.tx = None;
            return;
        }
        self.remove_peer(tid, pid, "its announce stream ended");
    }

    /// Forgets tasks nobody has touched for `task_ttl` whose peers are all gone or idle.
    pub fn collect_garbage(&mut self, now: Instant) -> usize {
        self.expire_blocks(now);
        let ttl = self.cfg.task_ttl;
        let before = self.model.tasks.len();
        self.model.tasks.retain(|_, t| {
            let live = t.peers.values().any(|p| p.tx.is_some());
            live || now.saturating_duration_since(t.last_active) < ttl
        });
        let gone = before - self.model.tasks.len();
        if gone > 0 {
            let tasks = &self.model.tasks;
            self.seeds_tried.retain(|tid, _| tasks.contains_key(tid));
            self.recount_children();
            self.recount_host_peers();
            info!(tasks = gone, "quiet tasks forgotten");
        }
        gone
    }

    /// Removes a peer; its children are re-planned, and if it was reading the origin the
    /// waiting peers get another seed or go to the origin themselves.
    fn remove_peer(&mut self, tid: &str, pid: &str, reason: &str) {
        self.set_parents(tid, pid, Vec::new());
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        let Some((gone, orphans)) = task.remove_peer(pid) else {
            return;
        };
        if let Some(n) = self.host_peers.get_mut(&gone.host_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.host_peers.remove(&gone.host_id);
            }
        }
        if task.peers.is_empty() {
            self.early_claims_total -= task.early_claim_count;
            self.model.tasks.remove(tid);
            self.seeds_tried.remove(tid);
            return;
        }
        // A source left: the peer reading the origin, or one holding the whole task (a seed
        // that finished and then died). If no other source is left, a new one is needed now.
        let was_source = matches!(gone.state, PeerState::BackToSource | PeerState::Succeeded);
        let source_lost = was_source && !task.every_piece_reachable();
        if source_lost {
            task.seed_triggered = None;
            debug!(task = %short(tid), peer = pid, reason, "the task's last source left");
        }
        let lost_edges = orphans.len();
        let mut replan = task.waiting();
        for o in orphans {
            if !replan.contains(&o) {
                replan.push(o);
            }
        }
        if let Some(host) = gone.host.and_then(|h| self.model.hosts.at_mut(h)) {
            host.children = host.children.saturating_sub(lost_edges);
        }
        if source_lost {
            self.ensure_source(tid);
        }
        for w in replan {
            self.schedule(tid, &w);
        }
    }
}
