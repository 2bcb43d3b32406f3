//! The scheduler's decisions through its core: affinity and speed decide the ranking, and a
//! seed that fails mid-task is replaced by another seed.

use pollen_proto::scheduler::{
    host_command, peer_event, scheduler_event, ContentInfo, FinishedPiece, HostCommand, HostInfo,
    NeedParents, PeerFailed, PiecesFinished, Register, SchedulerEvent, TaskRequest,
};
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use tokio::sync::mpsc;

/// The task every test here uses: its id is the one its request describes, as the scheduler
/// checks.
static TID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    pollen_scheduler::task_facts::expected_task_id(&TaskRequest {
        url: "http://origin/x".into(),
        ..Default::default()
    })
    .expect("task id")
});

#[derive(Debug, PartialEq)]
enum Answer {
    Parents(Vec<String>),
    Origin,
    Nothing,
}

type Events = mpsc::Receiver<Result<SchedulerEvent, tonic::Status>>;
type Commands = mpsc::Receiver<Result<HostCommand, tonic::Status>>;

struct World {
    core: Core,
    commands: Vec<(String, Commands)>,
    streams: Vec<Events>,
    sessions: Vec<(String, u64)>,
}

impl World {
    fn new(candidate_limit: usize) -> Self {
        let mut cfg = SchedulerConfig::default();
        cfg.evaluator.candidate_limit = candidate_limit;
        Self {
            core: Core::new(cfg, 5),
            commands: Vec::new(),
            streams: Vec::new(),
            sessions: Vec::new(),
        }
    }

    fn host(&mut self, id: &str, ip: &str, idc: &str, location: &str, seed: bool) {
        let (tx, rx) = mpsc::channel(64);
        self.commands.push((id.to_string(), rx));
        let session = self.core.open_host(
            HostInfo {
                host_id: id.into(),
                ip: ip.into(),
                upload_port: 4100,
                max_upload_connections: 64,
                idc: idc.into(),
                location: location.into(),
                seed,
                ..Default::default()
            },
            ip.parse().expect("ip"),
            tx,
        );
        self.sessions.push((id.to_string(), session));
    }

    fn session(&self, host: &str) -> u64 {
        self.sessions
            .iter()
            .rev()
            .find(|(h, _)| h == host)
            .map(|(_, s)| *s)
            .expect("host")
    }

    /// Registers a peer; returns its answer stream's index.
    fn join(&mut self, peer: &str, host: &str) -> usize {
        let (tx, rx) = mpsc::channel(256);
        self.core
            .register(
                Register {
                    peer_id: peer.into(),
                    host_id: host.into(),
                    task: Some(TaskRequest {
                        task_id: TID.clone(),
                        url: "http://origin/x".into(),
                        ..Default::default()
                    }),
                },
                tx,
            )
            .expect("register");
        self.streams.push(rx);
        self.streams.len() - 1
    }

    fn pieces(&mut self, peer: &str, pieces: &[u32], parent: &str, cost_ms: u32) {
        self.core.event(
            TID.as_str(),
            peer,
            peer_event::Event::PiecesFinished(PiecesFinished {
                pieces: pieces
                    .iter()
                    .map(|n| FinishedPiece {
                        number: *n,
                        digest: vec![*n as u8; 32],
                        parent_peer_id: parent.into(),
                        cost_ms,
                    })
                    .collect(),
            }),
        );
    }

    /// Reports that `peer` failed for `reason`.
    fn fail(&mut self, peer: &str, reason: &str) {
        self.core.event(
            TID.as_str(),
            peer,
            peer_event::Event::Failed(PeerFailed {
                reason: reason.into(),
            }),
        );
    }

    /// A holder of every piece of an 8-piece task.
    fn holder(&mut self, peer: &str, host: &str) {
        self.seed_reading(peer, host, &(0..8).collect::<Vec<_>>());
    }

