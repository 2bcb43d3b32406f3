//! Unit tests of the evaluator: its helpers, the filter and the score, and the fixture
//! (`World`) the ranking tests in `evaluator_rank_tests.rs` share.

use super::*;
use pollen_proto::scheduler::HostInfo;
use rand::SeedableRng as _;

#[test]
fn a_child_keeps_each_parent_it_names_once_and_never_itself() {
    let task = Task::new(Default::default(), std::time::Instant::now());
    assert_eq!(kept_parents(&task, 3, &[1, 3, 1, 2, 3], None), vec![1, 2]);
    assert!(kept_parents(&task, 3, &[3], None).is_empty());
}

#[test]
fn location_affinity_is_the_share_of_leading_parts_in_common() {
    assert_eq!(location_affinity("", "eu|fra|r1"), 0.0, "unknown");
    assert_eq!(location_affinity("eu|fra|r1", ""), 0.0, "unknown");
    assert_eq!(location_affinity("eu|fra|r1", "eu|fra|r1"), 1.0);
    assert!((location_affinity("eu|fra|r1", "eu|fra|r2") - 2.0 / 3.0).abs() < 1e-9);
    // Measured against the longer of the two.
    assert_eq!(location_affinity("eu|fra", "eu|fra|r2|u7"), 0.5);
    assert_eq!(
        location_affinity("eu|fra|r1", "us|fra|r1"),
        0.0,
        "only leading parts count"
    );
}

#[test]
fn proximity_is_one_for_the_same_near_network_a_half_for_the_same_site() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(proximity(ip("10.1.2.3"), ip("10.1.2.200")), 1.0);
    assert_eq!(proximity(ip("10.1.2.3"), ip("10.1.9.3")), 0.5);
    assert_eq!(proximity(ip("10.1.2.3"), ip("10.7.2.3")), 0.0);
    assert_eq!(proximity(ip("fd00:1:2:3::1"), ip("fd00:1:2:3::9")), 1.0);
    assert_eq!(proximity(ip("fd00:1:2:3::1"), ip("fd00:1:2:4::1")), 0.5);
    assert_eq!(proximity(ip("fd00:1:2:3::1"), ip("fd00:9:2:3::1")), 0.0);
    assert_eq!(
        proximity(ip("10.1.2.3"), ip("::ffff:10.1.2.3")),
        0.0,
        "families differ"
    );
}

