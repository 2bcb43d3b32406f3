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
    let mut s1 = cluster
        .start_scheduler("sched-1", "127.0.0.2:0", &scheduler_args(&m, 0))
        .await
        .expect("scheduler");
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
    // Several files, so both schedulers have tasks to lose.
    let urls: Vec<String> = (0..4)
        .map(|i| origin.url(&format!("/blob?copy={i}")))
        .collect();
    let mut jobs = Vec::new();
    for (i, d) in daemons.iter().enumerate().skip(1) {
        for (j, url) in urls.iter().enumerate() {
            let out = cluster.dir.path().join(format!("out-{i}-{j}"));
            jobs.push(async move {
                let r = download_within(d, url, &out).await;
                (out, r)
            });
        }
    }
    let (results, ()) = tokio::join!(futures::future::join_all(jobs), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s1.kill().await;
    });
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

/// Waits until `d`'s stat passes `check`.
async fn wait_for_stat(
    d: &pollen::cluster::DaemonProc,
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