    /// A peer of an 8-piece task that has read `pieces` from the origin so far.
    fn seed_reading(&mut self, peer: &str, host: &str, pieces: &[u32]) {
        self.join(peer, host);
        self.core.event(
            TID.as_str(),
            peer,
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: 8 << 22,
                piece_length: 1 << 22,
            }),
        );
        self.pieces(peer, pieces, "", 0);
    }

    /// What stream `i` was last told since the previous look.
    fn answer(&mut self, i: usize) -> Answer {
        let mut last = Answer::Nothing;
        while let Ok(Ok(ev)) = self.streams[i].try_recv() {
            match ev.event {
                Some(scheduler_event::Event::Parents(p)) => {
                    last = Answer::Parents(p.parents.into_iter().map(|p| p.peer_id).collect());
                }
                Some(scheduler_event::Event::BackToSource(_)) => last = Answer::Origin,
                _ => {}
            }
        }
        last
    }

    fn triggered(&mut self, host: &str) -> bool {
        let (_, rx) = self
            .commands
            .iter_mut()
            .find(|(h, _)| h == host)
            .expect("host");
        let mut any = false;
        while let Ok(Ok(cmd)) = rx.try_recv() {
            any |= matches!(cmd.command, Some(host_command::Command::Download(_)));
        }
        any
    }
}

#[test]
fn a_parent_in_the_same_idc_and_location_is_preferred() {
    let mut w = World::new(1);
    w.host("child", "10.1.0.1", "idc-a", "eu|west|r1", false);
    w.host("far", "10.2.0.2", "idc-b", "us|east|r9", false);
    w.host("near", "10.3.0.3", "idc-a", "eu|west|r2", false);
    w.holder("far-peer", "far");
    w.holder("near-peer", "near");
    let s = w.join("child-peer", "child");
    assert_eq!(w.answer(s), Answer::Parents(vec!["near-peer".to_string()]));
}

#[test]
fn a_parent_whose_pieces_come_ten_times_slower_is_ranked_below_the_fast_one() {
    let mut w = World::new(1);
    for h in ["child", "slow", "fast", "other"] {
        w.host(h, &format!("10.9.{}.1", h.len()), "", "", false);
    }
    w.holder("a-slow-peer", "slow");
    w.holder("b-fast-peer", "fast");
    // Another peer reports what each parent's pieces cost it.
    w.join("other-peer", "other");
    for n in 0..4 {
        w.pieces("other-peer", &[n], "b-fast-peer", 100);
        w.pieces("other-peer", &[n + 4], "a-slow-peer", 1000);
    }
    // It leaves before finishing, so it is no candidate itself.
    w.core.disconnect(TID.as_str(), "other-peer");
    let s = w.join("child-peer", "child");
    assert_eq!(
        w.answer(s),
        Answer::Parents(vec!["b-fast-peer".to_string()])
    );
}

#[test]
fn a_seed_that_fails_mid_task_is_replaced_by_another_seed() {
    let mut w = World::new(4);
    w.host("child", "10.0.0.1", "", "", false);
    w.host("seed-1", "10.0.0.2", "", "", true);
    w.host("seed-2", "10.0.0.3", "", "", true);
    let s = w.join("child-peer", "child");
    let first = if w.triggered("seed-1") {
        "seed-1"
    } else {
        assert!(w.triggered("seed-2"), "no seed was triggered");
        "seed-2"
    };
    let second = if first == "seed-1" {
        "seed-2"
    } else {
        "seed-1"
    };
    // The triggered seed registers, is sent to the origin, then fails.
    w.join("seed-peer", first);
    w.fail("seed-peer", "origin reset the connection");
    assert!(w.triggered(second), "the other seed was not triggered");
    // The child is still waiting (not sent to the origin) while the new seed works.
    assert_eq!(w.answer(s), Answer::Nothing);
    // When every seed has failed, the child goes to the origin itself.
    w.join("seed-peer-2", second);
    w.fail("seed-peer-2", "origin reset the connection");
    assert_eq!(w.answer(s), Answer::Origin);
}

#[test]
fn a_task_whose_peers_are_all_gone_is_forgotten_after_its_ttl_and_a_live_one_is_kept() {
    let mut w = World::new(4);
    w.host("a", "10.0.0.1", "", "", false);
    w.holder("done-peer", "a");
    w.core.event(
        TID.as_str(),
        "done-peer",
        peer_event::Event::Finished(Default::default()),
    );
    let later = std::time::Instant::now() + std::time::Duration::from_secs(2 * 3600);
    // The finished peer's stream is still open: the task is live.
    assert_eq!(w.core.collect_garbage(later), 0);
    w.core.disconnect(TID.as_str(), "done-peer");
    // Closed, but not quiet for long yet.
    assert_eq!(w.core.collect_garbage(std::time::Instant::now()), 0);
    assert_eq!(w.core.collect_garbage(later), 1);
    assert!(w.core.model.tasks.is_empty());
}

