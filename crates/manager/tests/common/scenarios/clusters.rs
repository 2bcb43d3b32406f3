//! Scenarios of scheduler and seed-peer clusters, and the schedulers and peers listed.

use reqwest::StatusCode;
use serde_json::json;

use super::{unique, TestManager};

/// Scheduler and seed-peer clusters: created with scopes and config, linked, replaced,
/// listed, deleted; bad input is refused with the field named and nothing is stored.
pub async fn clusters_round_trip(m: &TestManager) {
    let admin = m.admin().await;
    let seeds = unique("seeds");
    let r = admin
        .post(
            "/api/v1/seed-peer-clusters",
            json!({"name": seeds, "config": {"load_limit": 50}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let spc = r.json["id"].as_i64().expect("id");
    let name = unique("eu-west");
    let body = json!({
        "name": name,
        "bio": "Frankfurt",
        "scopes": {"cidrs": ["10.1.0.0/16"], "idc": "fra1|fra2", "location": "eu|fra",
                   "hostname_regex": "fra-node-[0-9]+"},
        "config": {"candidate_parent_limit": 4, "weights": {"load": 2.0}},
        "seed_peer_cluster_ids": [spc],
    });
    let r = admin.post("/api/v1/scheduler-clusters", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_i64().expect("id");
    assert_eq!(r.json["scopes"]["cidrs"][0], "10.1.0.0/16");
    assert_eq!(r.json["config"]["candidate_parent_limit"], 4);
    assert_eq!(r.json["seed_peer_cluster_ids"], json!([spc]));
    let r = admin
        .get(&format!("/api/v1/seed-peer-clusters/{spc}"))
        .await;
    assert_eq!(r.json["scheduler_cluster_ids"], json!([id]));
    assert_eq!(
        admin
            .post("/api/v1/scheduler-clusters", body.clone())
            .await
            .status,
        StatusCode::CONFLICT
    );

    for (bad, field) in [
        (
            json!({"name": unique("c"), "scopes": {"cidrs": ["10.0.0.0/40"]}}),
            "scopes.cidrs",
        ),
        (
            json!({"name": unique("c"), "scopes": {"hostname_regex": "(["}}),
            "hostname_regex",
        ),
        (
            json!({"name": unique("c"), "config": {"candidate_parent_limit": 0}}),
            "candidate_parent_limit",
        ),
        (json!({"name": unique("c"), "colour": "red"}), "colour"),
        (
            json!({"name": unique("c"), "seed_peer_cluster_ids": [987654]}),
            "does not exist",
        ),
    ] {
        let r = admin.post("/api/v1/scheduler-clusters", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(
            r.json["error"].as_str().unwrap_or("").contains(field),
            "{bad}: {}",
            r.text
        );
        let all = admin.get("/api/v1/scheduler-clusters").await.json;
        assert!(
            !all.as_array()
                .expect("list")
                .iter()
                .any(|c| c["name"] == bad["name"]),
            "a refused cluster was stored"
        );
    }

    let mut replaced = body.clone();
    replaced["config"]["candidate_parent_limit"] = json!(8);
    replaced["seed_peer_cluster_ids"] = json!([]);
    replaced["is_default"] = json!(true);
    let r = admin
        .put(&format!("/api/v1/scheduler-clusters/{id}"), replaced)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["config"]["candidate_parent_limit"], 8);
    assert_eq!(r.json["is_default"], true);
    assert_eq!(r.json["seed_peer_cluster_ids"], json!([]));
    let r = admin.get(&format!("/api/v1/scheduler-clusters/{id}")).await;
    assert_eq!(r.json["bio"], "Frankfurt");
    let list = admin.get("/api/v1/scheduler-clusters").await.json;
    let defaults = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["is_default"] == true)
        .count();
    assert_eq!(defaults, 1, "more than one default cluster");

    let r = admin
        .put(
            &format!("/api/v1/seed-peer-clusters/{spc}"),
            json!({"name": seeds, "scheduler_cluster_ids": [id]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["config"]["load_limit"], 300,
        "defaults apply to omitted config"
    );
    let r = admin.get("/api/v1/seed-peer-clusters").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["id"] == spc));

    assert_eq!(
        admin
            .delete(&format!("/api/v1/scheduler-clusters/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .get(&format!("/api/v1/scheduler-clusters/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .put(&format!("/api/v1/scheduler-clusters/{id}"), body)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = admin
        .get(&format!("/api/v1/seed-peer-clusters/{spc}"))
        .await;
    assert_eq!(
        r.json["scheduler_cluster_ids"],
        json!([]),
        "links outlived their cluster"
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/seed-peer-clusters/{spc}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/seed-peer-clusters/{spc}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// Schedulers and peers, as they register over gRPC, are listed, filtered and read; an admin
/// forgets a scheduler.
pub async fn hosts_are_listed(m: &TestManager) {
    use pollen_proto::manager::manager_client::ManagerClient;
    use pollen_proto::manager::{daemon_message, DaemonHello, DaemonMessage, SchedulerInfo};
    let admin = m.admin().await;
    let r = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": unique("hosts")}),
        )
        .await;
    let cluster = r.json["id"].as_i64().expect("id");
    let channel = tonic::transport::Endpoint::from_shared(m.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let token = m.join_token().parse().expect("a token is ASCII");
    let mut c = ManagerClient::with_interceptor(channel, crate::common::ShowToken(Some(token)));
    let s = c
        .register_scheduler(SchedulerInfo {
            scheduler_cluster_id: cluster,
            hostname: "sched-1".into(),
            ip: "127.0.0.9".into(),
            port: 8002,
            url: "http://127.0.0.9:8002".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DaemonMessage {
        message: Some(daemon_message::Message::Hello(DaemonHello {
            host_id: unique("host"),
            hostname: "node-1".into(),
            ip: "127.0.0.10".into(),
            upload_port: 4000,
            seed: true,
            scheduler_cluster_id: cluster,
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let mut session = c
        .daemon_session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    // The peer is recorded before its first placement is sent.
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), session.message())
        .await
        .expect("a placement in time")
        .expect("stream ok");
    assert!(first.is_some(), "the session closed without a placement");
    let r = admin
        .get(&format!(
            "/api/v1/peers?scheduler_cluster_id={cluster}&seed=true"
        ))
        .await;
    let peer = r.json[0]["id"].as_i64().unwrap_or_else(|| {
        panic!(
            "the seed was not recorded in its pinned cluster: {}",
            r.text
        )
    });
    // (No `active=true` here: the test manager's 2 s keepalive timeout may already have passed.)
    let r = admin
        .get(&format!(
            "/api/v1/schedulers?scheduler_cluster_id={cluster}"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    assert_eq!(
        admin
            .get(&format!("/api/v1/schedulers/{}", s.scheduler_id))
            .await
            .json["url"],
        "http://127.0.0.9:8002"
    );
    let r = admin
        .get(&format!(
            "/api/v1/peers?scheduler_cluster_id={cluster}&seed=true"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = admin
        .get(&format!(
            "/api/v1/peers?scheduler_cluster_id={cluster}&seed=false"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0), "{}", r.text);
    assert_eq!(
        admin.get(&format!("/api/v1/peers/{peer}")).await.json["hostname"],
        "node-1"
    );
    assert_eq!(
        admin.get("/api/v1/peers/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/schedulers/{}", s.scheduler_id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .get(&format!("/api/v1/schedulers/{}", s.scheduler_id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}
