//! A manager, its schedulers and daemons as real processes, and an admin's REST client.

use std::time::{Duration, Instant};

use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc, ManagerProc, SchedulerProc};
use serde_json::{json, Value};

use super::{bin, HANG};

pub const ADMIN_PASSWORD: &str = "placement-admin-pw";

/// A cluster helper with no scheduler, seed or peers: a directory and the binary.
pub async fn empty_cluster() -> Cluster {
    let mut spec = ClusterSpec::standalone(bin(), 0);
    spec.seed = false;
    Cluster::start(spec).await.expect("cluster")
}

/// A REST client signed in as the manager's admin.
pub struct Admin {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: String,
}

impl Admin {
    pub async fn sign_in(m: &ManagerProc) -> Self {
        Self::sign_in_at(&m.rest, ADMIN_PASSWORD).await
    }

    /// Signs in as `admin` to the manager whose REST API is at `base`.
    pub async fn sign_in_at(base: &str, password: &str) -> Self {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{base}/api/v1/sessions"))
            .json(&json!({"name": "admin", "password": password}))
            .send()
            .await
            .expect("sign in");
        assert_eq!(r.status(), 201);
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("cookie")
            .to_string();
        Self {
            base: base.to_string(),
            http,
            cookie,
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// Waits until `check` holds for GET `path`.
    pub async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            let v = self.get(path).await;
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: last {path} was {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn daemon(
    cluster: &Cluster,
    m: &ManagerProc,
    name: &str,
    ip: &str,
    extra: &[&str],
) -> DaemonProc {
    let mut args = vec![
        "--manager".to_string(),
        m.grpc.clone(),
        "--upload-listen".into(),
        format!("{ip}:0"),
        "--hostname".into(),
        name.to_string(),
        // The tests' origins and registries listen on loopback.
        "--origin-allow".into(),
        "127.0.0.0/8".into(),
    ];
    if extra.contains(&"--seed") && m.join_token_file.exists() {
        args.push("--join-token-file".into());
        args.push(m.join_token_file.to_string_lossy().into_owned());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    cluster.stranger(name, args)
}

pub fn scheduler_args(m: &ManagerProc, cluster_id: i64) -> Vec<String> {
    let mut args = vec![
        "--manager".into(),
        m.grpc.clone(),
        "--cluster-id".into(),
        cluster_id.to_string(),
        "--keepalive-interval".into(),
        "500ms".into(),
    ];
    // Without TLS a scheduler shows the manager's first join token.
    if m.join_token_file.exists() {
        args.push("--join-token-file".into());
        args.push(m.join_token_file.to_string_lossy().into_owned());
    }
    args
}

/// The schedulers in a daemon's cached placement.
pub fn placement_urls(d: &DaemonProc) -> Vec<String> {
    std::fs::read_to_string(d.data_dir.join("placement.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v["scheduler_urls"].as_array().map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Waits until `path` (a log) contains `text`.
pub async fn wait_for_log(path: &std::path::Path, text: &str) {
    wait_for_log_count(path, text, 1).await;
}

/// Waits until the log at `path` holds `text` at least `n` times.
pub async fn wait_for_log_count(path: &std::path::Path, text: &str, n: usize) {
    let deadline = Instant::now() + HANG;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.matches(text).count() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {text:?} {n} times:\n{log}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Admin {
    /// Waits until `n` active seed peers are recorded.
    pub async fn wait_for_seeds(&self, n: usize) {
        self.wait_for(
            "/api/v1/peers?seed=true&active=true",
            "the seeds recorded",
            |v| v.as_array().map(Vec::len) == Some(n),
        )
        .await;
    }

    /// Waits for job `id` to end; returns it.
    pub async fn job_end(&self, id: i64) -> Value {
        self.wait_for(&format!("/api/v1/jobs/{id}"), "the job ended", |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        })
        .await
    }

    /// Creates a job and waits for it to end; returns it.
    pub async fn run_job(&self, body: Value) -> Value {
        let id = self.post("/api/v1/jobs", body).await["id"]
            .as_i64()
            .expect("job id");
        self.job_end(id).await
    }
}

/// A manager (with `config`), an admin signed in to it, and one scheduler (`sched`, on
/// 127.0.0.2) in its default cluster.
pub async fn control_plane(cluster: &Cluster, config: &str) -> (ManagerProc, Admin, SchedulerProc) {
    let m = cluster
        .start_manager(ADMIN_PASSWORD, config)
        .await
        .expect("manager");
    let admin = Admin::sign_in(&m).await;
    let s = cluster
        .start_scheduler("sched", "127.0.0.2:0", &scheduler_args(&m, 0))
        .await
        .expect("scheduler");
    (m, admin, s)
}