/// Hosts a and b and a seed host s; a-peer has joined, and s was triggered for the task.
fn a_peer_and_a_triggered_seed() -> (World, usize) {
    let mut w = World::new(4);
    w.host("a", "10.0.0.1", "", "", false);
    w.host("b", "10.0.0.2", "", "", false);
    w.host("s", "10.0.0.3", "", "", true);
    let a = w.join("a-peer", "a");
    assert!(w.triggered("s"), "the seed was not triggered");
    (w, a)
}

/// As [`a_peer_and_a_triggered_seed`], with b-peer joined too.
fn two_peers_and_a_triggered_seed() -> (World, usize, usize) {
    let (mut w, a) = a_peer_and_a_triggered_seed();
    let b = w.join("b-peer", "b");
    (w, a, b)
}

#[test]
fn with_the_seed_gone_a_peer_holding_nothing_useful_is_not_offered_and_the_child_goes_to_the_origin(
) {
    let (mut w, a) = a_peer_and_a_triggered_seed();
    w.seed_reading("seed-peer", "s", &[0]);
    // b-peer is downloading too, and gets piece 0 as a-peer does.
    w.join("b-peer", "b");
    w.pieces("a-peer", &[0], "seed-peer", 100);
    w.pieces("b-peer", &[0], "seed-peer", 100);
    w.answer(a);
    w.fail("seed-peer", "origin reset the connection");
    // Pieces 1..8 exist nowhere now: b-peer cannot give a-peer anything.
    w.core.event(
        TID.as_str(),
        "a-peer",
        peer_event::Event::NeedParents(Default::default()),
    );
    assert_eq!(w.answer(a), Answer::Origin);
}

#[test]
fn when_the_only_source_leaves_one_peer_goes_to_the_origin_and_the_others_do_not() {
    let (mut w, a) = a_peer_and_a_triggered_seed();
    w.host("c", "10.0.0.4", "", "", false);
    w.seed_reading("seed-peer", "s", &[0, 1, 2]);
    let b = w.join("b-peer", "b");
    let c = w.join("c-peer", "c");
    // The seed handed out different pieces: the peers still have something to trade.
    w.pieces("a-peer", &[0, 1], "seed-peer", 100);
    w.pieces("b-peer", &[1], "seed-peer", 100);
    w.pieces("c-peer", &[2], "seed-peer", 100);
    for i in [a, b, c] {
        w.answer(i);
    }
    w.fail("seed-peer", "killed");
    // Pieces 3..8 exist nowhere: the peer holding the most reads the rest from the origin
    // at once; the others are not sent there.
    let answers = [w.answer(a), w.answer(b), w.answer(c)];
    assert_eq!(answers[0], Answer::Origin, "{answers:?}");
    assert!(
        answers[1..].iter().all(|x| *x != Answer::Origin),
        "{answers:?}"
    );
    // Asking again, the others get a parent (the peer at the origin), not the origin.
    for (peer, i) in [("b-peer", b), ("c-peer", c)] {
        w.core.event(
            TID.as_str(),
            peer,
            peer_event::Event::NeedParents(Default::default()),
        );
        assert_ne!(w.answer(i), Answer::Origin, "{peer} was sent to the origin");
    }
}

fn sent_to_origin(answers: &[Answer]) -> usize {
    answers.iter().filter(|x| **x == Answer::Origin).count()
}

#[test]
fn a_seed_gone_before_its_peer_registered_does_not_leave_the_task_waiting() {
    let (mut w, a, b) = two_peers_and_a_triggered_seed();
    assert_eq!(w.answer(a), Answer::Nothing);
    assert_eq!(w.answer(b), Answer::Nothing);
    // The seed host dies before registering its peer; with no other seed, exactly one of
    // the waiting peers reads the origin.
    w.core.close_host("s", w.session("s"));
    let answers = [w.answer(a), w.answer(b)];
    assert_eq!(sent_to_origin(&answers), 1, "{answers:?}");
}

#[test]
fn a_seed_that_finished_and_then_died_is_replaced_by_one_peer_at_the_origin() {
    let (mut w, a, b) = two_peers_and_a_triggered_seed();
    w.holder("seed-peer", "s");
    w.core.event(
        TID.as_str(),
        "seed-peer",
        peer_event::Event::Finished(Default::default()),
    );
    w.pieces("a-peer", &[0, 1], "seed-peer", 100);
    w.pieces("b-peer", &[2], "seed-peer", 100);
    w.answer(a);
    w.answer(b);
    // The seed held everything; with it gone, pieces 3..8 exist nowhere.
    w.core.close_host("s", w.session("s"));
    let answers = [w.answer(a), w.answer(b)];
    assert_eq!(sent_to_origin(&answers), 1, "{answers:?}");
}

