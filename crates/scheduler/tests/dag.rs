//! With the DAG rule on, no sequence of joins, piece reports, parent requests, finishes and
//! departures ever leaves a cycle in the parent graph the scheduler records. Each peer acts
//! like a daemon: it keeps every parent it was offered (until that parent leaves) and names
//! them when it asks for more. Every peer's recorded children stay the inverse of the
//! parent edges.

use std::collections::{HashMap, HashSet};

use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, FinishedPiece, HostInfo, NeedParents, PeerFinished,
    PiecesFinished, Register, TaskRequest,
};
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestCaseError;
use tokio::sync::mpsc;

/// The task every test here uses: its id is the one its request describes, as the scheduler
/// checks.
static TID: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    pollen_scheduler::task_facts::expected_task_id(&TaskRequest {
        url: "http://o/x".into(),
        ..Default::default()
    })
    .expect("task id")
});

const HOSTS: usize = 12;
const PIECES: u32 = 16;

#[derive(Clone, Debug)]
enum Op {
    Join(usize),
    Piece(usize, u32),
    NeedParents(usize),
    Finish(usize),
    Leave(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..HOSTS).prop_map(Op::Join),
        (0..HOSTS, 0..PIECES).prop_map(|(h, n)| Op::Piece(h, n)),
        (0..HOSTS).prop_map(Op::NeedParents),
        (0..HOSTS).prop_map(Op::Finish),
        (0..HOSTS).prop_map(Op::Leave),
    ]
}

/// Finds a cycle among parent edges by depth-first search with colours.
fn has_cycle(edges: &HashMap<String, Vec<String>>) -> bool {
    fn visit<'a>(
        n: &'a str,
        edges: &'a HashMap<String, Vec<String>>,
        grey: &mut HashSet<&'a str>,
        black: &mut HashSet<&'a str>,
    ) -> bool {
        if black.contains(n) {
            return false;
        }
        if !grey.insert(n) {
            return true;
        }
        for p in edges.get(n).into_iter().flatten() {
            if visit(p, edges, grey, black) {
                return true;
            }
        }
        grey.remove(n);
        black.insert(n);
        false
    }
    let (mut grey, mut black) = (HashSet::new(), HashSet::new());
    edges.keys().any(|n| visit(n, edges, &mut grey, &mut black))
}

/// What one run of operations left behind.
struct Outcome {
    /// The most parent edges recorded at once.
    most_edges: usize,
    /// A cycle was seen at some step.
    cycle: bool,
}

