//! The scheduler's in-memory model: hosts, tasks, and the peers of each task.
//!
//! One mutex guards the whole model; handlers hold it only to update maps and to queue
//! messages with `try_send`, never across an await.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

use pollen_proto::scheduler::{
    scheduler_event, HostCommand, HostInfo, SchedulerEvent, TaskRequest,
};
use tokio::sync::mpsc;
use tonic::Status;

/// Sender half of a peer's announce response stream.
pub(crate) type PeerTx = mpsc::Sender<Result<SchedulerEvent, Status>>;
/// Sender half of a host session's command stream.
pub(crate) type HostTx = mpsc::Sender<Result<HostCommand, Status>>;

pub(crate) struct Host {
    pub info: HostInfo,
    pub ip: IpAddr,
    pub session: u64,
    pub commands: HostTx,
    /// Children currently told to download from this host, over all tasks.
    pub children: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerState {
    /// Registered, waiting for parents or downloading from them.
    Running,
    /// Fetching from the origin itself.
    BackToSource,
    /// Holds the whole task.
    Succeeded,
}

pub(crate) struct Peer {
    pub id: String,
    pub host_id: String,
    pub state: PeerState,
    pub finished: HashSet<u32>,
    pub tx: Option<PeerTx>,
    pub blocklist: HashSet<String>,
    pub parents: Vec<String>,
    /// Registered but had no usable parent the last time it asked.
    pub waiting: bool,
    pub uploads_ok: u64,
    pub uploads_failed: u64,
}

impl Peer {
    pub fn send(&self, ev: scheduler_event::Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(Ok(SchedulerEvent { event: Some(ev) })).is_err() {
                tracing::debug!(peer = %self.id, "announce stream full or closed; event dropped");
            }
        }
    }
}

pub(crate) struct Task {
    pub request: TaskRequest,
    pub content_length: Option<u64>,
    pub piece_length: u64,
    pub digests: HashMap<u32, Vec<u8>>,
    pub peers: HashMap<String, Peer>,
    pub seed_triggered: Option<Instant>,
}

impl Task {
    pub fn new(request: TaskRequest) -> Self {
        Self {
            request,
            content_length: None,
            piece_length: 0,
            digests: HashMap::new(),
            peers: HashMap::new(),
            seed_triggered: None,
        }
    }

    /// True when some live peer is reading this task from the origin.
    pub fn someone_fetching_origin(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.state == PeerState::BackToSource && p.tx.is_some())
    }
}

#[derive(Default)]
pub(crate) struct Model {
    pub hosts: HashMap<String, Host>,
    pub tasks: HashMap<String, Task>,
    pub next_session: u64,
}
