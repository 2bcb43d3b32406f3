//! The manager's gRPC service, as schedulers and daemons use it, on both databases.

mod common;

use std::time::{Duration, Instant};

use common::{ShowToken, TestManager};
use pollen_proto::manager::manager_client::ManagerClient;
use pollen_proto::manager::{
    daemon_message, manager_message, DaemonHello, DaemonMessage, Placement, SchedulerInfo,
    SchedulerKeepalive,
};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = ManagerClient<InterceptedService<Channel, ShowToken>>;

/// A client showing `token`.
async fn client_with(m: &TestManager, token: Option<&str>) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(m.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    ManagerClient::with_interceptor(
        channel,
        ShowToken(token.map(|t| t.parse().expect("a token is ASCII"))),
    )
}

/// A client showing the manager's first join token (both roles).
async fn client(m: &TestManager) -> Client {
    client_with(m, Some(&m.join_token())).await
}

fn scheduler(url: &str, cluster: i64) -> SchedulerInfo {
    SchedulerInfo {
        scheduler_cluster_id: cluster,
        hostname: "sched".into(),
        ip: "127.0.0.9".into(),
        port: 8002,
        url: url.into(),
        ..Default::default()
    }
}

async fn next_placement(
    s: &mut tonic::Streaming<pollen_proto::manager::ManagerMessage>,
) -> Placement {
    let m = tokio::time::timeout(Duration::from_secs(30), s.message())
        .await
        .expect("a placement in time")
        .expect("stream ok")
        .expect("stream open");
    match m.message {
        Some(manager_message::Message::Placement(p)) => p,
        other => panic!("expected a placement, got {other:?}"),
    }
}