/// Runs `ops` against a scheduler core with the DAG rule `dag`; checks after every step that
/// the child lists are the inverse of the parent edges.
fn run(ops: &[Op], dag: bool) -> Result<Outcome, TestCaseError> {
    let mut cfg = SchedulerConfig::default();
    cfg.evaluator.dag = dag;
    // Small K and many peers make the evaluator choose among conflicting edges.
    cfg.evaluator.candidate_limit = 3;
    let mut core = Core::new(cfg, 3);
    let mut keep = Vec::new();
    for h in 0..HOSTS {
        let (tx, rx) = mpsc::channel(1024);
        keep.push(rx);
        core.open_host(
            HostInfo {
                host_id: format!("h{h}"),
                upload_port: 4100,
                max_upload_connections: 1000,
                seed: h == 0,
                ..Default::default()
            },
            format!("127.0.0.{}", h + 1).parse().expect("ip"),
            tx,
        );
    }
    let mut joined: HashSet<usize> = HashSet::new();
    // Per peer: its announce answers, and the parents it holds (as a daemon would).
    let mut answers: HashMap<usize, PeerRx> = HashMap::new();
    let mut held: HashMap<usize, HashSet<String>> = HashMap::new();
    let mut outcome = Outcome {
        most_edges: 0,
        cycle: false,
    };
    for op in ops {
        let pid = |h: usize| format!("p{h}");
        match *op {
            Op::Join(h) if !joined.contains(&h) => {
                let (tx, rx) = mpsc::channel(1024);
                answers.insert(h, rx);
                held.insert(h, HashSet::new());
                core.register(
                    Register {
                        peer_id: pid(h),
                        host_id: format!("h{h}"),
                        task: Some(TaskRequest {
                            task_id: TID.clone(),
                            url: "http://o/x".into(),
                            ..Default::default()
                        }),
                    },
                    tx,
                )
                .expect("register");
                core.event(
                    TID.as_str(),
                    &pid(h),
                    peer_event::Event::ContentInfo(ContentInfo {
                        content_length: u64::from(PIECES) << 22,
                        piece_length: 1 << 22,
                    }),
                );
                joined.insert(h);
            }
            Op::Piece(h, n) if joined.contains(&h) => core.event(
                TID.as_str(),
                &pid(h),
                peer_event::Event::PiecesFinished(PiecesFinished {
                    pieces: vec![FinishedPiece {
                        number: n,
                        digest: vec![n as u8; 32],
                        ..Default::default()
                    }],
                }),
            ),
            Op::NeedParents(h) if joined.contains(&h) => {
                let mut parents: Vec<String> = held[&h].iter().cloned().collect();
                parents.sort();
                core.event(
                    TID.as_str(),
                    &pid(h),
                    peer_event::Event::NeedParents(NeedParents { parents }),
                );
            }
            Op::Finish(h) if joined.contains(&h) => core.event(
                TID.as_str(),
                &pid(h),
                peer_event::Event::Finished(PeerFinished {}),
            ),
            Op::Leave(h) if joined.remove(&h) => {
                core.disconnect(TID.as_str(), &pid(h));
                if let Some(rx) = answers.remove(&h) {
                    keep_peer(rx);
                }
                held.remove(&h);
                for parents in held.values_mut() {
                    parents.remove(&pid(h));
                }
            }
            _ => {}
        }
        for (h, rx) in &mut answers {
            while let Ok(Ok(ev)) = rx.try_recv() {
                if let Some(scheduler_event::Event::Parents(p)) = ev.event {
                    let set = held.entry(*h).or_default();
                    set.extend(p.parents.into_iter().map(|p| p.peer_id));
                }
            }
        }
        let edges: HashMap<String, Vec<String>> = core
            .model
            .tasks
            .get(TID.as_str())
            .map(|t| {
                t.peers
                    .values()
                    .map(|p| (p.id.clone(), t.parent_ids(p)))
                    .collect()
            })
            .unwrap_or_default();
        outcome.most_edges = outcome.most_edges.max(edges.values().map(Vec::len).sum());
        outcome.cycle |= has_cycle(&edges);
        // The child lists the rule walks down are the inverse of the parent edges.
        if let Some(t) = core.model.tasks.get(TID.as_str()) {
            for p in t.peers.values() {
                let mut children = p.children.clone();
                children.sort_unstable();
                let mut expected: Vec<u32> = t
                    .peers
                    .values()
                    .flat_map(|c| c.parents.iter().filter(|&&x| x == p.slot).map(|_| c.slot))
                    .collect();
                expected.sort_unstable();
                prop_assert_eq!(children, expected, "children of {}", p.id);
            }
        }
    }
    Ok(outcome)
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_parent_graph_stays_acyclic(ops in ops()) {
        let o = run(&ops, true)?;
        prop_assert!(!o.cycle, "a cycle was recorded with the DAG rule on");
    }
}

/// The property above is not vacuous: the same kind of operations records parent edges,
/// and without the DAG rule some of them close a cycle, so the property fails without it.
#[test]
fn without_the_rule_the_same_operations_make_cycles() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut with_edges, mut with_cycles) = (0, 0);
    for _ in 0..200 {
        let ops = ops().new_tree(&mut runner).expect("ops").current();
        let o = run(&ops, false).expect("child lists consistent");
        with_edges += usize::from(o.most_edges > 0);
        with_cycles += usize::from(o.cycle);
    }
    assert!(
        with_edges > 100,
        "only {with_edges} of 200 runs recorded a parent edge"
    );
    assert!(with_cycles > 0, "no run made a cycle without the DAG rule");
}

type PeerRx = mpsc::Receiver<Result<pollen_proto::scheduler::SchedulerEvent, tonic::Status>>;

/// Keeps a peer's answer channel open for the rest of the process (the scheduler would
/// forget a peer whose stream closed, which is not what this test is about).
fn keep_peer(rx: PeerRx) {
    std::mem::forget(rx);
}
