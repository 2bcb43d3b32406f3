//! The scheduler's in-memory model: hosts, tasks, and the peers of each task.
//!
//! One mutex guards the whole model; handlers hold it only to update maps and to queue
//! messages with `try_send`, never across an await. Every decision walks a bounded number of
//! peers (see the evaluator), so the lock is held for microseconds whatever the swarm's size.
//! Peer order inside a task is kept in a vector (not taken from a hash map) so that, with a
//! seeded random source, the same inputs give the same decisions: the simulation relies on it.
//!
//! Hosts and peers live in [`Slots`]: a peer holds its host's slot, a task its peers' slots
//! in join order, and a parent edge is a slot, so a decision reaches its candidates without
//! hashing a string (see `slots.rs` for why that matters).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use pollen_proto::scheduler::{
    scheduler_event, HostCommand, HostInfo, SchedulerEvent, TaskRequest,
};
use tokio::sync::mpsc;
use tonic::Status;

use crate::piece_cost::PieceCost;
use crate::piece_set::PieceSet;
use crate::slots::Slots;

/// Sender half of a peer's announce response stream.
pub type PeerTx = mpsc::Sender<Result<SchedulerEvent, Status>>;
/// Sender half of a host session's command stream.
pub type HostTx = mpsc::Sender<Result<HostCommand, Status>>;

/// What a host last reported about its load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// Upload connections open.
    pub upload_connections: u32,
    /// Bytes per second it uploads.
    pub upload_bytes_per_sec: u64,
}

/// A daemon with an open host session.
pub struct Host {
    /// What the daemon said of itself when its session opened.
    pub info: HostInfo,
    /// The address peers reach it on.
    pub ip: IpAddr,
    /// Which of the host's sessions this is (a newer one replaces an older).
    pub session: u64,
    /// Commands to the daemon (delete a task, fetch one from the origin).
    pub commands: HostTx,
    /// Children currently told to download from this host, over all tasks.
    pub children: usize,
    /// Its last load report.
    pub load: Load,
    /// The address the host session came from (announces naming this host must come from it
    /// too); `None` when unknown.
    pub session_from: Option<IpAddr>,
    /// Blocked fleet-wide for bad data until then: offered to nobody as a parent.
    pub blocked_until: Option<std::time::Instant>,
    /// When the session opened or last reported its load (about once a second while the
    /// daemon lives): a session heard from lately is not handed to another address.
    pub last_heard: std::time::Instant,
}

/// Where a peer is in its download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Registered, waiting for parents or downloading from them.
    Running,
    /// Fetching from the origin itself.
    BackToSource,
    /// Holds the whole task.
    Succeeded,
}

/// One peer: a host's download of one task.
pub struct Peer {
    /// The peer's id (unique per download).
    pub id: String,
    /// This peer's slot in its task's table (set when it is added).
    pub slot: u32,
    /// Its host's id.
    pub host_id: String,
    /// The slot of its host in [`Model::hosts`]; `None` while the host has no session.
    pub host: Option<u32>,
    /// Where it is in its download.
    pub state: PeerState,
    /// The pieces it reported holding.
    pub finished: PieceSet,
    /// Its announce stream; `None` once closed.
    pub tx: Option<PeerTx>,
    /// Parents it reported as failed: never offered to it again.
    pub blocklist: HashSet<String>,
    /// Slots of the parents recorded for this peer (those it keeps and those last offered),
    /// in the task's table. Changed only through [`Task::set_parents`], which keeps
    /// `children` its inverse.
    pub parents: Vec<u32>,
    /// Slots of the peers that record this one as a parent: the DAG rule walks down these
    /// from a child, which has few or none, instead of up from every candidate.
    pub children: Vec<u32>,
    /// Pieces its children fetched from it.
    pub uploads_ok: u64,
    /// Fetches from it its children reported as failed.
    pub uploads_failed: u64,
    /// The scheduler chose this peer to read the origin (sent it back to source, or it is
    /// on a seed host): its reports of the task's facts count (see `task_facts`).
    pub reads_origin: bool,
    /// It reported facts that contradict the published ones: offered to nobody as a parent.
    pub distrusted: bool,
    /// Length and piece length it reported before the task's were published (it does not
    /// read the origin, so they count for nothing): checked when they are published.
    pub claimed_layout: Option<(u64, u64)>,
    /// How long this peer takes to upload a piece, as its children report it.
    pub upload_cost: PieceCost,
}

