//! A host id is only a name until per-host certificates bind it: a host that names another's
//! id cannot take over its live session from another address, nor report load for it.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::host;
use pollen_proto::scheduler::HostLoad;
use pollen_scheduler::core::{Core, TAKEOVER_QUIET};
use pollen_scheduler::SchedulerConfig;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn load(id: &str, connections: u32) -> HostLoad {
    HostLoad {
        host_id: id.into(),
        upload_connections: connections,
        ..Default::default()
    }
}

#[test]
fn a_live_host_session_is_not_taken_over_from_another_address() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let _victim = host(&mut core, "victim", "10.0.0.1", false);
    let session = core.model.hosts.get("victim").expect("host").session;
    core.set_session_origin("victim", session, ip("10.0.0.1"));
    core.report_load(&load("victim", 3), Some(ip("10.0.0.1")))
        .expect("its own load report");

    // Another address, while the victim is heard from: refused, naming the rule.
    let e = core
        .check_takeover("victim", Some(ip("10.0.0.66")), Instant::now())
        .expect_err("taken over");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("live session"), "{}", e.message());
    // Nor may it report the victim's load (to make it look idle or full).
    let e = core
        .report_load(&load("victim", 0), Some(ip("10.0.0.66")))
        .expect_err("load from elsewhere");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        core.model
            .hosts
            .get("victim")
            .expect("host")
            .load
            .upload_connections,
        3
    );

    // The daemon itself reconnecting from its address is let in; so is anyone once the old
    // session has gone quiet (the daemon moved, or died without closing it).
    core.check_takeover("victim", Some(ip("10.0.0.1")), Instant::now())
        .expect("reconnect");
    let later = Instant::now() + TAKEOVER_QUIET + Duration::from_secs(1);
    core.check_takeover("victim", Some(ip("10.0.0.66")), later)
        .expect("a quiet session");
    core.check_takeover("nobody", Some(ip("10.0.0.66")), Instant::now())
        .expect("an unknown id");
}

/// Under mutual TLS a certificate may name the one host it was issued to. A connection
/// holding it may speak for that host only; once a host id was proven so, a connection that
/// does not prove it (a shared peer certificate) may no longer speak for it, session, register
/// or load report; with `require_host_certificates`, a certificate naming no host is refused.
#[test]
fn a_host_id_proven_by_a_certificate_is_reserved_to_it() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let e = core
        .check_host_binding("node-b", Some("node-a"), true, "a host session")
        .expect_err("another host's certificate");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("issued to host node-a"),
        "{}",
        e.message()
    );
    core.check_host_binding("node-a", None, true, "a host session")
        .expect("not yet proven: a shared certificate may still speak for it");
    core.check_host_binding("node-a", Some("node-a"), true, "a host session")
        .expect("its own certificate");
    for what in ["a host session", "a register", "a load report"] {
        let e = core
            .check_host_binding("node-a", None, true, what)
            .expect_err("proven before");
        assert!(e.message().contains("proved its id"), "{}", e.message());
    }
    core.check_host_binding("node-c", None, true, "a host session")
        .expect("a host never proven");

    let mut strict = Core::new(
        SchedulerConfig {
            require_host_certificates: true,
            ..Default::default()
        },
        1,
    );
    let e = strict
        .check_host_binding("node-c", None, true, "a host session")
        .expect_err("no host in the certificate");
    assert!(e.message().contains("--host-id"), "{}", e.message());
    strict
        .check_host_binding("node-c", None, false, "a host session")
        .expect("plain TCP proves nothing either way");
    strict
        .check_host_binding("node-c", Some("node-c"), true, "a host session")
        .expect("its own certificate");
}
