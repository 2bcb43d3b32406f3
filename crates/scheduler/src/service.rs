//! The scheduler's gRPC service: host sessions and per-task announce streams.
//!
//! Who sends what: a daemon opens `HostSession` once and `AnnouncePeer` per task. On
//! `Register` the scheduler replies with what it knows of the task and either parents, silence
//! (a seed or another peer is reading the origin and parents will follow), or `BackToSource`.
//! Piece reports publish digests to every peer of the task and wake peers waiting for parents.
//! A peer whose stream ends keeps serving (as a parent) only if it finished the task; a host
//! whose session ends takes all its peers with it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_proto::scheduler::scheduler_server::{Scheduler, SchedulerServer};
use pollen_proto::scheduler::{
    host_command, peer_event, scheduler_event, BackToSource, HostCommand, HostInfo, Parent,
    Parents, PeerEvent, PieceDigest, PieceDigests, Register, SchedulerEvent, TaskInfo,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::evaluator::{select_parents, EvaluatorConfig};
use crate::model::{Host, Model, Peer, PeerState, PeerTx, Task};

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Parent selection tunables.
    pub evaluator: EvaluatorConfig,
    /// How long peers wait for a triggered seed before another seed trigger is tried.
    pub seed_patience: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            evaluator: EvaluatorConfig::default(),
            seed_patience: Duration::from_secs(30),
        }
    }
}

/// The scheduler service; cheap to clone.
#[derive(Clone)]
pub struct SchedulerService {
    model: Arc<Mutex<Model>>,
    cfg: Arc<SchedulerConfig>,
}

