//! The simulated swarm: peers, links and piece transfers stepped in virtual time, with
//! Pollen's real scheduler core making every parent decision.
//!
//! Link model: fluid, piece-level. Every step, each transfer gets a share of its parent's
//! upload and its child's download (progressive filling in a few rounds, so capacity one
//! transfer cannot use goes to the others). The node stage follows the daemon: a peer keeps
//! up to `max_parents` parents, spreads its pieces in flight over them (`in_flight` over the
//! number of parents each, at least one), takes rarest pieces first (ties at random), asks a
//! seed parent only for pieces no other parent holds (and the seed offers only the pieces it
//! has handed out least often, as the daemon's seed does), duplicates in-flight pieces only in
//! the endgame, drops a parent that has had nothing to give for `idle_drop`, and asks the
//! scheduler for more parents once a second while it has fewer than `max_parents`.

use std::collections::HashMap;

use pollen_proto::scheduler::{
    host_command, peer_event, scheduler_event, ContentInfo, HostInfo, HostLoad, NeedParents,
    Register, SchedulerEvent, TaskRequest,
};
use pollen_scheduler::core::Core;
use pollen_scheduler::piece_set::PieceSet;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::spec::SimSpec;

mod links;
mod node;

/// The simulated task's URL; its id is derived from it, as the scheduler checks.
const TASK_URL: &str = "http://origin/blob";

/// The simulated task's id.
static TASK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    pollen_scheduler::task_facts::expected_task_id(&TaskRequest {
        url: TASK_URL.into(),
        ..Default::default()
    })
    .expect("task id")
});
/// The origin, as a parent index.
const ORIGIN: usize = usize::MAX;

type Rx = mpsc::Receiver<Result<SchedulerEvent, tonic::Status>>;

struct Link {
    parent: usize,
    seed: bool,
    idle_since: Option<f64>,
}

struct SimPeer {
    id: String,
    host: String,
    up: f64,
    down: f64,
    join: f64,
    seed: bool,
    joined: bool,
    done_at: Option<f64>,
    has: PieceSet,
    /// Pieces being fetched, with the number of copies in flight.
    in_flight: HashMap<u32, u8>,
    links: Vec<Link>,
    rx: Option<Rx>,
    back_to_source: bool,
}

impl SimPeer {
    fn new(id: String, host: String, up: f64, down: f64, join: f64) -> Self {
        Self {
            id,
            host,
            up,
            down,
            join,
            seed: false,
            joined: false,
            done_at: None,
            has: PieceSet::default(),
            in_flight: HashMap::new(),
            links: Vec::new(),
            rx: None,
            back_to_source: false,
        }
    }
}

struct Transfer {
    child: usize,
    parent: usize,
    piece: u32,
    done: f64,
    started: f64,
    rate: f64,
}

/// What a run produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    /// Peers simulated (the seed not counted).
    pub peers: usize,
    /// The lower bound on completion time, in seconds.
    pub t_min: f64,
    /// Completion times (finish minus join) over T_min, ascending.
    pub ratios: Vec<f64>,
    /// Bytes read from the origin over the task's size.
    pub origin_bytes_over_size: f64,
    /// Peers that never finished.
    pub unfinished: usize,
    /// Simulated seconds the run took.
    pub virtual_seconds: f64,
    /// Most pieces any peer (the seed included) uploaded at once.
    pub peak_uploads_per_parent: usize,
}

impl Outcome {
    fn at(&self, q: f64) -> f64 {
        if self.ratios.is_empty() {
            return f64::NAN;
        }
        let i = ((self.ratios.len() - 1) as f64 * q).round() as usize;
        self.ratios[i]
    }
    /// The first peer's completion time over T_min.
    pub fn first(&self) -> f64 {
        self.at(0.0)
    }
    /// The median completion time over T_min.
    pub fn median(&self) -> f64 {
        self.at(0.5)
    }
    /// The last peer's completion time over T_min.
    pub fn last(&self) -> f64 {
        self.at(1.0)
    }
}

