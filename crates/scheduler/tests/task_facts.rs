//! Attacks on a task's facts through the scheduler's core: a peer that speaks first cannot
//! set a task's length or piece digests, a liar is offered to nobody, and a task id must be
//! the one its request describes.

use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, FinishedPiece, HostInfo, NeedParents, PiecesFinished,
    Register, SchedulerEvent, TaskRequest,
};
mod common;

use common::{host, request};
use pollen_scheduler::core::Core;
use pollen_scheduler::SchedulerConfig;
use tokio::sync::mpsc;

type Events = mpsc::Receiver<Result<SchedulerEvent, tonic::Status>>;

const HONEST_LENGTH: u64 = 8 << 22;
const PIECE: u64 = 1 << 22;

fn join(core: &mut Core, req: &TaskRequest, peer: &str, host: &str) -> Events {
    let (tx, rx) = mpsc::channel(256);
    core.register(
        Register {
            peer_id: peer.into(),
            host_id: host.into(),
            task: Some(req.clone()),
        },
        tx,
    )
    .expect("register");
    rx
}

fn report(core: &mut Core, tid: &str, peer: &str, length: u64, digest: u8) {
    core.event(
        tid,
        peer,
        peer_event::Event::ContentInfo(ContentInfo {
            content_length: length,
            piece_length: PIECE,
        }),
    );
    core.event(
        tid,
        peer,
        peer_event::Event::PiecesFinished(PiecesFinished {
            pieces: (0..8)
                .map(|n| FinishedPiece {
                    number: n,
                    digest: vec![digest; 32],
                    ..Default::default()
                })
                .collect(),
        }),
    );
}

/// The lengths, digests and parents a peer was told, in order.
#[derive(Default, Debug)]
struct Told {
    lengths: Vec<u64>,
    digests: Vec<Vec<u8>>,
    parents: Vec<Vec<String>>,
}

fn told(rx: &mut Events) -> Told {
    let mut t = Told::default();
    while let Ok(Ok(ev)) = rx.try_recv() {
        match ev.event {
            Some(scheduler_event::Event::TaskInfo(i)) => t.lengths.push(i.content_length),
            Some(scheduler_event::Event::PieceDigests(d)) => {
                t.digests.extend(d.pieces.into_iter().map(|p| p.digest));
            }
            Some(scheduler_event::Event::Parents(p)) => t
                .parents
                .push(p.parents.into_iter().map(|p| p.peer_id).collect()),
            _ => {}
        }
    }
    t
}

#[test]
fn a_peer_that_reports_first_cannot_set_the_length_or_the_digests() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let req = request("http://origin/model.bin");
    let tid = req.task_id.clone();
    let mut seed_commands = host(&mut core, "seed", "10.0.0.1", true);
    host(&mut core, "liar", "10.0.0.2", false);
    host(&mut core, "honest", "10.0.0.3", false);
    // The liar registers first (a seed is triggered for it) and reports an 8 TiB length and
    // bogus digests before anyone read the origin.
    let mut liar = join(&mut core, &req, "liar-peer", "liar");
    assert!(
        matches!(seed_commands.try_recv(), Ok(Ok(_))),
        "a seed is triggered"
    );
    report(&mut core, &tid, "liar-peer", 8 << 40, 0xBA);
    let mut honest = join(&mut core, &req, "honest-peer", "honest");
    let t = told(&mut honest);
    assert!(
        t.lengths.is_empty() && t.digests.is_empty(),
        "nothing the liar said was relayed: {t:?}"
    );
    assert!(
        t.parents.iter().all(|p| p.is_empty()),
        "no parents before the task's facts are known: {t:?}"
    );
    // The triggered seed reads the origin: its facts are the task's.
    let _seed = join(&mut core, &req, "seed-peer", "seed");
    report(&mut core, &tid, "seed-peer", HONEST_LENGTH, 0x5E);
    let t = told(&mut honest);
    assert_eq!(t.lengths, vec![HONEST_LENGTH]);
    assert_eq!(t.digests.len(), 8);
    assert!(t.digests.iter().all(|d| d == &vec![0x5E; 32]), "{t:?}");
    // The liar repeats its digests: now they contradict the published ones, and it is
    // offered to nobody, although it claims every piece.
    report(&mut core, &tid, "liar-peer", 8 << 40, 0xBA);
    told(&mut liar);
    core.event(
        &tid,
        "honest-peer",
        peer_event::Event::NeedParents(NeedParents::default()),
    );
    let offers = told(&mut honest).parents;
    assert!(!offers.is_empty(), "the honest peer got parents");
    for offer in &offers {
        assert!(!offer.contains(&"liar-peer".to_string()), "{offers:?}");
    }
    assert!(offers.iter().any(|o| o.contains(&"seed-peer".to_string())));
}

