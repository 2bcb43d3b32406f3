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
    host_command, peer_event, scheduler_event, BackToSource, HostCommand, HostInfo, HostLoad,
    Parent, Parents, PieceDigest, PieceDigests, Register, TaskInfo,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::config::SchedulerConfig;
use crate::dag::Descendants;
use crate::evaluator::{free_slots, kept_parents, select_parents};
use crate::model::{Host, HostTx, Load, Model, Peer, PeerState, PeerTx, Task};

/// How long a host session must have been silent (no load report; daemons send one about
/// every second) before another address may open a session under its host id.
pub const TAKEOVER_QUIET: std::time::Duration = std::time::Duration::from_secs(10);

/// The model plus the rules that change it.
pub struct Core {
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

    /// Records an open host session; returns its session number.
    pub fn open_host(&mut self, info: HostInfo, ip: IpAddr, commands: HostTx) -> u64 {
        self.model.next_session += 1;
        let session = self.model.next_session;
        info!(host = %info.host_id, %ip, port = info.upload_port, seed = info.seed, "host session opened");
        if info.seed {
            self.model.seed_hosts.insert(info.host_id.clone());
            self.model.seed_epoch += 1;
        } else {
            self.model.seed_hosts.remove(&info.host_id);
        }
        let known = self.model.hosts.contains_key(&info.host_id);
        let host_id = info.host_id.clone();
        let slot = self.model.hosts.insert(
            &host_id,
            Host {
                info,
                ip,
                session,
                commands,
                children: 0,
                load: Load::default(),
                session_from: None,
                blocked_until: self.blocked_hosts.get(&host_id).copied(),
                last_heard: Instant::now(),
            },
        );
        if !known {
            // Peers that registered before their host's session get its slot now.
            for task in self.model.tasks.values_mut() {
                for p in task.peers.values_mut() {
                    if p.host.is_none() && p.host_id == host_id {
                        p.host = Some(slot);
                    }
                }
            }
        }
        session
    }