/// A swarm being simulated.
pub struct Swarm {
    spec: SimSpec,
    core: Core,
    peers: Vec<SimPeer>,
    index: HashMap<String, usize>,
    transfers: Vec<Transfer>,
    rng: StdRng,
    now: f64,
    origin_bytes: f64,
    /// Most pieces any peer (the seed included) uploaded at once.
    peak_uploads: usize,
    /// Per seed, how many times each piece has been handed out.
    seed_sent: HashMap<usize, Vec<u32>>,
    seed_commands: mpsc::Receiver<Result<pollen_proto::scheduler::HostCommand, tonic::Status>>,
    /// Keeps the other hosts' command channels open.
    _host_commands:
        Vec<mpsc::Receiver<Result<pollen_proto::scheduler::HostCommand, tonic::Status>>>,
}

fn digest(n: u32) -> Vec<u8> {
    let mut d = vec![7u8; 32];
    d[..4].copy_from_slice(&n.to_be_bytes());
    d
}

fn host_info(id: &str, i: usize, seed: bool, up: f64) -> HostInfo {
    HostInfo {
        host_id: id.to_string(),
        hostname: id.to_string(),
        // Spread over /16s so the proximity feature sees a realistic mix.
        ip: format!("10.{}.{}.{}", (i / 65536) % 256, (i / 256) % 256, i % 256),
        upload_port: 4100,
        seed,
        upload_rate_limit: up as u64,
        max_upload_connections: 64,
        idc: String::new(),
        location: String::new(),
    }
}

impl Swarm {
    /// Builds the swarm and opens every host session (peers register when they join).
    pub fn new(spec: SimSpec) -> Self {
        let mut core = Core::new(spec.scheduler.clone(), spec.rng_seed);
        let mut peers = Vec::with_capacity(spec.peers + 1);
        let mut index = HashMap::new();
        let mut keep = Vec::new();
        for i in 0..spec.peers {
            let c = spec.class_of(i).clone();
            let host = format!("h{i}");
            let (tx, rx) = mpsc::channel(16);
            keep.push(rx);
            core.open_host(
                host_info(&host, i, false, c.upload),
                host_info(&host, i, false, c.upload)
                    .ip
                    .parse()
                    .expect("valid ip"),
                tx,
            );
            let id = format!("p{i}");
            index.insert(id.clone(), i);
            peers.push(SimPeer::new(
                id,
                host,
                c.upload,
                c.download,
                spec.join_time(i),
            ));
        }
        let seed_host = "seed-host".to_string();
        let (tx, seed_commands) = mpsc::channel(16);
        let info = host_info(&seed_host, spec.peers, true, spec.origin);
        let ip = info.ip.parse().expect("valid ip");
        core.open_host(info, ip, tx);
        index.insert("seed".into(), spec.peers);
        let mut seed = SimPeer::new(
            "seed".into(),
            seed_host,
            spec.origin,
            spec.origin,
            f64::INFINITY,
        );
        seed.seed = true;
        peers.push(seed);
        Self {
            rng: StdRng::seed_from_u64(spec.rng_seed ^ 0x5eed),
            spec,
            core,
            peers,
            index,
            transfers: Vec::new(),
            now: 0.0,
            origin_bytes: 0.0,
            peak_uploads: 0,
            seed_sent: HashMap::new(),
            seed_commands,
            _host_commands: keep,
        }
    }

    fn register(&mut self, i: usize) {
        let (tx, rx) = mpsc::channel(4096);
        let p = &mut self.peers[i];
        p.joined = true;
        p.rx = Some(rx);
        let reg = Register {
            peer_id: p.id.clone(),
            host_id: p.host.clone(),
            task: Some(TaskRequest {
                task_id: TASK.clone(),
                url: TASK_URL.into(),
                ..Default::default()
            }),
        };
        if self.core.register(reg, tx).is_err() {
            self.peers[i].back_to_source = true;
        }
    }

    fn event(&mut self, i: usize, ev: peer_event::Event) {
        let id = self.peers[i].id.clone();
        self.core.event(&TASK, &id, ev);
    }

