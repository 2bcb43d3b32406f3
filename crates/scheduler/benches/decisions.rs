//! Scheduler decision throughput: 5,000 live peers on 100 tasks, each with part of its task,
//! then a stream of decisions (a new peer registering, or a running peer asking for parents)
//! through the real scheduler core, on one thread.
//!
//! Criterion reports the mean time per decision; a second pass times 200,000 decisions one by
//! one and prints decisions per second and the p50 / p99 / max latency. Both run with the
//! default settings, then again with the DAG rule on (`evaluator.dag`, off by default).
//! Run: `cargo bench -p pollen-scheduler --bench decisions`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, FinishedPiece, HostInfo, NeedParents, PiecesFinished,
    Register, TaskRequest,
};
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use tokio::sync::mpsc;

const TASKS: usize = 100;
const PEERS: usize = 5_000;
const PIECES: u32 = 256;

/// Every task's request, with the id the scheduler checks it against (made once, so the
/// decisions measured do not pay for hashing URLs).
static REQUESTS: std::sync::LazyLock<Vec<TaskRequest>> = std::sync::LazyLock::new(|| {
    (0..TASKS)
        .map(|task| {
            let mut req = TaskRequest {
                url: format!("http://origin/{task}"),
                ..Default::default()
            };
            req.task_id = pollen_scheduler::task_facts::expected_task_id(&req).expect("task id");
            req
        })
        .collect()
});

fn request(task: usize) -> TaskRequest {
    REQUESTS[task].clone()
}

fn register(core: &mut Core, task: usize, peer: usize, host: usize) {
    let (tx, _rx) = mpsc::channel(8);
    let reg = Register {
        peer_id: format!("p{peer}"),
        host_id: format!("h{host}"),
        task: Some(request(task)),
    };
    core.register(reg, tx).expect("valid register");
}

fn open_host(core: &mut Core, h: usize, seed: bool) {
    let (tx, rx) = mpsc::channel(8);
    std::mem::forget(rx); // keep the command channel open for seed triggers
    let ip = format!("10.{}.{}.{}", h / 65536, (h / 256) % 256, h % 256);
    core.open_host(
        HostInfo {
            host_id: format!("h{h}"),
            ip: ip.clone(),
            upload_port: 4100,
            seed,
            max_upload_connections: 64,
            ..Default::default()
        },
        ip.parse().expect("ip"),
        tx,
    );
}

fn finished(pieces: impl Iterator<Item = u32>) -> peer_event::Event {
    peer_event::Event::PiecesFinished(PiecesFinished {
        pieces: pieces
            .map(|n| FinishedPiece {
                number: n,
                digest: vec![n as u8; 32],
                ..Default::default()
            })
            .collect(),
    })
}

/// A scheduler with `cfg` holding `PEERS` peers spread over `TASKS` tasks, each peer on its
/// own host. The first peer of each task is sent to the origin (no seed host is open yet),
/// publishes the task's length and digests and holds all of it; every other peer holds a
/// random part.
fn populated(cfg: &SchedulerConfig) -> Core {
    // The benchmark's new peers pile up on the same hosts over millions of iterations; the
    // per-host cap is not what it measures.
    let cfg = SchedulerConfig {
        max_peers_per_host: 0,
        ..cfg.clone()
    };
    let mut core = Core::new(cfg, 7);
    let mut rng = StdRng::seed_from_u64(11);
    for h in 0..PEERS {
        open_host(&mut core, h, false);
    }
    for t in 0..TASKS {
        register(&mut core, t, t, t);
        let (tid, pid) = (&REQUESTS[t].task_id, format!("p{t}"));
        core.event(
            tid,
            &pid,
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: u64::from(PIECES) << 22,
                piece_length: 4 << 20,
            }),
        );
        core.event(tid, &pid, finished(0..PIECES));
    }
    for h in PEERS..PEERS + TASKS {
        open_host(&mut core, h, true);
    }
    for p in TASKS..PEERS {
        let t = p % TASKS;
        register(&mut core, t, p, p);
        let have = rng.random_range(0..PIECES);
        let pieces: Vec<u32> = (0..PIECES)
            .filter(|_| rng.random_ratio(have, PIECES))
            .collect();
        core.event(
            &REQUESTS[t].task_id,
            &format!("p{p}"),
            finished(pieces.into_iter()),
        );
    }
    // The decisions measured must be real ones: a peer that asks is offered parents.
    let (tx, mut rx) = mpsc::channel(8);
    let reg = Register {
        peer_id: "probe".into(),
        host_id: "h0".into(),
        task: Some(request(1)),
    };
    core.register(reg, tx).expect("valid register");
    let offered = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|ev| match ev.ok()?.event? {
            scheduler_event::Event::Parents(p) => Some(p.parents.len()),
            _ => None,
        })
        .sum::<usize>();
    assert!(
        offered > 0,
        "a new peer was offered no parent: the benchmark would time empty decisions"
    );
    core
}

/// One decision: every 10th a new peer registers (and is scheduled), the rest are running
/// peers asking for parents.
fn decide(core: &mut Core, i: usize) {
    let p = i % PEERS;
    if i.is_multiple_of(10) {
        register(core, p % TASKS, PEERS + TASKS + i, p);
    } else {
        core.event(
            &REQUESTS[p % TASKS].task_id,
            &format!("p{p}"),
            peer_event::Event::NeedParents(NeedParents::default()),
        );
    }
}

fn bench(c: &mut Criterion) {
    let mut dag = SchedulerConfig::default();
    dag.evaluator.dag = true;
    for (name, cfg) in [("default", SchedulerConfig::default()), ("dag", dag)] {
        let mut core = populated(&cfg);
        let mut i = 0usize;
        c.bench_function(&format!("decision (5,000 peers, 100 tasks, {name})"), |b| {
            b.iter(|| {
                decide(&mut core, i);
                i += 1;
            });
        });

        let mut core = populated(&cfg);
        let n = 200_000;
        let mut lat: Vec<Duration> = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let t = Instant::now();
            decide(&mut core, i);
            lat.push(t.elapsed());
        }
        let total = start.elapsed();
        lat.sort();
        let q = |f: f64| lat[((n - 1) as f64 * f) as usize];
        println!(
            "decisions ({name}): {n} in {total:.2?} = {:.0}/s on one thread; latency p50 {:?}, p99 {:?}, max {:?}",
            n as f64 / total.as_secs_f64(),
            q(0.5),
            q(0.99),
            lat[n - 1]
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