    /// Forgets a host whose session `session` ended, with all its peers.
    pub fn close_host(&mut self, host_id: &str, session: u64) {
        if self.model.hosts.get(host_id).map(|h| h.session) != Some(session) {
            return;
        }
        self.model.hosts.remove(host_id);
        self.model.seed_hosts.remove(host_id);
        let mut doomed: Vec<(String, String)> = self
            .model
            .tasks
            .iter()
            .flat_map(|(tid, t)| {
                t.order
                    .iter()
                    .filter_map(|&slot| t.peers.at(slot))
                    .filter(|p| p.host_id == host_id)
                    .map(|p| (tid.clone(), p.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        doomed.sort();
        info!(
            host = host_id,
            peers = doomed.len(),
            "host session ended; forgetting its peers"
        );
        for (tid, pid) in doomed {
            self.remove_peer(&tid, &pid, "its host left");
        }
        // A seed triggered for a task but gone before its peer registered leaves the task's
        // peers waiting for nothing: find them another source now, not after seed_patience.
        let orphaned: Vec<String> = self
            .seeds_tried
            .iter()
            .filter(|(_, tried)| tried.hosts.contains(host_id))
            .map(|(tid, _)| tid.clone())
            .filter(|tid| {
                self.model.tasks.get(tid).is_some_and(|t| {
                    t.seed_triggered.is_some() && !t.peers.values().any(|p| p.host_id == host_id)
                })
            })
            .collect();
        for tid in orphaned {
            if let Some(t) = self.model.tasks.get_mut(&tid) {
                t.seed_triggered = None;
            }
            self.ensure_source(&tid);
            let waiting = self
                .model
                .tasks
                .get(&tid)
                .map(|t| t.waiting())
                .unwrap_or_default();
            for w in waiting {
                self.schedule(&tid, &w);
            }
        }
    }

    /// Refuses a host session for `host_id` from `from` while that id has a live session
    /// from another address (one heard from within [`TAKEOVER_QUIET`] of `now`): without
    /// per-host certificates a host id is only a name, and a host that named another's id
    /// would take over its scheduling entry. A daemon reconnecting from its own address, or
    /// one whose old session went quiet (it moved, or died without closing), is let in.
    pub fn check_takeover(
        &self,
        host_id: &str,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Status> {
        let Some(h) = self.model.hosts.get(host_id) else {
            return Ok(());
        };
        match (h.session_from, from) {
            (Some(held), Some(from))
                if held != from && now.saturating_duration_since(h.last_heard) < TAKEOVER_QUIET =>
            {
                Err(Status::permission_denied(format!(
                    "host id {host_id} has a live session from another address ({held}); a host session from {from} may not take it over"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records a host's load report from `from`; `NotFound` when the host has no open session,
    /// `PermissionDenied` when the report does not come from its session's address.
    pub fn report_load(&mut self, load: &HostLoad, from: Option<IpAddr>) -> Result<(), Status> {
        let Some(host) = self.model.hosts.get_mut(&load.host_id) else {
            return Err(Status::not_found("no open host session for this host"));
        };
        if let (Some(held), Some(from)) = (host.session_from, from) {
            if held != from {
                return Err(Status::permission_denied(
                    "a load report must come from its host session's address",
                ));
            }
        }
        host.load = Load {
            upload_connections: load.upload_connections,
            upload_bytes_per_sec: load.upload_bytes_per_sec,
        };
        host.last_heard = Instant::now();
        Ok(())
    }

    /// Refuses a request that speaks for host `claimed` (`what` says how) when the
    /// connection's certificate names another host (`proven`), when the host id was proven by
    /// a certificate before and this connection does not prove it, and (with
    /// `require_host_certificates`, under TLS: `tls`) when the certificate names no host.
    /// A proven id is remembered.
    pub fn check_host_binding(
        &mut self,
        claimed: &str,
        proven: Option<&str>,
        tls: bool,
        what: &str,
    ) -> Result<(), Status> {
        pollen_tls::incoming::check_host(proven, claimed, what)?;
        if proven == Some(claimed) {
            if !self.bound_hosts.contains(claimed) {
                self.bound_hosts.insert(claimed.to_string());
            }
            return Ok(());
        }
        if self.bound_hosts.contains(claimed) {
            return Err(Status::permission_denied(format!(
                "{what} names host {claimed}, which proved its id with a certificate; this connection's certificate does not name it"
            )));
        }
        if tls && self.cfg.require_host_certificates {
            return Err(Status::permission_denied(format!(
                "{what} names host {claimed}, and this scheduler needs a certificate naming its host ({}{claimed}; pollen certs issue --host-id)",
                pollen_tls::HOST_URI_PREFIX
            )));
        }
        Ok(())
    }

    /// Records where host `host_id`'s session `session` came from.
    pub fn set_session_origin(&mut self, host_id: &str, session: u64, from: IpAddr) {
        if let Some(h) = self
            .model
            .hosts
            .get_mut(host_id)
            .filter(|h| h.session == session)
        {
            h.session_from = Some(from);
        }
    }

    /// Refuses a register that names a host it cannot be: one whose session came from another
    /// address, or a seed host when the announcing connection proves neither the seed role
    /// (`proven`, under mutual TLS) nor holds a join token for it (`token`). A seed's peer is
    /// trusted for a task's facts, so without this any host could speak for a seed by naming
    /// its host id.
    pub fn check_register_origin(
        &self,
        host_id: &str,
        from: Option<IpAddr>,
        proven: Option<&pollen_tls::ProvenRoles>,
        token: Option<&str>,
    ) -> Result<(), Status> {
        let Some(host) = self.model.hosts.get(host_id) else {
            return Ok(());
        };
        if let (Some(session), Some(from)) = (host.session_from, from) {
            if session != from {
                self.metrics
                    .refused(crate::metrics::Refusal::RegisterOrigin);
                warn!(host = host_id, %session, %from, "register naming another address's host refused");
                return Err(Status::permission_denied(format!(
                    "this register names host {host_id}, whose host session came from another address"
                )));
            }
        }
        if host.info.seed {
            self.check_seed_claim(proven, token, "announcing as a seed host's peer")
                .inspect_err(|_| self.metrics.refused(crate::metrics::Refusal::SeedClaim))?;
        }
        Ok(())
    }

    /// Judges a claim to be a seed (see [`crate::join_gate`]); `token` is the hash of the
    /// join token shown, if any.
    pub fn check_seed_claim(
        &self,
        proven: Option<&pollen_tls::ProvenRoles>,
        token: Option<&str>,
        claim: &str,
    ) -> Result<(), Status> {
        pollen_tls::incoming::check_claim(
            proven,
            self.join.shown(token),
            pollen_tls::Role::Seed,
            claim,
            self.cfg.open_join,
        )
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

    /// Counts a bad-data report against `accused` by `reporter` (another host); at
    /// `host_block_reporters` distinct reporters within `host_block_duration`, `accused` is
    /// blocked fleet-wide for that long.
    fn report_bad_data(&mut self, accused: &str, reporter: &str, now: Instant) {
        let (need, keep) = (self.cfg.host_block_reporters, self.cfg.host_block_duration);
        if need == 0 || accused == reporter || self.blocked_hosts.contains_key(accused) {
            return;
        }
        let reports = self.bad_reports.entry(accused.to_string()).or_default();
        reports.retain(|(r, at)| r != reporter && now.saturating_duration_since(*at) < keep);
        reports.push((reporter.to_string(), now));
        if reports.len() < need as usize || reports.len() > 4096 {
            return;
        }
        let by: Vec<String> = reports.iter().map(|(r, _)| r.clone()).collect();
        self.bad_reports.remove(accused);
        let until = now + keep;
        self.blocked_hosts.insert(accused.to_string(), until);
        self.metrics.hosts_blocked.inc();
        if let Some(h) = self.model.hosts.get_mut(accused) {
            h.blocked_until = Some(until);
        }
        warn!(host = accused, reporters = ?by, for_ = ?keep, "host blocked fleet-wide: bad data reported by other hosts");
    }

    /// Whether `host_id` is blocked fleet-wide for bad data.
    pub fn host_blocked(&self, host_id: &str) -> bool {
        self.blocked_hosts.contains_key(host_id)
    }

    /// Lifts blocks and forgets reports that ran out.
    fn expire_blocks(&mut self, now: Instant) {
        let keep = self.cfg.host_block_duration;
        let ended: Vec<String> = self
            .blocked_hosts
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for h in ended {
            self.blocked_hosts.remove(&h);
            if let Some(host) = self.model.hosts.get_mut(&h) {
                host.blocked_until = None;
            }
            info!(host = %h, "host block lifted");
        }
        self.bad_reports.retain(|_, reports| {
            reports.retain(|(_, at)| now.saturating_duration_since(*at) < keep);
            !reports.is_empty()
        });
    }

    /// Rebuilds the registered peers per host from the tasks (after tasks were dropped
    /// whole).
    fn recount_host_peers(&mut self) {
        self.host_peers.clear();
        for t in self.model.tasks.values() {
            for p in t.peers.values() {
                *self.host_peers.entry(p.host_id.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Registered peers of `host_id`.
    pub fn peers_of_host(&self, host_id: &str) -> u32 {
        self.host_peers.get(host_id).copied().unwrap_or(0)
    }

    /// Rebuilds every host's child count from the parent edges.
    fn recount_children(&mut self) {
        for h in self.model.hosts.values_mut() {
            h.children = 0;
        }
        for t in self.model.tasks.values() {
            for p in t.peers.values() {
                for &parent in &p.parents {
                    if let Some(host) = t
                        .peers
                        .at(parent)
                        .and_then(|pp| pp.host)
                        .and_then(|h| self.model.hosts.at_mut(h))
                    {
                        host.children += 1;
                    }
                }
            }
        }
    }

    /// The parents last offered to a peer.
    pub fn parents_of(&self, tid: &str, pid: &str) -> Vec<String> {
        self.model
            .tasks
            .get(tid)
            .and_then(|t| Some(t.parent_ids(t.peers.get(pid)?)))
            .unwrap_or_default()
    }

    /// Replaces a peer's parents, keeping each host's child count right.
    fn set_parents(&mut self, tid: &str, pid: &str, parents: Vec<u32>) {
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        let Some(slot) = task.peers.slot_of(pid) else {
            return;
        };
        let old = task.set_parents(slot, parents.clone());
        let host_of = |&slot: &u32| task.peers.at(slot).and_then(|p| p.host);
        for h in old.iter().filter_map(host_of) {
            if let Some(host) = self.model.hosts.at_mut(h) {
                host.children = host.children.saturating_sub(1);
            }
        }
        for h in parents.iter().filter_map(host_of) {
            if let Some(host) = self.model.hosts.at_mut(h) {
                host.children += 1;
            }
        }
    }

    /// Finds parents for a peer, or decides it waits or goes back to the origin.
    pub fn schedule(&mut self, tid: &str, pid: &str) {
        self.schedule_more(tid, pid, &[]);
    }

    /// Finds parents for a peer other than those it already `has` (peer ids). With none to
    /// add, a peer that has parents keeps them; one that has none waits or goes back to the
    /// origin.
    fn schedule_more(&mut self, tid: &str, pid: &str, has: &[String]) {
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let Some(peer) = task.peers.get(pid) else {
            return;
        };
        if peer.state != PeerState::Running {
            return;
        }
        let has: Vec<u32> = has
            .iter()
            .take(MAX_NAMED_PARENTS)
            .filter_map(|id| task.peers.slot_of(id))
            .collect();
        // With the DAG rule on, the child's descendants, gathered once for both uses below.
        let below = self
            .cfg
            .evaluator
            .dag
            .then(|| Descendants::of(task, peer.slot));
        // Parents are no use before the task's length and digests are known, and only a
        // peer chosen to read the origin can publish them: while the scheduler has chosen
        // none (peers announcing a task they hold, after a restart), this peer needs a source.
        let parents = if task.content_length.is_none() && !task.origin_reader {
            Vec::new()
        } else {
            select_parents(
                &self.cfg.evaluator,
                task,
                &self.model.hosts,
                pid,
                &has,
                below.as_ref(),
                &mut self.rng,
            )
        };
        // The peer keeps the parents it has, so they are its edges too (they count on their
        // hosts' child totals). With the DAG rule on, one that is now a descendant is left
        // out of the record, which keeps the recorded graph, on which the rule walks, acyclic.
        let kept = kept_parents(task, peer.slot, &has, below.as_ref());
        if parents.is_empty() && !has.is_empty() {
            self.set_parents(tid, pid, kept);
            return;
        }
        if !parents.is_empty() {
            let list: Vec<Parent> = parents
                .iter()
                .filter_map(|&slot| {
                    let p = task.peers.at(slot)?;
                    let h = self.model.hosts.at(p.host?)?;
                    Some(Parent {
                        peer_id: p.id.clone(),
                        ip: h.ip.to_string(),
                        port: h.info.upload_port,
                        seed: h.info.seed,
                    })
                })
                .collect();
            debug!(task = %short(tid), peer = pid, finished = peer.finished.len(), parents = ?list.iter().map(|p: &Parent| p.peer_id.as_str()).collect::<Vec<_>>(), "parents offered");
            let grant = if task.request.private {
                let child = peer
                    .host
                    .and_then(|slot| self.model.hosts.at(slot))
                    .map(|h| h.session_from.unwrap_or(h.ip));
                let g = grant_for(&self.grants, tid, child, self.cfg.upload_grant_ttl);
                if g.is_some() {
                    self.metrics.grants.inc();
                }
                g
            } else {
                None
            };
            peer.send(scheduler_event::Event::Parents(Parents {
                parents: list,
                grant,
            }));
            let mut edges = kept;
            edges.extend(parents);
            self.set_parents(tid, pid, edges);
            self.set_waiting(tid, pid, false);
            return;
        }
        // No parent now: drop stale edges so the host counts stay right.
        self.set_parents(tid, pid, Vec::new());
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let seed_pending = task
            .seed_triggered
            .is_some_and(|t| t.elapsed() < self.cfg.seed_patience);
        if task.someone_fetching_origin() || seed_pending || self.trigger_seed(tid, pid) {
            self.set_waiting(tid, pid, true);
            return;
        }
        self.set_waiting(tid, pid, false);
        info!(task = %short(tid), peer = pid, "no parent and no seed peer: back to source");
        self.send_to_origin(
            tid,
            pid,
            "no peer holds the task and no seed peer is available",
        );
    }

    /// Sends a peer to the origin: from now on its reports of the task's facts count.
    fn send_to_origin(&mut self, tid: &str, pid: &str, reason: &str) {
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        let Some(p) = task.peers.get_mut(pid) else {
            return;
        };
        p.state = PeerState::BackToSource;
        p.reads_origin = true;
        self.metrics.back_to_source.inc();
        p.send(back_to_source(reason));
        task.origin_reader = true;
    }

    fn set_waiting(&mut self, tid: &str, pid: &str, waiting: bool) {
        if let Some(t) = self.model.tasks.get_mut(tid) {
            t.set_waiting(pid, waiting);
        }
    }

    /// Asks the least-loaded seed host not yet tried for this task (and not the asking peer's
    /// own host) to fetch it. False when there is none.
    fn trigger_seed(&mut self, tid: &str, pid: &str) -> bool {
        let Some(task) = self.model.tasks.get(tid) else {
            return false;
        };
        let peer_host = task.peers.get(pid).map(|p| p.host_id.as_str());
        if !self.seeds_tried.contains_key(tid) {
            self.seeds_tried
                .insert(tid.to_string(), SeedsTried::default());
        }
        let Some(tried) = self.seeds_tried.get_mut(tid) else {
            return false;
        };
        let epoch = self.model.seed_epoch;
        if tried.exhausted_at == Some(epoch) {
            return false;
        }
        let mut own_host_skipped = false;
        let mut seeds: Vec<&Host> = self
            .model
            .seed_hosts
            .iter()
            .filter(|id| {
                let own = Some(id.as_str()) == peer_host;
                own_host_skipped |= own;
                !own && !tried.hosts.contains(*id)
            })
            .filter_map(|id| self.model.hosts.get(id))
            .collect();
        // Most free upload slots first, then fewest children, then id (repeatable).
        seeds.sort_by(|a, b| {
            free_slots(b)
                .cmp(&free_slots(a))
                .then(a.children.cmp(&b.children))
                .then(a.info.host_id.cmp(&b.info.host_id))
        });
        for seed in seeds {
            let cmd = HostCommand {
                command: Some(host_command::Command::Download(task.request.clone())),
            };
            tried.hosts.insert(seed.info.host_id.clone());
            if seed.commands.try_send(Ok(cmd)).is_ok() {
                info!(task = %short(tid), seed = %seed.info.host_id, "seed peer triggered");
                if let Some(t) = self.model.tasks.get_mut(tid) {
                    t.seed_triggered = Some(Instant::now());
                }
                return true;
            }
        }
        // Another asker may still use the seed on this one's host.
        if !own_host_skipped {
            tried.exhausted_at = Some(epoch);
        }
        false
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

    /// When nobody holds the whole task and nobody reads the origin (the seed, or the peer
    /// reading the origin, just left), some pieces exist nowhere. Another seed is triggered,
    /// or else the running peer holding the most pieces is sent to the origin for the rest,
    /// so one peer fetches what is missing while the others keep trading, instead of each
    /// finding out on its own and every one of them going to the origin.
    fn ensure_source(&mut self, tid: &str) {
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let seed_pending = task
            .seed_triggered
            .is_some_and(|t| t.elapsed() < self.cfg.seed_patience);
        if seed_pending || task.every_piece_reachable() {
            return;
        }
        let best = task
            .peers
            .values()
            .filter(|p| p.state == PeerState::Running && p.tx.is_some())
            .max_by(|a, b| {
                a.finished
                    .len()
                    .cmp(&b.finished.len())
                    .then_with(|| b.id.cmp(&a.id))
            })
            .map(|p| p.id.clone());
        let Some(best) = best else {
            return;
        };
        if self.trigger_seed(tid, &best) {
            return;
        }
        info!(task = %short(tid), peer = %best, "the task's source left and no seed peer is available: this peer reads the rest from the origin");
        self.send_to_origin(
            tid,
            &best,
            "the peer reading the origin left and no seed peer is available",
        );
    }
}
