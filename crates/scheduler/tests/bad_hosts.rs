//! A host whose slices fail verification at several other hosts is blocked fleet-wide for a
//! while: one accuser is not enough (it could be lying), a block survives a reconnect, and it
//! ends by itself.

use std::time::{Duration, Instant};

use pollen_proto::scheduler::{peer_event, ParentFailed, Register, TaskRequest};
mod common;

use common::{request, Commands};
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use tokio::sync::mpsc;

fn open(core: &mut Core, id: &str) -> Commands {
    common::host(core, id, "10.0.0.1", false)
}

fn join(core: &mut Core, task: &TaskRequest, peer: &str, host: &str) {
    let (tx, rx) = mpsc::channel(256);
    std::mem::forget(rx);
    core.register(
        Register {
            peer_id: peer.into(),
            host_id: host.into(),
            task: Some(task.clone()),
        },
        tx,
    )
    .expect("register");
}

fn failed(core: &mut Core, task: &TaskRequest, child: &str, parent: &str, bad_data: bool) {
    core.event(
        &task.task_id,
        child,
        peer_event::Event::ParentFailed(ParentFailed {
            parent_peer_id: parent.into(),
            reason: "slice 3 failed verification".into(),
            bad_data,
        }),
    );
}

/// Whether the "bad" host's entry in the model carries a block.
fn block_recorded(core: &Core) -> bool {
    core.model
        .hosts
        .get("bad")
        .expect("host")
        .blocked_until
        .is_some()
}

#[test]
fn a_host_reported_for_bad_data_by_two_others_is_blocked_for_a_while() {
    let cfg = SchedulerConfig {
        host_block_reporters: 2,
        host_block_duration: Duration::from_secs(600),
        ..Default::default()
    };
    let mut core = Core::new(cfg, 1);
    let _hosts: Vec<Commands> = ["bad", "r1", "r2"]
        .iter()
        .map(|h| open(&mut core, h))
        .collect();
    let (t1, t2) = (request("http://o/1"), request("http://o/2"));
    for (peer, host) in [("bad-1", "bad"), ("r1-1", "r1")] {
        join(&mut core, &t1, peer, host);
    }
    for (peer, host) in [("bad-2", "bad"), ("r2-2", "r2")] {
        join(&mut core, &t2, peer, host);
    }
    // One accuser, however often, and failures that are not bad data: no block.
    failed(&mut core, &t1, "r1-1", "bad-1", true);
    failed(&mut core, &t1, "r1-1", "bad-1", true);
    failed(&mut core, &t2, "r2-2", "bad-2", false);
    assert!(!core.host_blocked("bad"));
    assert_eq!(core.metrics.hosts_blocked.get(), 0);
    // A second host reports bad data, on another task: blocked fleet-wide, and counted.
    failed(&mut core, &t2, "r2-2", "bad-2", true);
    assert!(core.host_blocked("bad"));
    assert!(block_recorded(&core));
    assert_eq!(core.metrics.hosts_blocked.get(), 1);
    assert!(core
        .metrics_text()
        .contains("pollen_scheduler_blocked_hosts 1\n"));
    assert!(!core.host_blocked("r1") && !core.host_blocked("r2"));
    // Reconnecting does not lift it.
    let _again = open(&mut core, "bad");
    assert!(block_recorded(&core));
    // It ends by itself.
    core.collect_garbage(Instant::now() + Duration::from_secs(601));
    assert!(!core.host_blocked("bad"));
    assert!(!block_recorded(&core));
    assert!(core
        .metrics_text()
        .contains("pollen_scheduler_blocked_hosts 0\n"));
}