    /// Reads what the scheduler told peer `i`.
    fn drain(&mut self, i: usize) {
        let Some(mut rx) = self.peers[i].rx.take() else {
            return;
        };
        while let Ok(Ok(ev)) = rx.try_recv() {
            match ev.event {
                Some(scheduler_event::Event::Parents(p)) => {
                    for parent in p.parents {
                        let Some(&j) = self.index.get(&parent.peer_id) else {
                            continue;
                        };
                        let peer = &mut self.peers[i];
                        if peer.links.len() >= self.spec.max_parents
                            || peer.links.iter().any(|l| l.parent == j)
                        {
                            continue;
                        }
                        peer.links.push(Link {
                            parent: j,
                            seed: parent.seed,
                            idle_since: None,
                        });
                    }
                }
                Some(scheduler_event::Event::BackToSource(_)) => {
                    self.peers[i].back_to_source = true;
                }
                _ => {}
            }
        }
        self.peers[i].rx = Some(rx);
    }

    fn each_second(&mut self) {
        let mut conns = vec![0u32; self.peers.len()];
        let mut sent = vec![0f64; self.peers.len()];
        for p in &self.peers {
            for l in &p.links {
                conns[l.parent] += if l.seed { 1 } else { 2 };
            }
        }
        for t in &self.transfers {
            if t.parent != ORIGIN {
                sent[t.parent] += t.rate;
            }
        }
        for (i, p) in self.peers.iter().enumerate() {
            let load = HostLoad {
                host_id: p.host.clone(),
                upload_connections: conns[i],
                upload_bytes_per_sec: sent[i] as u64,
                ..Default::default()
            };
            // Every simulated host has a session; nothing to refuse.
            let _ = self.core.report_load(&load, None);
        }
        for i in 0..self.peers.len() {
            let p = &self.peers[i];
            if p.joined
                && p.done_at.is_none()
                && !p.back_to_source
                && !p.seed
                && p.links.len() < self.spec.max_parents
            {
                // Like the daemon, it names the parents it has, and is offered others.
                let parents = p
                    .links
                    .iter()
                    .map(|l| self.peers[l.parent].id.clone())
                    .collect();
                self.event(i, peer_event::Event::NeedParents(NeedParents { parents }));
            }
        }
    }

    fn seed_commands(&mut self) {
        while let Ok(Ok(cmd)) = self.seed_commands.try_recv() {
            if let Some(host_command::Command::Download(_)) = cmd.command {
                let s = self.spec.peers;
                if !self.peers[s].joined {
                    self.register(s);
                    self.peers[s].back_to_source = true;
                    let len = self.spec.size() as u64;
                    self.event(
                        s,
                        peer_event::Event::ContentInfo(ContentInfo {
                            content_length: len,
                            piece_length: self.spec.piece_bytes as u64,
                        }),
                    );
                }
            }
        }
    }

    /// Runs until every peer finished or `limit` x T_min of virtual time passed.
    pub fn run(mut self, limit: f64) -> Outcome {
        let t_min = self.spec.t_min();
        let end = limit * t_min + self.spec.late_window * t_min;
        let mut next_second = 0.0;
        while self.now < end {
            for i in 0..self.spec.peers {
                if !self.peers[i].joined && self.peers[i].join <= self.now {
                    self.register(i);
                }
            }
            self.seed_commands();
            for i in 0..self.peers.len() {
                if self.peers[i].joined {
                    self.drain(i);
                }
            }
            if self.now >= next_second {
                self.each_second();
                next_second += 1.0;
            }
            self.start_transfers();
            self.share_bandwidth();
            self.now += self.spec.dt;
            self.advance();
            if self.peers[..self.spec.peers]
                .iter()
                .all(|p| p.done_at.is_some())
            {
                break;
            }
        }
        let mut ratios: Vec<f64> = self.peers[..self.spec.peers]
            .iter()
            .filter_map(|p| p.done_at.map(|d| (d - p.join) / t_min))
            .collect();
        ratios.sort_by(f64::total_cmp);
        Outcome {
            peers: self.spec.peers,
            t_min,
            unfinished: self.spec.peers - ratios.len(),
            ratios,
            origin_bytes_over_size: self.origin_bytes / self.spec.size(),
            virtual_seconds: self.now,
            peak_uploads_per_parent: self.peak_uploads,
        }
    }
}
