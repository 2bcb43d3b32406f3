//! One host cannot make the scheduler hold unbounded state: past `max_peers_per_host` its
//! registers are refused with a clear status, other hosts are not affected, and the count
//! goes down as its peers leave.

#![allow(clippy::result_large_err)] // tonic::Status is what register returns.

use pollen_proto::scheduler::{peer_event, PeerFailed, Register};
mod common;

use common::request;
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use tokio::sync::mpsc;

fn open_host(core: &mut Core, id: &str) -> common::Commands {
    common::host(core, id, "10.0.0.1", false)
}

fn register(core: &mut Core, host: &str, peer: &str, url: &str) -> Result<(), tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    std::mem::forget(rx); // the peer's stream stays open
    core.register(
        Register {
            peer_id: peer.into(),
            host_id: host.into(),
            task: Some(request(url)),
        },
        tx,
    )
    .map(|_| ())
}

#[test]
fn a_host_past_its_peer_cap_is_refused_and_others_are_not() {
    let cfg = SchedulerConfig {
        max_peers_per_host: 3,
        ..Default::default()
    };
    let mut core = Core::new(cfg, 1);
    let _h = open_host(&mut core, "greedy");
    let _o = open_host(&mut core, "other");
    for i in 0..3 {
        register(
            &mut core,
            "greedy",
            &format!("g{i}"),
            &format!("http://o/{i}"),
        )
        .expect("under the cap");
    }
    // The same peer registering again is not a new one.
    register(&mut core, "greedy", "g0", "http://o/0").expect("a known peer");
    assert_eq!(core.peers_of_host("greedy"), 3);
    let e = register(&mut core, "greedy", "g3", "http://o/3").expect_err("over the cap");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(
        e.message().contains("max_peers_per_host"),
        "{}",
        e.message()
    );
    assert!(
        !core
            .model
            .tasks
            .contains_key(&request("http://o/3").task_id),
        "a refused register creates no task"
    );
    register(&mut core, "other", "o0", "http://o/3").expect("another host is not capped");
    // A peer that leaves makes room.
    let tid = request("http://o/1").task_id;
    core.event(
        &tid,
        "g1",
        peer_event::Event::Failed(PeerFailed {
            reason: "gone".into(),
        }),
    );
    assert_eq!(core.peers_of_host("greedy"), 2);
    register(&mut core, "greedy", "g4", "http://o/4").expect("room again");
}