/// Liars that say their piece digests or a length only once, before anyone read the origin,
/// are caught when the seed publishes the true ones: they are offered to nobody although
/// they never spoke again.
#[test]
fn digests_claimed_before_publication_are_checked_when_published() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let req = request("http://origin/model.bin");
    let tid = req.task_id.clone();
    let _seed_commands = host(&mut core, "seed", "10.0.0.1", true);
    host(&mut core, "liar", "10.0.0.2", false);
    host(&mut core, "honest", "10.0.0.3", false);
    host(&mut core, "early", "10.0.0.4", false);
    let _liar = join(&mut core, &req, "liar-peer", "liar");
    report(&mut core, &tid, "liar-peer", HONEST_LENGTH, 0xBA);
    // A second liar says only a length, another than the one the seed will publish.
    host(&mut core, "long", "10.0.0.5", false);
    let _long = join(&mut core, &req, "long-peer", "long");
    core.event(
        &tid,
        "long-peer",
        peer_event::Event::ContentInfo(ContentInfo {
            content_length: 8 << 40,
            piece_length: PIECE,
        }),
    );
    // An honest peer that held the pieces before (a scheduler restart) claims them early
    // too, with the true digests: it stays a parent.
    let _early = join(&mut core, &req, "early-peer", "early");
    report(&mut core, &tid, "early-peer", HONEST_LENGTH, 0x5E);
    let _seed = join(&mut core, &req, "seed-peer", "seed");
    report(&mut core, &tid, "seed-peer", HONEST_LENGTH, 0x5E);
    let mut honest = join(&mut core, &req, "honest-peer", "honest");
    core.event(
        &tid,
        "honest-peer",
        peer_event::Event::NeedParents(NeedParents::default()),
    );
    let offers: Vec<String> = told(&mut honest).parents.concat();
    assert!(!offers.contains(&"liar-peer".to_string()), "{offers:?}");
    assert!(!offers.contains(&"long-peer".to_string()), "{offers:?}");
    assert!(offers.contains(&"early-peer".to_string()), "{offers:?}");
    assert!(offers.contains(&"seed-peer".to_string()), "{offers:?}");
}

#[test]
fn a_trusted_reporter_is_still_capped() {
    let cfg = SchedulerConfig {
        max_content_length: 1 << 30,
        ..Default::default()
    };
    let mut core = Core::new(cfg, 1);
    let req = request("http://origin/huge.bin");
    let tid = req.task_id.clone();
    host(&mut core, "seed", "10.0.0.1", true);
    host(&mut core, "peer", "10.0.0.3", false);
    let mut peer = join(&mut core, &req, "peer-1", "peer");
    let _seed = join(&mut core, &req, "seed-peer", "seed");
    report(&mut core, &tid, "seed-peer", 2 << 30, 0x5E);
    assert!(
        told(&mut peer).lengths.is_empty(),
        "over the cap: not relayed"
    );
}

#[test]
fn a_register_whose_task_id_is_not_its_request_is_refused() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    host(&mut core, "h", "10.0.0.1", false);
    let victim = request("http://origin/private.bin");
    let mut forged = request("http://169.254.169.254/latest/meta-data/");
    forged.task_id = victim.task_id.clone();
    let (tx, _rx) = mpsc::channel(8);
    let refused = core.register(
        Register {
            peer_id: "p".into(),
            host_id: "h".into(),
            task: Some(forged),
        },
        tx,
    );
    let err = refused.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("does not match"),
        "{}",
        err.message()
    );
    assert!(core.model.tasks.is_empty(), "no task was made for it");
}