fn fields(w: &Weights) -> [(&'static str, f64); 8] {
    [
        ("load", w.load),
        ("pieces", w.pieces),
        ("success", w.success),
        ("speed", w.speed),
        ("host_type", w.host_type),
        ("idc", w.idc),
        ("location", w.location),
        ("proximity", w.proximity),
    ]
}

#[test]
fn every_named_weight_is_set_and_nothing_else_is() {
    let default = Weights::default();
    for name in Weights::NAMES {
        let mut w = Weights::default();
        assert!(w.set(name, 9.5), "{name}");
        for ((field, v), (_, d)) in fields(&w).into_iter().zip(fields(&default)) {
            let expected = if field == name { 9.5 } else { d };
            assert_eq!(v, expected, "after setting {name}, {field} is {v}");
        }
    }
    assert!(!Weights::default().set("nonsense", 1.0));
}

#[test]
fn free_slots_count_both_the_last_report_and_the_children_assigned_since() {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let mut h = crate::model::Host {
        info: pollen_proto::scheduler::HostInfo {
            max_upload_connections: 20,
            ..Default::default()
        },
        ip: "127.0.0.1".parse().expect("ip"),
        session: 1,
        commands: tx,
        children: 0,
        load: Default::default(),
        session_from: None,
        blocked_until: None,
        last_heard: std::time::Instant::now(),
    };
    assert_eq!(free_slots(&h), 20);
    h.load.upload_connections = 3;
    assert_eq!(free_slots(&h), 17);
    h.children = 4;
    let assigned = 4 * CONNECTIONS_PER_CHILD;
    assert_eq!(free_slots(&h), 20u32.saturating_sub(assigned.max(3)));
    h.load.upload_connections = 50;
    assert_eq!(free_slots(&h), 0);
}

/// A task of ten pieces, a child on its own host, and candidates added one by one, each on
/// a host of its own unless it names one.
pub(super) struct World {
    pub(super) task: Task,
    pub(super) hosts: Slots<Host>,
    pub(super) cfg: EvaluatorConfig,
}

pub(super) const PIECES: u32 = 10;

pub(super) fn info(upload_rate_limit: u64) -> HostInfo {
    HostInfo {
        upload_port: 4000,
        max_upload_connections: 20,
        upload_rate_limit,
        ..Default::default()
    }
}

impl World {
    pub(super) fn new() -> Self {
        let mut task = Task::new(Default::default(), std::time::Instant::now());
        task.content_length = Some(u64::from(PIECES) * 1024);
        task.piece_length = 1024;
        let mut w = Self {
            task,
            hosts: Slots::default(),
            cfg: EvaluatorConfig::default(),
        };
        w.host("child-host", "10.0.1.5", info(0));
        w.peer("child", "child-host", &[]);
        w
    }

    pub(super) fn host(&mut self, id: &str, ip: &str, info: HostInfo) -> u32 {
        let (commands, _) = tokio::sync::mpsc::channel(1);
        self.hosts.insert(
            id,
            Host {
                info,
                ip: ip.parse().expect("ip"),
                session: 1,
                commands,
                children: 0,
                load: Default::default(),
                session_from: None,
                blocked_until: None,
                last_heard: std::time::Instant::now(),
            },
        )
    }

    /// A running peer with an open announce stream, holding `pieces`.
    pub(super) fn peer(&mut self, id: &str, host: &str, pieces: &[u32]) -> u32 {
        let slot = self.hosts.slot_of(host).expect("host added first");
        let mut p = Peer::new(id.into(), host.into(), Some(slot));
        p.tx = Some(tokio::sync::mpsc::channel(1).0);
        for &n in pieces {
            p.finished.insert(n);
        }
        self.task.add_peer(p, false).slot
    }

    /// A candidate holding every piece, on a host of its own (`ip` 10.9.0.x).
    pub(super) fn holder(&mut self, id: &str, info: HostInfo) -> u32 {
        let host = format!("{id}-host");
        let n = self.hosts.len();
        self.host(&host, &format!("10.9.0.{}", n + 1), info);
        let all: Vec<u32> = (0..PIECES).collect();
        self.peer(id, &host, &all)
    }

    pub(super) fn peer_mut(&mut self, id: &str) -> &mut Peer {
        self.task.peers.get_mut(id).expect("peer")
    }

    pub(super) fn host_mut(&mut self, id: &str) -> &mut Host {
        self.hosts.get_mut(id).expect("host")
    }

    pub(super) fn score_of(&self, id: &str) -> Option<Scored> {
        let child = self.task.peers.get("child").expect("child");
        let child_host = self.hosts.at(child.host.expect("host")).expect("host");
        let p = self.task.peers.get(id).expect("candidate");
        score(
            &self.cfg,
            &self.task,
            &self.hosts,
            child,
            child_host,
            p,
            f64::from(PIECES),
            &std::cell::OnceCell::new(),
        )
    }

    /// The ids offered to the child, best first (the sample starts at a seeded place).
    pub(super) fn offered(&self, has: &[u32]) -> Vec<String> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        select_parents(
            &self.cfg,
            &self.task,
            &self.hosts,
            "child",
            has,
            None,
            &mut rng,
        )
        .into_iter()
        .map(|s| self.task.peers.at(s).expect("peer").id.clone())
        .collect()
    }
}

pub(super) fn cost(ms: u32) -> crate::piece_cost::PieceCost {
    let mut c = crate::piece_cost::PieceCost::default();
    for _ in 0..3 {
        c.record(ms);
    }
    c
}

#[test]
fn the_score_is_the_weighted_sum_of_every_feature() {
    let mut w = World::new();
    w.host_mut("child-host").info.idc = "dc1".into();
    w.host_mut("child-host").info.location = "eu|fra|r2".into();
    w.task.typical_cost = cost(100);
    // Holds pieces 0..6 while the child holds 0..2: four useful pieces of ten.
    w.host(
        "h",
        "10.0.2.9",
        HostInfo {
            idc: "dc1".into(),
            location: "eu|fra|r1".into(),
            ..info(1000)
        },
    );
    w.peer("a", "h", &[0, 1, 2, 3, 4, 5]);
    for n in [0, 1] {
        w.peer_mut("child").finished.insert(n);
    }
    w.host_mut("h").load = crate::model::Load {
        upload_connections: 5,
        upload_bytes_per_sec: 600,
    };
    w.host_mut("h").children = 2;
    let a = w.peer_mut("a");
    a.uploads_ok = 3;
    a.uploads_failed = 1;
    a.upload_cost = cost(400);

    let s = w.score_of("a").expect("a passes the filter");
    // Free slots 15 of 20, bandwidth 400 of 1000 free, each half of the non-share part.
    let load = 0.25 * (15.0 / 20.0) + 0.25 * 0.4;
    let expected = 0.40 * load
        + 0.25 * 0.4 // pieces
        + 0.15 * 0.75 // success
        + 0.15 * 0.25 // speed: 100 ms typical against 400
        + 0.10 * 1.0 // an ordinary peer
        + 0.05 * 1.0 // same IDC
        + 0.05 * (2.0 / 3.0) // location: two of three parts
        + 0.05 * 0.5; // the same /16, not the same /24
    assert!(
        (s.score - expected).abs() < 1e-12,
        "{} against {expected}",
        s.score
    );
    assert_eq!(s.capacity, Some(1000.0));
    assert_eq!(s.children, 2);
}