/// Schedulers register into the default cluster, get its config with every keepalive (so a
/// change reaches them), and are marked inactive when they fall silent; daemons get a
/// placement at once and a new one whenever the cluster's schedulers change.
async fn schedulers_and_daemons_follow_the_manager(m: TestManager) {
    let admin = m.admin().await;
    let mut c = client(&m).await;
    let s1 = c
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect("register")
        .into_inner();
    let cluster = s1.scheduler_cluster_id;
    assert_eq!(
        s1.config.as_ref().map(|c| c.candidate_parent_limit),
        Some(6)
    );

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DaemonMessage {
        message: Some(daemon_message::Message::Hello(DaemonHello {
            host_id: "host-1".into(),
            hostname: "node-1".into(),
            ip: "127.0.0.20".into(),
            upload_port: 4000,
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let mut session = c
        .daemon_session(ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let p = next_placement(&mut session).await;
    assert_eq!(p.scheduler_cluster_id, cluster);
    assert_eq!(p.scheduler_urls, vec!["http://127.0.0.9:8002".to_string()]);

    // Dynamic config: change the cluster; the next keepalive carries it.
    let r = admin
        .put(
            &format!("/api/v1/scheduler-clusters/{cluster}"),
            json!({"name": "default", "is_default": true,
                   "config": {"candidate_parent_limit": 3, "weights": {"idc": 0.5}}}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let k = c
        .keepalive_scheduler(SchedulerKeepalive {
            scheduler_id: s1.scheduler_id,
        })
        .await
        .expect("keepalive")
        .into_inner();
    let cfg = k.config.expect("config");
    assert_eq!(cfg.candidate_parent_limit, 3);
    assert_eq!(cfg.weights.get("idc"), Some(&0.5));

    // A second scheduler: the daemon hears of it.
    let s2 = c
        .register_scheduler(scheduler("http://127.0.0.10:8002", cluster))
        .await
        .expect("register")
        .into_inner();
    let p = next_placement(&mut session).await;
    assert_eq!(p.scheduler_urls.len(), 2, "{p:?}");
    let r = admin.get("/api/v1/peers?active=true").await;
    assert!(r
        .json
        .as_array()
        .expect("peers")
        .iter()
        .any(|p| p["host_id"] == "host-1"));
    // While its session is open, its "last seen" moves on (refreshed every second here)
    // without the row being rewritten: only the refresh moves it past `updated_at`.
    let seen_after_update = |r: &serde_json::Value| {
        let p = r
            .as_array()
            .and_then(|a| a.iter().find(|p| p["host_id"] == "host-1"))
            .expect("host-1");
        p["last_seen_at"].as_i64() > p["updated_at"].as_i64()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen_after_update(&admin.get("/api/v1/peers?active=true").await.json) {
        assert!(Instant::now() < deadline, "last seen was never refreshed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // s1 keeps alive, s2 falls silent: s2 is dropped from the placement.
    let deadline = Instant::now() + Duration::from_secs(30);
    let p = loop {
        c.keepalive_scheduler(SchedulerKeepalive {
            scheduler_id: s1.scheduler_id,
        })
        .await
        .expect("keepalive");
        if let Ok(Ok(Some(msg))) =
            tokio::time::timeout(Duration::from_millis(500), session.message()).await
        {
            if let Some(manager_message::Message::Placement(p)) = msg.message {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the silent scheduler was never dropped"
        );
    };
    assert_eq!(p.scheduler_urls, vec!["http://127.0.0.9:8002".to_string()]);
    let r = admin
        .get(&format!("/api/v1/schedulers/{}", s2.scheduler_id))
        .await;
    assert_eq!(r.json["state"], "inactive");

    // An unknown scheduler is told to register again.
    let e = c
        .keepalive_scheduler(SchedulerKeepalive {
            scheduler_id: 999_999,
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::NotFound);

    // The daemon leaves: it is marked inactive.
    drop(tx);
    drop(session);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = admin.get("/api/v1/peers?active=true").await;
        if !r
            .json
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p["host_id"] == "host-1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon stayed active after leaving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It says why and since when, and when it was last seen.
    let r = admin.get("/api/v1/peers").await;
    let gone = r
        .json
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| p["host_id"] == "host-1")
        .expect("the row is kept")
        .clone();
    assert_eq!(gone["state"], "inactive", "{gone}");
    assert_eq!(
        gone["inactive_reason"], "its session ended: the daemon stopped, or its connection broke",
        "{gone}"
    );
    assert!(
        gone["last_seen_at"].as_i64() >= gone["created_at"].as_i64()
            && gone["updated_at"].as_i64() >= gone["created_at"].as_i64(),
        "{gone}"
    );
}

/// Malformed registrations and sessions are refused with a reason, and store nothing.
async fn bad_registrations_are_refused(m: TestManager) {
    let mut c = client(&m).await;
    let e = c
        .register_scheduler(scheduler("not a url", 0))
        .await
        .expect_err("bad url");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = c
        .register_scheduler(scheduler("http://127.0.0.9:1", 424_242))
        .await
        .expect_err("no such cluster");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let mut info = scheduler("http://127.0.0.9:1", 0);
    info.hostname = "h".repeat(5000);
    let e = c.register_scheduler(info).await.expect_err("huge");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let r = m.admin().await.get("/api/v1/schedulers").await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0), "{}", r.text);

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DaemonMessage { message: None })
        .await
        .expect("send");
    let e = c
        .daemon_session(ReceiverStream::new(rx))
        .await
        .expect_err("no hello");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

fn seed_hello(host: &str) -> DaemonMessage {
    DaemonMessage {
        message: Some(daemon_message::Message::Hello(DaemonHello {
            host_id: host.into(),
            hostname: host.into(),
            ip: "127.0.0.30".into(),
            upload_port: 4000,
            seed: true,
            ..Default::default()
        })),
    }
}

/// Opens a daemon session saying `hello`; the call's outcome.
async fn session(c: &mut Client, hello: DaemonMessage) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.expect("hello");
    let r = c.daemon_session(ReceiverStream::new(rx)).await.map(|_| ());
    drop(tx);
    r
}

/// Without mutual TLS, registering a scheduler and claiming to be a seed need a join token
/// for that role: none, a made-up one, one for the other role or a revoked one is refused
/// with PERMISSION_DENIED; plain daemons need none. Schedulers are told the hashes of live
/// seed tokens, revoked ones no longer.
async fn join_tokens_gate_schedulers_and_seeds(m: TestManager) {
    let admin = m.admin().await;
    let mut none = client_with(&m, None).await;
    let e = none
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("join token"), "{}", e.message());
    let e = session(&mut none, seed_hello("seed-0"))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut plain = seed_hello("plain-0");
    if let Some(daemon_message::Message::Hello(h)) = plain.message.as_mut() {
        h.seed = false;
    }
    session(&mut none, plain)
        .await
        .expect("a plain daemon needs no token");
    let mut made_up = client_with(&m, Some("pjt_a_token_that_nobody_ever_issued")).await;
    let e = made_up
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect_err("made up");
    assert!(e.message().contains("unknown, revoked"), "{}", e.message());

    // (Who may issue, list and revoke tokens, and how they are stored: the REST scenario
    // `join_tokens_are_admins_only_shown_once_and_stored_hashed`.)
    let r = admin
        .post(
            "/api/v1/join-tokens",
            json!({"name": "seeds", "roles": ["seed"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let seed_secret = r.json["secret"].as_str().expect("secret").to_string();
    let seed_id = r.json["token"]["id"].as_i64().expect("id");

    // A seed token makes a seed, not a scheduler.
    let mut seeds = client_with(&m, Some(&seed_secret)).await;
    session(&mut seeds, seed_hello("seed-1"))
        .await
        .expect("a seed with its token");
    let e = seeds
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect_err("a seed token");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut c = client(&m).await;
    let s = c
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect("the first token registers a scheduler")
        .into_inner();
    let seed_hash = pollen_core::join::hash(&seed_secret);
    assert!(s.seed_join_token_hashes.contains(&seed_hash), "{s:?}");
    assert!(s
        .seed_join_token_hashes
        .contains(&pollen_core::join::hash(&m.join_token())));

    // Revoked: refused at once, and no longer listed to schedulers.
    let r = admin
        .delete(&format!("/api/v1/join-tokens/{seed_id}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = session(&mut seeds, seed_hello("seed-2"))
        .await
        .expect_err("revoked");
    assert!(e.message().contains("unknown, revoked"), "{}", e.message());
    let k = c
        .keepalive_scheduler(SchedulerKeepalive {
            scheduler_id: s.scheduler_id,
        })
        .await
        .expect("keepalive")
        .into_inner();
    assert!(!k.seed_join_token_hashes.contains(&seed_hash), "{k:?}");
}

/// A seed peer that names its seed-peer cluster gets that cluster's load_limit as its cap on
/// upload connections with its placement, and a new placement when the limit changes; a plain
/// daemon, and a seed of no seed-peer cluster, keep their own cap.
async fn a_seed_peer_cluster_s_load_limit_reaches_its_seed_peers(m: TestManager) {
    let admin = m.admin().await;
    let mut c = client(&m).await;
    let s = c
        .register_scheduler(scheduler("http://127.0.0.9:8002", 0))
        .await
        .expect("register")
        .into_inner();
    let r = admin
        .post(
            "/api/v1/seed-peer-clusters",
            json!({"name": "seeds", "config": {"load_limit": 7},
                   "scheduler_cluster_ids": [s.scheduler_cluster_id]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let seeds = r.json["id"].as_i64().expect("id");
    let cap = |p: &Placement| p.config.as_ref().and_then(|c| c.max_upload_connections);

    let open = |hello: DaemonMessage| {
        let mut c = c.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(hello).await.expect("hello");
            let stream = c
                .daemon_session(ReceiverStream::new(rx))
                .await
                .expect("session")
                .into_inner();
            (tx, stream)
        }
    };
    let mut in_cluster = seed_hello("seed-1");
    if let Some(daemon_message::Message::Hello(h)) = in_cluster.message.as_mut() {
        h.seed_peer_cluster_id = seeds;
    }
    let (_tx1, mut seed) = open(in_cluster.clone()).await;
    assert_eq!(cap(&next_placement(&mut seed).await), Some(7));
    let (_tx2, mut loose) = open(seed_hello("seed-2")).await;
    assert_eq!(cap(&next_placement(&mut loose).await), None);
    // A plain daemon naming the cluster is no seed peer of it.
    if let Some(daemon_message::Message::Hello(h)) = in_cluster.message.as_mut() {
        h.seed = false;
        h.host_id = "plain-1".into();
    }
    let (_tx3, mut plain) = open(in_cluster).await;
    assert_eq!(cap(&next_placement(&mut plain).await), None);

    let r = admin
        .put(
            &format!("/api/v1/seed-peer-clusters/{seeds}"),
            json!({"name": "seeds", "config": {"load_limit": 2},
                   "scheduler_cluster_ids": [s.scheduler_cluster_id]}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(cap(&next_placement(&mut seed).await), Some(2));
}

on_both_databases!(
    schedulers_and_daemons_follow_the_manager,
    bad_registrations_are_refused,
    join_tokens_gate_schedulers_and_seeds,
    a_seed_peer_cluster_s_load_limit_reaches_its_seed_peers
);