impl SchedulerService {
    /// A scheduler with an empty model.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            model: Arc::new(Mutex::new(Model::default())),
            cfg: Arc::new(cfg),
        }
    }

    /// Serves gRPC on `listener` until `shutdown` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(SchedulerServer::new(self))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_host(&self, host_id: &str, session: u64) {
        let mut m = self.lock();
        if m.hosts.get(host_id).map(|h| h.session) != Some(session) {
            return;
        }
        m.hosts.remove(host_id);
        let doomed: Vec<(String, String)> = m
            .tasks
            .iter()
            .flat_map(|(tid, t)| {
                t.peers
                    .values()
                    .filter(|p| p.host_id == host_id)
                    .map(|p| (tid.clone(), p.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        info!(
            host = host_id,
            peers = doomed.len(),
            "host session ended; forgetting its peers"
        );
        for (tid, pid) in doomed {
            remove_peer(&mut m, &self.cfg, &tid, &pid);
        }
    }

    fn on_register(&self, reg: Register, tx: PeerTx) -> Result<(String, String), Status> {
        let task_req = reg
            .task
            .ok_or_else(|| Status::invalid_argument("register without a task"))?;
        if task_req.task_id.is_empty() || reg.peer_id.is_empty() {
            return Err(Status::invalid_argument(
                "register needs a task id and a peer id",
            ));
        }
        let (tid, pid) = (task_req.task_id.clone(), reg.peer_id.clone());
        let mut guard = self.lock();
        let m = &mut *guard;
        let is_seed = m
            .hosts
            .get(&reg.host_id)
            .map(|h| h.info.seed)
            .unwrap_or(false);
        let task = m
            .tasks
            .entry(tid.clone())
            .or_insert_with(|| Task::new(task_req));
        let peer = task.peers.entry(pid.clone()).or_insert_with(|| Peer {
            id: pid.clone(),
            host_id: reg.host_id.clone(),
            state: PeerState::Running,
            finished: HashSet::new(),
            tx: None,
            blocklist: HashSet::new(),
            parents: Vec::new(),
            waiting: false,
            uploads_ok: 0,
            uploads_failed: 0,
        });
        peer.tx = Some(tx);
        if let Some(len) = task.content_length {
            peer.send(scheduler_event::Event::TaskInfo(TaskInfo {
                content_length: len,
                piece_length: task.piece_length,
            }));
            let pieces = task
                .digests
                .iter()
                .map(|(n, d)| PieceDigest {
                    number: *n,
                    digest: d.clone(),
                })
                .collect();
            peer.send(scheduler_event::Event::PieceDigests(PieceDigests {
                pieces,
            }));
        }
        info!(task = %short(&tid), peer = %pid, seed = is_seed, "peer registered");
        if is_seed {
            peer.state = PeerState::BackToSource;
            peer.send(back_to_source("seed peers read new tasks from the origin"));
        } else {
            schedule(m, &self.cfg, &tid, &pid);
        }
        Ok((tid, pid))
    }

    fn on_event(&self, tid: &str, pid: &str, ev: peer_event::Event) {
        let mut guard = self.lock();
        let m = &mut *guard;
        let Some(task) = m.tasks.get_mut(tid) else {
            return;
        };
        match ev {
            peer_event::Event::Register(_) => debug!(peer = pid, "duplicate register ignored"),
            peer_event::Event::ContentInfo(info) => {
                if task.content_length.is_none() && info.piece_length > 0 {
                    task.content_length = Some(info.content_length);
                    task.piece_length = info.piece_length;
                    let ev = scheduler_event::Event::TaskInfo(TaskInfo {
                        content_length: info.content_length,
                        piece_length: info.piece_length,
                    });
                    for p in task.peers.values().filter(|p| p.id != pid) {
                        p.send(ev.clone());
                    }
                } else if task.content_length != Some(info.content_length) {
                    warn!(task = %short(tid), peer = pid, "peer reports a different content length; ignored");
                }
            }
            peer_event::Event::PiecesFinished(done) => {
                let mut fresh = Vec::new();
                for piece in &done.pieces {
                    if piece.digest.len() != 32 {
                        continue;
                    }
                    match task.digests.get(&piece.number) {
                        None => {
                            task.digests.insert(piece.number, piece.digest.clone());
                            fresh.push(PieceDigest {
                                number: piece.number,
                                digest: piece.digest.clone(),
                            });
                        }
                        Some(d) if *d != piece.digest => {
                            warn!(task = %short(tid), peer = pid, piece = piece.number, "conflicting piece digest ignored");
                            continue;
                        }
                        Some(_) => {}
                    }
                    if !piece.parent_peer_id.is_empty() {
                        if let Some(parent) = task.peers.get_mut(&piece.parent_peer_id) {
                            parent.uploads_ok += 1;
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
                let waiting: Vec<String> = task
                    .peers
                    .values()
                    .filter(|p| p.waiting)
                    .map(|p| p.id.clone())
                    .collect();
                for w in waiting {
                    schedule(m, &self.cfg, tid, &w);
                }
            }
            peer_event::Event::ParentFailed(f) => {
                if let Some(parent) = task.peers.get_mut(&f.parent_peer_id) {
                    parent.uploads_failed += 1;
                }
                if let Some(p) = task.peers.get_mut(pid) {
                    info!(task = %short(tid), peer = pid, parent = %f.parent_peer_id, reason = %f.reason, "parent failed; blocklisted");
                    p.blocklist.insert(f.parent_peer_id);
                }
                schedule(m, &self.cfg, tid, pid);
            }
            peer_event::Event::NeedParents(_) => schedule(m, &self.cfg, tid, pid),
            peer_event::Event::Finished(_) => {
                if let Some(p) = task.peers.get_mut(pid) {
                    p.state = PeerState::Succeeded;
                    p.waiting = false;
                }
                set_parents(m, tid, pid, Vec::new());
            }
            peer_event::Event::Failed(f) => {
                info!(task = %short(tid), peer = pid, reason = %f.reason, "peer failed");
                let was_origin = task
                    .peers
                    .get(pid)
                    .is_some_and(|p| p.state == PeerState::BackToSource);
                remove_peer(m, &self.cfg, tid, pid);
                if was_origin {
                    release_waiters(
                        m,
                        tid,
                        &format!("the peer reading the origin failed: {}", f.reason),
                    );
                }
            }
        }
    }

    fn on_disconnect(&self, tid: &str, pid: &str) {
        let mut guard = self.lock();
        let m = &mut *guard;
        let Some(peer) = m.tasks.get_mut(tid).and_then(|t| t.peers.get_mut(pid)) else {
            return;
        };
        if peer.state == PeerState::Succeeded {
            peer.tx = None;
            return;
        }
        remove_peer(m, &self.cfg, tid, pid);
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn back_to_source(reason: &str) -> scheduler_event::Event {
    scheduler_event::Event::BackToSource(BackToSource {
        reason: reason.to_string(),
    })
}

/// Replaces a peer's parents, keeping each host's child count right.
fn set_parents(m: &mut Model, tid: &str, pid: &str, parents: Vec<String>) {
    let Some(task) = m.tasks.get_mut(tid) else {
        return;
    };
    let Some(peer) = task.peers.get_mut(pid) else {
        return;
    };
    let old = std::mem::replace(&mut peer.parents, parents.clone());
    let host_of = |id: &String| task.peers.get(id).map(|p| p.host_id.clone());
    for h in old.iter().filter_map(host_of) {
        if let Some(host) = m.hosts.get_mut(&h) {
            host.children = host.children.saturating_sub(1);
        }
    }
    for h in parents.iter().filter_map(host_of) {
        if let Some(host) = m.hosts.get_mut(&h) {
            host.children += 1;
        }
    }
}

/// Finds parents for a peer, or decides it waits or goes back to the origin.
fn schedule(m: &mut Model, cfg: &SchedulerConfig, tid: &str, pid: &str) {
    let Some(task) = m.tasks.get(tid) else { return };
    let Some(peer) = task.peers.get(pid) else {
        return;
    };
    if peer.state != PeerState::Running {
        return;
    }
    let parents = select_parents(&cfg.evaluator, task, &m.hosts, pid);
    if !parents.is_empty() {
        let list = parents
            .iter()
            .filter_map(|id| {
                let p = task.peers.get(id)?;
                let h = m.hosts.get(&p.host_id)?;
                Some(Parent {
                    peer_id: id.clone(),
                    ip: h.ip.to_string(),
                    port: h.info.upload_port,
                    seed: h.info.seed,
                })
            })
            .collect();
        peer.send(scheduler_event::Event::Parents(Parents { parents: list }));
        set_parents(m, tid, pid, parents);
        if let Some(p) = m.tasks.get_mut(tid).and_then(|t| t.peers.get_mut(pid)) {
            p.waiting = false;
        }
        return;
    }
    let seed_pending = task
        .seed_triggered
        .is_some_and(|t| t.elapsed() < cfg.seed_patience);
    if task.someone_fetching_origin() || seed_pending {
        if let Some(p) = m.tasks.get_mut(tid).and_then(|t| t.peers.get_mut(pid)) {
            p.waiting = true;
        }
        return;
    }
    let peer_host = peer.host_id.clone();
    let seed = m
        .hosts
        .values()
        .filter(|h| h.info.seed && h.info.host_id != peer_host)
        .min_by_key(|h| h.children)
        .map(|h| (h.info.host_id.clone(), h.commands.clone()));
    let request = task.request.clone();
    let Some(task) = m.tasks.get_mut(tid) else {
        return;
    };
    if let Some((seed_id, commands)) = seed {
        let cmd = HostCommand {
            command: Some(host_command::Command::Download(request)),
        };
        if commands.try_send(Ok(cmd)).is_ok() {
            info!(task = %short(tid), seed = %seed_id, "new task: seed peer triggered");
            task.seed_triggered = Some(Instant::now());
            if let Some(p) = task.peers.get_mut(pid) {
                p.waiting = true;
            }
            return;
        }
    }
    if let Some(p) = task.peers.get_mut(pid) {
        info!(task = %short(tid), peer = pid, "no parent and no seed peer: back to source");
        p.state = PeerState::BackToSource;
        p.waiting = false;
        p.send(back_to_source(
            "no peer holds the task and no seed peer is available",
        ));
    }
}

/// Sends every waiting peer of a task back to the origin.
fn release_waiters(m: &mut Model, tid: &str, reason: &str) {
    let Some(task) = m.tasks.get_mut(tid) else {
        return;
    };
    for p in task.peers.values_mut().filter(|p| p.waiting) {
        p.waiting = false;
        p.state = PeerState::BackToSource;
        p.send(back_to_source(reason));
    }
}

fn remove_peer(m: &mut Model, cfg: &SchedulerConfig, tid: &str, pid: &str) {
    set_parents(m, tid, pid, Vec::new());
    let Some(task) = m.tasks.get_mut(tid) else {
        return;
    };
    task.peers.remove(pid);
    for p in task.peers.values_mut() {
        p.parents.retain(|x| x != pid);
    }
    if task.peers.is_empty() {
        m.tasks.remove(tid);
        return;
    }
    // Peers that were waiting on the removed one may need a new plan.
    let waiting: Vec<String> = task
        .peers
        .values()
        .filter(|p| p.waiting)
        .map(|p| p.id.clone())
        .collect();
    if !task.someone_fetching_origin() {
        task.seed_triggered = None;
    }
    for w in waiting {
        schedule(m, cfg, tid, &w);
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type HostSessionStream = ReceiverStream<Result<HostCommand, Status>>;
    type AnnouncePeerStream = ReceiverStream<Result<SchedulerEvent, Status>>;

    async fn host_session(
        &self,
        request: Request<HostInfo>,
    ) -> Result<Response<Self::HostSessionStream>, Status> {
        let remote = request.remote_addr().map(|a| a.ip());
        let info = request.into_inner();
        if info.host_id.is_empty() {
            return Err(Status::invalid_argument("host_id is required"));
        }
        let ip: IpAddr = match info.ip.parse() {
            Ok(ip) => ip,
            Err(_) => remote.ok_or_else(|| Status::invalid_argument("host ip unknown"))?,
        };
        let (tx, rx) = mpsc::channel(256);
        let session = {
            let mut m = self.lock();
            m.next_session += 1;
            let session = m.next_session;
            info!(host = %info.host_id, %ip, port = info.upload_port, seed = info.seed, "host session opened");
            m.hosts.insert(
                info.host_id.clone(),
                Host {
                    info: info.clone(),
                    ip,
                    session,
                    commands: tx.clone(),
                    children: 0,
                },
            );
            session
        };
        let this = self.clone();
        tokio::spawn(async move {
            tx.closed().await;
            this.remove_host(&info.host_id, session);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn announce_peer(
        &self,
        request: Request<Streaming<PeerEvent>>,
    ) -> Result<Response<Self::AnnouncePeerStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .and_then(|e| e.event)
            .ok_or_else(|| Status::invalid_argument("the first announce event must be Register"))?;
        let peer_event::Event::Register(reg) = first else {
            return Err(Status::invalid_argument(
                "the first announce event must be Register",
            ));
        };
        let (tx, rx) = mpsc::channel(1024);
        let (tid, pid) = self.on_register(reg, tx)?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(PeerEvent { event: Some(ev) })) => this.on_event(&tid, &pid, ev),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        debug!(peer = %pid, error = %e, "announce stream broke");
                        break;
                    }
                }
            }
            this.on_disconnect(&tid, &pid);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