impl Peer {
    /// A peer that has just registered, with no pieces and no parents.
    pub fn new(id: String, host_id: String, host: Option<u32>) -> Self {
        Self {
            id,
            slot: 0,
            host_id,
            host,
            state: PeerState::Running,
            finished: PieceSet::default(),
            tx: None,
            blocklist: HashSet::new(),
            parents: Vec::new(),
            children: Vec::new(),
            uploads_ok: 0,
            uploads_failed: 0,
            reads_origin: false,
            distrusted: false,
            claimed_layout: None,
            upload_cost: PieceCost::default(),
        }
    }

    /// Sends `ev` down its announce stream; dropped (and logged) when the stream is full or
    /// closed.
    pub fn send(&self, ev: scheduler_event::Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Ok(SchedulerEvent { event: Some(ev) })).is_err() {
                tracing::debug!(peer = %self.id, "announce stream full or closed; event dropped");
            }
        }
    }
}

/// Most early piece claims one task keeps (see [`Task::early_claims`]), and all tasks
/// together: claims past either do not count as held pieces until their peer reports them
/// again. About 60 bytes each, so the total bounds what hosts that lie before the origin
/// is read can make the scheduler hold to some 60 MiB.
pub const MAX_EARLY_CLAIMS: usize = 1 << 16;
/// See [`MAX_EARLY_CLAIMS`].
pub const MAX_EARLY_CLAIMS_TOTAL: usize = 1 << 20;

/// A task and its peers.
pub struct Task {
    /// What the first peer asked for (URL, digest, tag …).
    pub request: TaskRequest,
    /// Its length, once published by a peer that read the origin.
    pub content_length: Option<u64>,
    /// Its piece length, published with the length (0 until then).
    pub piece_length: u64,
    /// Published piece digests, by piece number.
    pub digests: HashMap<u32, Vec<u8>>,
    /// Claims to hold a piece made before its digest was published, by peer id, with the
    /// first bytes of the digest claimed: checked when the digest is published, so a peer
    /// that lied before anyone read the origin is caught then (see `Core::event`).
    pub early_claims: HashMap<u32, Vec<(String, [u8; 8])>>,
    /// Entries in `early_claims`, capped at [`MAX_EARLY_CLAIMS`].
    pub early_claim_count: usize,
    /// Its peers, by slot.
    pub peers: Slots<Peer>,
    /// Peer slots in join order (with swap-removal): the sampling order of the evaluator.
    pub order: Vec<u32>,
    /// Slots of the peers on seed hosts, always considered as candidates.
    pub seeds: Vec<u32>,
    /// Peers registered that had no usable parent the last time they asked (a set, so a
    /// piece report does not scan every peer to find them).
    waiters: std::collections::BTreeSet<String>,
    /// When a seed was last asked to fetch it.
    pub seed_triggered: Option<Instant>,
    /// Typical piece upload time over all parents of the task.
    pub typical_cost: PieceCost,
    /// When a peer of it last did anything (idle tasks are forgotten).
    pub last_active: Instant,
    /// Some peer was chosen to read the origin (see `Core::send_to_origin`), so the task's
    /// facts are known or on their way.
    pub origin_reader: bool,
}

impl Task {
    /// A task with no peers yet, asked for by `request`.
    pub fn new(request: TaskRequest, now: Instant) -> Self {
        Self {
            request,
            content_length: None,
            piece_length: 0,
            digests: HashMap::new(),
            early_claims: HashMap::new(),
            early_claim_count: 0,
            peers: Slots::default(),
            order: Vec::new(),
            seeds: Vec::new(),
            waiters: Default::default(),
            seed_triggered: None,
            typical_cost: PieceCost::default(),
            last_active: now,
            origin_reader: false,
        }
    }

