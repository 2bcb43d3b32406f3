//! Scenarios of jobs and of peers' caches, with a daemon's side of a session played by the test.

use reqwest::StatusCode;
use serde_json::json;

use super::{unique, TestManager};

/// Jobs are created (by users, not guests), listed and followed; one that cannot run ends
/// `failed` with a reason, and a registry password given with a job is never shown.
pub async fn jobs_are_created_listed_and_fail_with_a_reason(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("jobber");
    admin.create_user(&name, "user", "jobber-password").await;
    let user = m.api().sign_in(&name, "jobber-password").await;
    let r = user
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "urls": ["http://127.0.0.1:9/a"], "scheduler_cluster_ids": [987654]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["state"], "pending");
    let id = r.json["id"].as_i64().expect("id");
    let r = user
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "image": "127.0.0.1:9/team/app:1", "username": "ci",
                   "password": "registry-secret-pw", "platform": "linux/amd64"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let image_job = r.json["id"].as_i64().expect("id");
    for (bad, why) in [
        (json!({"type": "preheat"}), "urls or an image"),
        (json!({"type": "find_task"}), "urls or task_ids"),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "peer_count": 2, "peer_percentage": 10}),
            "not both",
        ),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "peer_percentage": 101}),
            "at most 100",
        ),
        (
            json!({"type": "find_task", "urls": ["http://x/"], "peer_count": 1}),
            "asks every peer",
        ),
        (
            json!({"type": "delete_task", "task_ids": ["abc"]}),
            "64 hex digits",
        ),
        (
            json!({"type": "find_task", "image": "a/b:1"}),
            "not an image",
        ),
        (
            json!({"type": "preheat", "task_ids": ["00"], "urls": ["http://x/"]}),
            "not task_ids",
        ),
        (
            json!({"type": "reboot", "urls": ["http://x/"]}),
            "not a job type",
        ),
        (
            json!({"type": "preheat", "urls": ["ftp://x/"]}),
            "unsupported URL scheme \"ftp\"",
        ),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "colour": 1}),
            "colour",
        ),
        (json!({"type": "preheat", "image": "UPPER/case"}), "image"),
        (
            json!({"type": "preheat", "image": "a/b:1", "platform": "linux"}),
            "platform",
        ),
    ] {
        let r = user.post("/api/v1/jobs", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(
            r.json["error"].as_str().unwrap_or("").contains(why),
            "{bad}: {}",
            r.text
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for (job, reason) in [(id, "no active seed peer"), (image_job, "cannot resolve")] {
        loop {
            let r = user.get(&format!("/api/v1/jobs/{job}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(!r.text.contains("registry-secret-pw"), "{}", r.text);
            if r.json["state"] == "failed" {
                assert!(
                    r.json["error"].as_str().unwrap_or("").contains(reason),
                    "{}",
                    r.text
                );
                assert!(r.json["finished_at"].is_i64());
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job} never ended: {}",
                r.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let r = user.get("/api/v1/jobs").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|j| j["id"] == id));
    assert!(!r.text.contains("registry-secret-pw"));
    assert_eq!(
        user.get("/api/v1/jobs/99999999").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A daemon's side of a session, answering from a cache of named tasks: enough to see the
/// manager ask and record. (The real daemon's answers are checked by the multi-process job
/// tests.)
pub struct CacheHolder {
    pub host_id: String,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    session: tokio::task::JoinHandle<()>,
}

impl CacheHolder {
    /// Opens a session for a new host in `cluster` holding `held` (task id, URL) complete
    /// tasks.
    pub async fn connect(m: &TestManager, cluster: i64, held: Vec<(String, String)>) -> Self {
        use pollen_proto::manager::manager_client::ManagerClient;
        use pollen_proto::manager::{
            command, daemon_message, manager_message, CommandResult, DaemonHello, DaemonMessage,
            HeldTask,
        };
        let host_id = unique("holder");
        let mut client = ManagerClient::connect(m.grpc.clone())
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(DaemonMessage {
            message: Some(daemon_message::Message::Hello(DaemonHello {
                host_id: host_id.clone(),
                hostname: host_id.clone(),
                ip: "127.0.0.30".into(),
                upload_port: 4000,
                scheduler_cluster_id: cluster,
                ..Default::default()
            })),
        })
        .await
        .expect("hello");
        let mut inbound = client
            .daemon_session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = asked.clone();
        let session = tokio::spawn(async move {
            let mut cache = held;
            while let Ok(Some(msg)) = inbound.message().await {
                let Some(manager_message::Message::Command(cmd)) = msg.message else {
                    continue;
                };
                // As a daemon reports one fetched with credentials.
                let task = |id: &str, url: &str| HeldTask {
                    task_id: id.into(),
                    url: url.into(),
                    content_length: 1,
                    piece_count: 1,
                    pieces_present: 1,
                    complete: true,
                    last_access: 1,
                    private: url.contains("/private/"),
                };
                let tasks = match cmd.command {
                    Some(command::Command::ListTasks(l)) => {
                        log.lock().expect("log").push(format!("list {}", l.task_id));
                        cache
                            .iter()
                            .filter(|(id, _)| l.task_id.is_empty() || *id == l.task_id)
                            .map(|(id, url)| task(id, url))
                            .collect()
                    }
                    Some(command::Command::DeleteTask(d)) => {
                        log.lock()
                            .expect("log")
                            .push(format!("delete {}", d.task_id));
                        let gone: Vec<HeldTask> = cache
                            .iter()
                            .filter(|(id, _)| *id == d.task_id)
                            .map(|(id, url)| task(id, url))
                            .collect();
                        cache.retain(|(id, _)| *id != d.task_id);
                        gone
                    }
                    _ => Vec::new(),
                };
                let answer = DaemonMessage {
                    message: Some(daemon_message::Message::Result(CommandResult {
                        id: cmd.id,
                        ok: true,
                        error: String::new(),
                        tasks,
                    })),
                };
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        Self {
            host_id,
            asked,
            session,
        }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("log").clone()
    }
}

impl Drop for CacheHolder {
    /// Ends the session, as a daemon that stops would.
    fn drop(&mut self) {
        self.session.abort();
    }
}

/// A peer's cache is asked of the peer: listed (the console's view), found by URL and
/// deleted by jobs, and a peer that is not connected is a clear 503.
pub async fn peers_answer_for_their_caches(m: &TestManager) {
    let admin = m.admin().await;
    let url = format!("http://127.0.0.1:9/{}", unique("model"));
    let key = pollen_core::TaskKey {
        url: url.clone(),
        digest: None,
        tag: "v1".into(),
        application: String::new(),
        filtered_query: Vec::new(),
        private: false,
        version: String::new(),
    };
    let task_id = key.task_id().expect("task id").hex();
    // A cluster of its own, so other scenarios' peers take no part in its jobs.
    let r = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": unique("holders")}),
        )
        .await;
    let cluster = r.json["id"].as_i64().expect("cluster id");
    let private_url = format!("http://127.0.0.1:9/private/{}", unique("weights"));
    let holder = CacheHolder::connect(
        m,
        cluster,
        vec![
            (task_id.clone(), url.clone()),
            ("ab".repeat(32), private_url.clone()),
        ],
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let peer_id = loop {
        let r = admin.get("/api/v1/peers?active=true&limit=1000").await;
        let found = r.json.as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["host_id"] == holder.host_id.as_str())
                .and_then(|p| p["id"].as_i64())
        });
        if let Some(id) = found {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let r = admin.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json[0]["task_id"], task_id.as_str(), "{}", r.text);
    assert_eq!(r.json[0]["url"], url.as_str());
    assert_eq!(r.json[0]["complete"], true);
    // A task fetched with credentials: its URL whole for admins only.
    assert_eq!(r.json[1]["url"], private_url.as_str(), "{}", r.text);
    let viewer = unique("ivan");
    admin.create_user(&viewer, "user", "ivan-password").await;
    let ivan = m.api().sign_in(&viewer, "ivan-password").await;
    let r = ivan.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json[0]["url"], url.as_str(), "{}", r.text);
    assert_eq!(r.json[1]["url"], "http://127.0.0.1/<private>", "{}", r.text);

    // Found by URL and tag (the manager names the task as `pollen get --tag v1` would).
    let find = json!({"type": "find_task", "urls": [url], "tag": "v1",
                      "scheduler_cluster_ids": [cluster]});
    let job = run_job(&admin, find.clone()).await;
    let mine = |j: &serde_json::Value| {
        j["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["host_id"] == holder.host_id.as_str())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(mine(&job)["detail"], "complete", "{job}");
    assert_eq!(mine(&job)["url"], url.as_str(), "{job}");
    let delete = json!({"type": "delete_task", "task_ids": [task_id],
                        "scheduler_cluster_ids": [cluster]});
    let job = run_job(&admin, delete).await;
    assert_eq!(mine(&job)["detail"], "deleted", "{job}");
    let job = run_job(&admin, find).await;
    assert_eq!(mine(&job)["detail"], "absent", "{job}");
    let asked = holder.asked();
    assert!(asked.contains(&format!("delete {task_id}")), "{asked:?}");
    assert!(asked.contains(&format!("list {task_id}")), "{asked:?}");

    drop(holder);
    loop {
        let r = admin.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            let error = r.json["error"].as_str().unwrap_or("");
            if error.contains("not connected") {
                break;
            }
            // Asked while the session was closing: the peer is gone, its registration not
            // yet; the next request must find it unregistered.
            assert!(
                error.contains("disconnected before answering"),
                "{}",
                r.text
            );
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = admin.get("/api/v1/peers/987654321/tasks").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// Creates a job and waits for it to succeed; returns it.
async fn run_job(admin: &crate::common::Api, body: serde_json::Value) -> serde_json::Value {
    let r = admin.post("/api/v1/jobs", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.text);
    let id = r.json["id"].as_i64().expect("id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = admin.get(&format!("/api/v1/jobs/{id}")).await;
        match r.json["state"].as_str() {
            Some("succeeded") => return r.json,
            Some("failed") => panic!("{body}: {}", r.text),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A job that reaches private content (a registry user, credential headers, a presigned URL)
/// shows its URLs and image whole to the user who made it and to admins; another user sees
/// the origin's host and `<private>`. A job without credentials is shown to all.
pub async fn a_private_jobs_urls_are_shown_only_to_its_owner_and_admins(m: &TestManager) {
    let admin = m.admin().await;
    let (a, b) = (unique("gina"), unique("hugo"));
    admin.create_user(&a, "user", "gina-password").await;
    admin.create_user(&b, "user", "hugo-password").await;
    let gina = m.api().sign_in(&a, "gina-password").await;
    let hugo = m.api().sign_in(&b, "hugo-password").await;
    let signed =
        "http://127.0.0.1:9/bucket/weights.bin?X-Amz-Signature=feedface&X-Amz-Credential=AKIA";
    let cluster = 987_654;
    let mut ids = Vec::new();
    for body in [
        json!({"type": "preheat", "urls": [signed], "scheduler_cluster_ids": [cluster]}),
        json!({"type": "preheat", "urls": ["http://127.0.0.1:9/team/secret-plan.bin"],
               "headers": ["Authorization: Bearer gina-token"], "scheduler_cluster_ids": [cluster]}),
        json!({"type": "preheat", "image": "127.0.0.1:9/team/private-app:1", "username": "ci",
               "password": "registry-pw", "scheduler_cluster_ids": [cluster]}),
    ] {
        let r = gina.post("/api/v1/jobs", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_i64().expect("id"));
    }
    let r = gina
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "urls": ["http://127.0.0.1:9/public/readme.txt"],
                   "scheduler_cluster_ids": [cluster]}),
        )
        .await;
    let public = r.json["id"].as_i64().expect("id");

    for id in &ids {
        let path = format!("/api/v1/jobs/{id}");
        for (who, whole) in [(&gina, true), (&admin, true), (&hugo, false)] {
            let r = who.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            for secret in ["feedface", "secret-plan", "private-app"] {
                if !whole {
                    assert!(
                        !r.text.contains(secret),
                        "another user sees {secret}: {}",
                        r.text
                    );
                }
            }
            if !whole {
                assert!(r.text.contains("<private>"), "{}", r.text);
            }
        }
    }
    let mine = gina.get(&format!("/api/v1/jobs/{}", ids[0])).await;
    assert!(
        mine.text.contains("feedface"),
        "the owner sees the whole URL"
    );
    let listed = hugo.get("/api/v1/jobs").await;
    assert!(
        !listed.text.contains("feedface") && !listed.text.contains("secret-plan"),
        "{}",
        listed.text
    );
    let r = hugo.get(&format!("/api/v1/jobs/{public}")).await;
    assert!(r.text.contains("public/readme.txt"), "{}", r.text);
}