#[test]
fn a_seed_elsewhere_without_limits_or_history_scores_its_own_way() {
    let mut w = World::new();
    w.host_mut("child-host").info.idc = "dc1".into();
    w.host(
        "s",
        "192.168.7.7",
        HostInfo {
            seed: true,
            idc: "dc2".into(),
            ..info(0)
        },
    );
    w.peer("seed", "s", &[0, 1, 2]);
    let s = w.score_of("seed").expect("the seed passes the filter");
    // Every slot and all bandwidth free, no upload yet (counts as all verified), speed
    // unknown (typical), a seed (0), another IDC, no location, another network.
    let expected = 0.40 * (0.25 + 0.25) + 0.25 * 0.3 + 0.15 + 0.15;
    assert!(
        (s.score - expected).abs() < 1e-12,
        "{} against {expected}",
        s.score
    );
    assert_eq!(s.capacity, None, "no upload limit");
}

#[test]
fn the_filter_refuses_each_kind_of_useless_or_unfit_candidate() {
    let mut w = World::new();
    w.holder("fit", info(0));
    assert!(w.score_of("fit").is_some(), "the control case passes");

    w.peer("same-host", "child-host", &[0, 1]);
    w.holder("distrusted", info(0));
    w.peer_mut("distrusted").distrusted = true;
    w.holder("blocklisted", info(0));
    w.peer_mut("child").blocklist.insert("blocklisted".into());
    w.holder("gone", info(0));
    w.peer_mut("gone").tx = None;
    w.holder(
        "no-port",
        HostInfo {
            upload_port: 0,
            ..info(0)
        },
    );
    w.holder("blocked", info(0));
    w.host_mut("blocked-host").blocked_until = Some(std::time::Instant::now());
    w.holder("full", info(0));
    w.host_mut("full-host").load.upload_connections = 20;
    w.holder("busy", info(0));
    w.host_mut("busy-host").children = 10;
    w.host("e", "10.9.9.9", info(0));
    w.peer("empty", "e", &[]);
    w.host("ho", "10.9.9.10", info(0));
    w.peer("homeless", "ho", &[1]);
    w.peer_mut("homeless").host = None;
    for id in [
        "same-host",
        "distrusted",
        "blocklisted",
        "gone",
        "no-port",
        "blocked",
        "full",
        "busy",
        "homeless",
    ] {
        assert!(w.score_of(id).is_none(), "{id} was let through");
    }
    // A peer with nothing the child lacks and not downloading itself is of no use, but a
    // finished one without an announce stream still serves.
    w.peer_mut("empty").state = PeerState::Succeeded;
    assert!(
        w.score_of("empty").is_none(),
        "holds nothing the child lacks"
    );
    w.peer_mut("gone").state = PeerState::Succeeded;
    assert!(
        w.score_of("gone").is_some(),
        "a finished peer serves without a stream"
    );
}

#[test]
fn a_downloading_peer_is_offered_only_while_every_piece_is_on_its_way() {
    let mut w = World::new();
    w.host("d", "10.9.9.1", info(0));
    w.peer("downloading", "d", &[]);
    assert!(
        w.score_of("downloading").is_none(),
        "no one holds the task or reads the origin: its missing pieces may exist nowhere"
    );
    w.host("r", "10.9.9.2", info(0));
    w.peer("reader", "r", &[]);
    w.peer_mut("reader").state = PeerState::BackToSource;
    assert!(
        w.score_of("downloading").is_some(),
        "the origin reader brings every piece"
    );
    assert!(
        w.score_of("reader").is_some(),
        "and the reader itself is worth asking"
    );
    w.peer_mut("reader").tx = None;
    assert!(
        w.score_of("downloading").is_none(),
        "a reader whose stream closed brings nothing"
    );
    w.holder("whole", info(0));
    w.peer_mut("whole").state = PeerState::Succeeded;
    w.peer_mut("whole").tx = None;
    assert!(
        w.score_of("downloading").is_some(),
        "someone holds the whole task"
    );
    // A peer that already holds every piece the child has, and all of them, is not
    // downloading anything the child could wait for.
    let all: Vec<u32> = (0..PIECES).collect();
    for &n in &all {
        w.peer_mut("child").finished.insert(n);
        w.peer_mut("downloading").finished.insert(n);
    }
    assert!(w.score_of("downloading").is_none(), "nothing left to give");
    // Before the task's facts are published, only the origin reader counts.
    let mut w = World::new();
    w.task.content_length = None;
    w.holder("whole", info(0));
    w.peer_mut("whole").state = PeerState::Succeeded;
    w.host("d", "10.9.9.1", info(0));
    w.peer("downloading", "d", &[]);
    assert!(w.score_of("downloading").is_none());
    w.peer_mut("downloading").state = PeerState::BackToSource;
    assert!(w.score_of("downloading").is_some());
}