/// A host that names a seed's host id in its register cannot speak for the seed: a register
/// from another address than the seed's session is refused, and one that proves neither the
/// seed role (a certificate, under mutual TLS) nor holds a seed join token is refused even
/// from the same address.
#[test]
fn a_register_naming_a_seed_host_from_elsewhere_or_without_the_role_is_refused() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let token = pollen_core::join::hash("pjt_the_seeds_own_join_token");
    core.join.set_local([token.clone()].into());
    let (tx, _commands) = mpsc::channel(64);
    let seed_ip: std::net::IpAddr = "10.0.0.9".parse().expect("ip");
    let session = core.open_host(
        HostInfo {
            host_id: "seed-host".into(),
            ip: "10.0.0.9".into(),
            upload_port: 4100,
            max_upload_connections: 64,
            seed: true,
            ..Default::default()
        },
        seed_ip,
        tx,
    );
    core.set_session_origin("seed-host", session, seed_ip);
    let elsewhere: std::net::IpAddr = "10.0.0.66".parse().expect("ip");
    let e = core
        .check_register_origin("seed-host", Some(elsewhere), None, Some(&token))
        .expect_err("another address");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let peer_cert = pollen_tls::ProvenRoles(vec![pollen_tls::Role::Peer]);
    let e = core
        .check_register_origin("seed-host", Some(seed_ip), Some(&peer_cert), None)
        .expect_err("no seed role");
    assert!(e.message().contains("seed role"), "{}", e.message());
    let e = core
        .check_register_origin("seed-host", Some(seed_ip), None, None)
        .expect_err("same address, no TLS, no token");
    assert!(e.message().contains("join token"), "{}", e.message());
    let wrong = pollen_core::join::hash("pjt_a_token_nobody_issued");
    core.check_register_origin("seed-host", Some(seed_ip), None, Some(&wrong))
        .expect_err("a token nobody issued");
    let seed_cert = pollen_tls::ProvenRoles(vec![pollen_tls::Role::Peer, pollen_tls::Role::Seed]);
    core.check_register_origin("seed-host", Some(seed_ip), Some(&seed_cert), None)
        .expect("the seed itself, under TLS");
    core.check_register_origin("seed-host", Some(seed_ip), None, Some(&token))
        .expect("the seed itself, with its token");
    core.check_register_origin("unknown-host", Some(elsewhere), None, None)
        .expect("a host without a session is not a seed");
}

/// Early claims are bounded: a liar claiming every piece number a task could have holds
/// scheduler memory only until the true layout is published (claims past it are dropped),
/// and all of it goes when the task does.
#[test]
fn early_claims_past_the_published_layout_are_dropped() {
    let mut core = Core::new(SchedulerConfig::default(), 1);
    let req = request("http://origin/model.bin");
    let tid = req.task_id.clone();
    let _seed_commands = host(&mut core, "seed", "10.0.0.1", true);
    host(&mut core, "liar", "10.0.0.2", false);
    let _liar = join(&mut core, &req, "liar-peer", "liar");
    core.event(
        &tid,
        "liar-peer",
        peer_event::Event::PiecesFinished(PiecesFinished {
            pieces: (0..pollen_scheduler::model::MAX_EARLY_CLAIMS as u32 + 10)
                .map(|n| FinishedPiece {
                    number: n,
                    digest: vec![0xBA; 32],
                    ..Default::default()
                })
                .collect(),
        }),
    );
    assert_eq!(
        core.early_claims_held(),
        pollen_scheduler::model::MAX_EARLY_CLAIMS,
        "capped per task"
    );
    let _seed = join(&mut core, &req, "seed-peer", "seed");
    core.event(
        &tid,
        "seed-peer",
        peer_event::Event::ContentInfo(ContentInfo {
            content_length: HONEST_LENGTH,
            piece_length: PIECE,
        }),
    );
    assert_eq!(
        core.early_claims_held(),
        8,
        "only the task's 8 pieces are left"
    );
    report(&mut core, &tid, "seed-peer", HONEST_LENGTH, 0x5E);
    assert_eq!(core.early_claims_held(), 0, "checked and dropped");
}