    /// Number of pieces, once the length is known.
    pub fn piece_count(&self) -> Option<u32> {
        let len = self.content_length?;
        (self.piece_length > 0).then(|| len.div_ceil(self.piece_length).max(1) as u32)
    }

    /// Adds a peer (no-op when it is already known).
    pub fn add_peer(&mut self, peer: Peer, seed: bool) -> &mut Peer {
        let slot = match self.peers.slot_of(&peer.id) {
            Some(slot) => slot,
            None => {
                let id = peer.id.clone();
                let slot = self.peers.insert(&id, peer);
                self.order.push(slot);
                if seed {
                    self.seeds.push(slot);
                }
                slot
            }
        };
        let p = self.peers.at_mut(slot).expect("slot of a known id");
        p.slot = slot;
        p
    }

    /// Removes a peer and every edge pointing at it; returns the peer and the ids of the
    /// children that had it as a parent, in join order.
    pub fn remove_peer(&mut self, id: &str) -> Option<(Peer, Vec<String>)> {
        let (slot, peer) = self.peers.remove(id)?;
        if let Some(i) = self.order.iter().position(|&x| x == slot) {
            self.order.swap_remove(i);
        }
        self.seeds.retain(|&x| x != slot);
        self.waiters.remove(id);
        let mut orphans = Vec::new();
        for &child in &self.order {
            if let Some(p) = self.peers.at_mut(child) {
                p.children.retain(|&x| x != slot);
                let before = p.parents.len();
                p.parents.retain(|&x| x != slot);
                if p.parents.len() != before {
                    orphans.push(p.id.clone());
                }
            }
        }
        Some((peer, orphans))
    }

    /// Replaces the recorded parents of the peer at `slot` and returns the old ones; every
    /// parent's `children` follows.
    pub fn set_parents(&mut self, slot: u32, parents: Vec<u32>) -> Vec<u32> {
        let Some(peer) = self.peers.at_mut(slot) else {
            return Vec::new();
        };
        let old = std::mem::replace(&mut peer.parents, parents.clone());
        for &p in &old {
            if let Some(parent) = self.peers.at_mut(p) {
                if let Some(i) = parent.children.iter().position(|&c| c == slot) {
                    parent.children.swap_remove(i);
                }
            }
        }
        for &p in &parents {
            if let Some(parent) = self.peers.at_mut(p) {
                parent.children.push(slot);
            }
        }
        old
    }

    /// The ids of the parents last offered to `peer`.
    pub fn parent_ids(&self, peer: &Peer) -> Vec<String> {
        peer.parents
            .iter()
            .filter_map(|&s| self.peers.at(s).map(|p| p.id.clone()))
            .collect()
    }

    /// True when some live peer is reading this task from the origin.
    pub fn someone_fetching_origin(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.state == PeerState::BackToSource && p.tx.is_some())
    }

    /// True when every piece is held in the swarm or on its way into it: some peer holds
    /// the whole task, or some live peer reads it from the origin.
    pub fn every_piece_reachable(&self) -> bool {
        self.peers.values().any(|p| {
            p.state == PeerState::Succeeded || p.state == PeerState::BackToSource && p.tx.is_some()
        })
    }

    /// Ids of waiting peers, in id order.
    pub fn waiting(&self) -> Vec<String> {
        self.waiters.iter().cloned().collect()
    }

    /// Marks a peer as waiting for a parent, or not.
    pub fn set_waiting(&mut self, id: &str, waiting: bool) {
        if !self.peers.contains_key(id) {
            return;
        }
        if waiting {
            self.waiters.insert(id.to_string());
        } else {
            self.waiters.remove(id);
        }
    }
}

/// The whole model.
#[derive(Default)]
pub struct Model {
    /// Hosts with an open session, by slot.
    pub hosts: Slots<Host>,
    /// Ids of the seed hosts among `hosts` (so finding a seed does not walk every host).
    pub seed_hosts: std::collections::BTreeSet<String>,
    /// Counts seed host sessions opened, so a task that has tried every seed host knows when
    /// a new one may have come.
    pub seed_epoch: u64,
    /// Tasks by id.
    pub tasks: HashMap<String, Task>,
    /// The number the next host session gets.
    pub next_session: u64,
}
