//! The manager places daemons: by network and hostname scopes, a pinned cluster winning, and
//! spreads tasks over a cluster's schedulers; a scheduler killed mid-swarm fails no download.
//! Every role is a real process on loopback.

mod common;

use std::time::{Duration, Instant};

use common::manager::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_land_in_the_cluster_their_scopes_choose_and_a_pin_wins() {
    let cluster = empty_cluster().await;
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"3s\"\n")
        .await
        .expect("manager");
    let admin = Admin::sign_in(&m).await;
    let net = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": "net", "scopes": {"cidrs": ["127.0.1.0/24"]}}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let gpu = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": "gpu", "scopes": {"hostname_regex": "gpu-[0-9]+"}}),
        )
        .await["id"]
        .as_i64()
        .expect("id");
    let s_net = cluster
        .start_scheduler("sched-net", "127.0.0.2:0", &scheduler_args(&m, net))
        .await
        .expect("scheduler");
    let s_gpu = cluster
        .start_scheduler("sched-gpu", "127.0.0.3:0", &scheduler_args(&m, gpu))
        .await
        .expect("scheduler");
    admin
        .wait_for(
            "/api/v1/schedulers?active=true",
            "both schedulers active",
            |v| v.as_array().map(Vec::len) == Some(2),
        )
        .await;

    let mut by_network = daemon(&cluster, &m, "node-a", "127.0.1.5", &[]);
    let mut by_hostname = daemon(&cluster, &m, "gpu-7", "127.0.2.5", &[]);
    let pin = gpu.to_string();
    let mut pinned = daemon(
        &cluster,
        &m,
        "node-b",
        "127.0.1.6",
        &["--scheduler-cluster-id", &pin],
    );
    for d in [&mut by_network, &mut by_hostname, &mut pinned] {
        d.start().await.expect("daemon starts");
    }
    for d in [&by_network, &by_hostname, &pinned] {
        d.wait_connected().await.expect("connected to a scheduler");
    }
    let peers = admin
        .wait_for("/api/v1/peers", "three peers recorded", |v| {
            v.as_array().map(Vec::len) == Some(3)
        })
        .await;
    let cluster_of = |host: &str| {
        peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["hostname"] == host))
            .and_then(|p| p["scheduler_cluster_id"].as_i64())
    };
    assert_eq!(cluster_of("node-a"), Some(net), "placed by network");
    assert_eq!(cluster_of("gpu-7"), Some(gpu), "placed by hostname");
    assert_eq!(
        cluster_of("node-b"),
        Some(gpu),
        "the pin lost to the network scope"
    );
    assert_eq!(placement_urls(&by_network), vec![s_net.url.clone()]);
    assert_eq!(placement_urls(&by_hostname), vec![s_gpu.url.clone()]);
    assert_eq!(placement_urls(&pinned), vec![s_gpu.url.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_two_schedulers_mid_swarm_fails_no_download() {
    let size = 24 * MIB;
    let origin = origin(size).await;
    let cluster = empty_cluster().await;
    let m = cluster
        .start_manager(ADMIN_PASSWORD, "keepalive_timeout = \"2s\"\n")
        .await
        .expect("manager");
    let admin = Admin::sign_in(&m).await;
    // Both schedulers join the default cluster (cluster id 0).
    // The first scheduler shows its metrics, so the test can see it owns tasks before it
    // dies.
    let s1_args = [
        scheduler_args(&m, 0),
        vec!["--metrics-listen".into(), "127.0.0.2:0".into()],
    ]
    .concat();
    let mut s1 = cluster
        .start_scheduler("sched-1", "127.0.0.2:0", &s1_args)
        .await
        .expect("scheduler");
    let s1_metrics = metrics_addr(&cluster.dir.path().join("sched-1.log")).await;
    let s2 = cluster
        .start_scheduler("sched-2", "127.0.0.3:0", &scheduler_args(&m, 0))
        .await
        .expect("scheduler");
    admin
        .wait_for(
            "/api/v1/schedulers?active=true",
            "both schedulers active",
            |v| v.as_array().map(Vec::len) == Some(2),
        )
        .await;
    let slow = [
        "--upload-rate-limit",
        "24MiB",
        "--back-to-source-rate-limit",
        "24MiB",
    ];
    let mut daemons = vec![daemon(
        &cluster,
        &m,
        "seed",
        "127.0.0.10",
        &[&["--seed"][..], &slow].concat(),
    )];
    for i in 0..5 {
        daemons.push(daemon(
            &cluster,
            &m,
            &format!("peer-{i}"),
            &format!("127.0.0.{}", 11 + i),
            &slow,
        ));
    }
    for d in daemons.iter_mut() {
        d.start().await.expect("daemon starts");
    }
    for d in &daemons {
        d.wait_connected().await.expect("connected");
        let deadline = Instant::now() + HANG;
        while placement_urls(d).len() < 2 {
            assert!(
                Instant::now() < deadline,
                "{} never learned both schedulers",
                d.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Four files, two served by each scheduler (tasks are spread by rendezvous hashing of
    // the task id), so the one killed has tasks to lose.
    let (mut own1, mut own2) = (Vec::new(), Vec::new());
    for i in 0.. {
        let url = origin.url(&format!("/blob?copy={i}"));
        let task = pollen_core::TaskKey {
            url: url.clone(),
            ..Default::default()
        }
        .task_id()
        .expect("task id")
        .hex();
        let owner = pollen_core::rendezvous::order(&[&s1.url, &s2.url], &task)[0];
        let mine = if owner == s1.url {
            &mut own1
        } else {
            &mut own2
        };
        if mine.len() < 2 {
            mine.push(url);
        }
        if own1.len() == 2 && own2.len() == 2 {
            break;
        }
    }
    let urls: Vec<String> = own1.into_iter().chain(own2).collect();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let mut jobs = Vec::new();
    for (i, d) in daemons.iter().enumerate().skip(1) {
        for (j, url) in urls.iter().enumerate() {
            let out = cluster.dir.path().join(format!("out-{i}-{j}"));
            let finished = &finished;
            jobs.push(async move {
                let r = download_within(d, url, &out).await;
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (out, r)
            });
        }
    }
    // The kill comes once the first scheduler holds its tasks and peers registered with it,
    // and while downloads still run.
    let (results, finished_at_kill) = tokio::join!(futures::future::join_all(jobs), async {
        let deadline = Instant::now() + HANG;
        loop {
            let text = reqwest::get(format!("http://{s1_metrics}/metrics"))
                .await
                .expect("the scheduler's metrics")
                .text()
                .await
                .expect("metrics text");
            let tasks = metric(&text, "pollen_scheduler_tasks");
            let registers = metric(&text, "pollen_scheduler_registers_total");
            if tasks >= 2.0 && registers >= 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the first scheduler never got a task:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at_kill = finished.load(std::sync::atomic::Ordering::SeqCst);
        s1.kill().await;
        at_kill
    });
    assert!(
        finished_at_kill < 20,
        "every download had finished before the scheduler died"
    );
    let mut done = 0;
    for (out, r) in results {
        r.unwrap_or_else(|e| panic!("a download failed after the scheduler died: {e}"));
        assert_eq!(sha256_file(&out), origin.digest());
        done += 1;
    }
    assert_eq!(done, 20);
    // The manager notices, and the daemons move to the scheduler left.
    admin
        .wait_for(
            "/api/v1/schedulers?active=true",
            "the dead scheduler marked inactive",
            |v| v.as_array().map(Vec::len) == Some(1),
        )
        .await;
    for d in &daemons {
        let deadline = Instant::now() + HANG;
        while placement_urls(d) != vec![s2.url.clone()] {
            assert!(
                Instant::now() < deadline,
                "{} still uses the dead scheduler",
                d.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_reach_schedulers_and_a_lost_manager_leaves_the_last_in_force() {
    let size = 8 * MIB;
    let origin = origin(size).await;
    let cluster = empty_cluster().await;
    let (mut m, admin, s) = control_plane(&cluster, "keepalive_timeout = \"3s\"\n").await;
    let default = admin.get("/api/v1/scheduler-clusters").await[0]["id"]
        .as_i64()
        .expect("the default cluster");
    let r = admin
        .http
        .put(format!(
            "{}/api/v1/scheduler-clusters/{default}",
            admin.base
        ))
        .header("cookie", &admin.cookie)
        .json(&json!({"name": "default", "is_default": true,
                      "config": {"candidate_parent_limit": 2, "weights": {"idc": 0.7},
                                 "peer": {"upload_rate_limit": 8 * MIB,
                                          "back_to_source_rate_limit": 0}}}))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    let sched_log = cluster.dir.path().join("sched.log");
    wait_for_log(&sched_log, "candidate_limit=2").await;

    // The daemon's own limits, until the cluster's config reaches it: the cluster sets the
    // upload and lifts back-to-source; the download limit it does not set stays the daemon's.
    let mut d = daemon(
        &cluster,
        &m,
        "node-1",
        "127.0.0.20",
        &[
            "--upload-rate-limit",
            "1MiB",
            "--download-rate-limit",
            "64MiB",
            "--back-to-source-rate-limit",
            "2MiB",
        ],
    );
    d.start().await.expect("daemon");
    d.wait_connected().await.expect("connected");
    assert_eq!(placement_urls(&d), vec![s.url.clone()]);
    let limits = |s: &pollen_proto::daemon::StatResponse| {
        (
            s.upload_rate_limit,
            s.download_rate_limit,
            s.back_to_source_rate_limit,
        )
    };
    let from_cluster = (8 * MIB, 64 * MIB, 0);
    wait_for_stat(&d, "the cluster's limits", |s| limits(s) == from_cluster).await;

    // The manager goes away: the scheduler keeps its config, and a restarted daemon finds
    // its scheduler from the placement it cached.
    m.kill().await;
    wait_for_log(&sched_log, "keepalive failed; keeping the last config").await;
    d.restart().await.expect("restart");
    d.wait_connected()
        .await
        .expect("connected without the manager");
    let st = d.stat().await.expect("stat");
    assert_eq!(limits(&st), from_cluster, "the cached config is in force");
    let out = cluster.dir.path().join("out");
    download_within(&d, &origin.url("/blob"), &out)
        .await
        .expect("download without the manager");
    assert_eq!(sha256_file(&out), origin.digest());
    let log = std::fs::read_to_string(&sched_log).unwrap_or_default();
    let last = log
        .lines()
        .rfind(|l| l.contains("applying the cluster config"))
        .unwrap_or_default();
    assert!(
        last.contains("candidate_limit=2"),
        "the config in force is no longer the manager's last: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_peer_cluster_s_load_limit_caps_its_seeds_uploads_and_reaches_the_scheduler() {
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let default = admin.get("/api/v1/scheduler-clusters").await[0]["id"]
        .as_i64()
        .expect("the default cluster");
    let body = |limit: u32| {
        json!({"name": "seeds", "config": {"load_limit": limit},
               "scheduler_cluster_ids": [default]})
    };
    let seeds = admin.post("/api/v1/seed-peer-clusters", body(3)).await["id"]
        .as_i64()
        .expect("a seed-peer cluster");
    let mut d = daemon(
        &cluster,
        &m,
        "seed-1",
        "127.0.0.21",
        &[
            "--seed",
            "--seed-peer-cluster-id",
            &seeds.to_string(),
            "--max-upload-connections",
            "40",
        ],
    );
    d.start().await.expect("seed");
    d.wait_connected().await.expect("connected");
    let sched_log = cluster.dir.path().join("sched.log");
    // The cluster's limit replaces the seed's own 40, in its upload server and at the
    // scheduler that chooses its children.
    wait_for_stat(&d, "the cluster's load limit", |s| {
        s.max_upload_connections == 3
    })
    .await;
    wait_for_log(&sched_log, "upload_cap_to=3").await;
    // Changed by an operator: it follows while the seed runs.
    let r = admin
        .http
        .put(format!("{}/api/v1/seed-peer-clusters/{seeds}", admin.base))
        .header("cookie", &admin.cookie)
        .json(&body(5))
        .send()
        .await
        .expect("put");
    assert!(r.status().is_success());
    wait_for_stat(&d, "the new load limit", |s| s.max_upload_connections == 5).await;
    wait_for_log(&sched_log, "upload_cap_to=5").await;
    let log = std::fs::read_to_string(&sched_log).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("upload_cap_from=3 upload_cap_to=5")),
        "the scheduler did not move from the first limit to the second:\n{log}"
    );
}

/// Waits until `d`'s stat passes `check`.
async fn wait_for_stat(
    d: &pollen_testkit::cluster::DaemonProc,
    what: &str,
    check: impl Fn(&pollen_proto::daemon::StatResponse) -> bool,
) {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let s = d.stat().await.expect("stat");
        if check(&s) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: last {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The address a scheduler's metrics listener took, from its log.
async fn metrics_addr(log: &std::path::Path) -> String {
    wait_for_log(log, "metrics listening").await;
    let text = std::fs::read_to_string(log).expect("log");
    text.lines()
        .find(|l| l.contains("metrics listening"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .expect("the metrics address in the log")
        .to_string()
}

/// A sample's value in OpenMetrics text (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