#[test]
fn a_peer_registered_before_its_host_session_is_offered_once_the_session_opens() {
    let mut w = World::new(4);
    w.host("child-host", "10.1.0.1", "", "", false);
    // The daemon's announce overtook its host session: the scheduler cannot offer it yet.
    w.holder("early", "late-host");
    w.host("late-host", "10.1.0.2", "", "", false);
    let child = w.join("child", "child-host");
    assert_eq!(w.answer(child), Answer::Parents(vec!["early".into()]));
}

#[test]
fn a_new_host_in_a_departed_hosts_slot_does_not_inherit_its_peers() {
    let mut w = World::new(4);
    w.host("child-host", "10.1.0.1", "", "", false);
    w.host("gone-host", "10.1.0.2", "", "", false);
    w.holder("gone-peer", "gone-host");
    w.core.close_host("gone-host", w.session("gone-host"));
    // The departed host's slot is free and the next host takes it.
    w.host("new-host", "10.1.0.3", "", "", false);
    w.holder("new-peer", "new-host");
    let child = w.join("child", "child-host");
    assert_eq!(w.answer(child), Answer::Parents(vec!["new-peer".into()]));
    let parents = w.core.parents_of(TID.as_str(), "child");
    assert_eq!(parents, vec!["new-peer".to_string()]);
}

#[test]
fn a_seed_host_that_arrives_after_every_seed_failed_is_used_for_the_task() {
    let mut w = World::new(4);
    w.host("child", "10.0.0.1", "", "", false);
    w.host("other", "10.0.0.2", "", "", false);
    w.host("seed-1", "10.0.0.3", "", "", true);
    let a = w.join("a-peer", "child");
    assert!(w.triggered("seed-1"));
    w.join("seed-peer", "seed-1");
    w.fail("seed-peer", "origin reset the connection");
    // Every seed was tried: the peer reads the origin and the next one fetches from it.
    assert_eq!(w.answer(a), Answer::Origin);
    let b = w.join("b-peer", "other");
    assert_eq!(w.answer(b), Answer::Parents(vec!["a-peer".into()]));
    // A new seed host comes, then the peer at the origin fails: the new seed is asked.
    w.host("seed-2", "10.0.0.4", "", "", true);
    w.fail("a-peer", "origin reset the connection");
    assert!(w.triggered("seed-2"), "the new seed host was not asked");
    assert_eq!(w.answer(b), Answer::Nothing, "b waits for the new seed");
}

#[test]
fn a_peer_naming_its_parents_is_offered_others_and_keeps_its_own_when_none_are_left() {
    let mut w = World::new(2);
    for (i, h) in ["child", "p1", "p2", "p3"].into_iter().enumerate() {
        w.host(h, &format!("10.8.{i}.1"), "", "", false);
    }
    for p in ["p1", "p2", "p3"] {
        w.holder(&format!("{p}-peer"), p);
    }
    let s = w.join("child-peer", "child");
    let Answer::Parents(first) = w.answer(s) else {
        panic!("no parents offered at registration");
    };
    assert_eq!(first.len(), 2);
    let need = |w: &mut World, parents: Vec<String>| {
        w.core.event(
            TID.as_str(),
            "child-peer",
            peer_event::Event::NeedParents(NeedParents { parents }),
        );
    };
    // Naming the two it has, it is offered the third and only the third.
    need(&mut w, first.clone());
    let Answer::Parents(more) = w.answer(s) else {
        panic!("no parents offered");
    };
    assert_eq!(more.len(), 1, "{more:?}");
    assert!(
        !first.contains(&more[0]),
        "{first:?} offered again: {more:?}"
    );
    // The scheduler's record holds all three: the two kept and the one added.
    let mut all: Vec<String> = first.into_iter().chain(more).collect();
    all.sort();
    let recorded = |w: &World| {
        let mut r = w.core.parents_of(TID.as_str(), "child-peer");
        r.sort();
        r
    };
    assert_eq!(recorded(&w), all);
    // With every holder named, nothing is left to offer, and the peer is not sent to the
    // origin: it keeps the parents it has, and they stay its recorded edges.
    need(&mut w, all.clone());
    assert_eq!(w.answer(s), Answer::Nothing);
    assert_eq!(recorded(&w), all);
    // Naming none, it is offered the best ones again.
    need(&mut w, Vec::new());
    assert!(matches!(w.answer(s), Answer::Parents(p) if p.len() == 2));
}
