//! Preheat jobs run by the manager over its seed peers, as real processes on loopback: the
//! fleet then takes nothing from the origin, and a manager restarted mid-job finishes it.

mod common;

use std::time::{Duration, Instant};

use common::manager::*;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preheat_job_fills_the_seeds_so_the_fleet_takes_nothing_from_the_origin() {
    let size = 8 * MIB;
    let origin = origin(size).await;
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let mut seed = daemon(&cluster, &m, "seed", "127.0.0.10", &["--seed"]);
    let mut peer = daemon(&cluster, &m, "peer", "127.0.0.11", &[]);
    for d in [&mut seed, &mut peer] {
        d.start().await.expect("daemon");
        d.wait_connected().await.expect("connected");
    }
    admin.wait_for_seeds(1).await;
    let urls: Vec<String> = (0..2)
        .map(|i| origin.url(&format!("/blob?preheat={i}")))
        .collect();
    // The job's rate limit holds each fetch to 4 MiB/s: 8 MiB cannot arrive in much under
    // two seconds (a lower bound on time only; a slow machine just takes longer).
    let started = Instant::now();
    let job = admin
        .run_job(json!({"type": "preheat", "urls": urls, "concurrency": 2, "rate_limit": 4 * MIB}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "a rate-limited preheat took {:?}",
        started.elapsed()
    );
    let results = job["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{job}");
    assert!(results.iter().all(|r| r["state"] == "succeeded"), "{job}");
    assert_eq!(
        origin.bytes_served(),
        2 * size,
        "the seed fetched each URL once"
    );
    let held = seed.stat().await.expect("stat");
    assert_eq!(held.tasks.iter().filter(|t| t.complete).count(), 2);

    for (i, url) in urls.iter().enumerate() {
        let out = cluster.dir.path().join(format!("out-{i}"));
        download_within(&peer, url, &out).await.expect("download");
        assert_eq!(sha256_file(&out), origin.digest());
    }
    assert_eq!(
        origin.bytes_served(),
        2 * size,
        "the peer went to the origin"
    );
}

/// A preheat's request headers are sealed at rest and shown redacted, yet reach the seed: an
/// origin that demands the bearer token serves the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preheat_job_s_headers_are_used_but_never_shown_or_stored_in_the_clear() {
    let origin = origin(MIB).await;
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let mut seed = daemon(&cluster, &m, "seed", "127.0.0.10", &["--seed"]);
    seed.start().await.expect("daemon");
    seed.wait_connected().await.expect("connected");
    admin.wait_for_seeds(1).await;
    let auth = format!(
        "Authorization: Bearer {}",
        pollen_testkit::origin::PRIVATE_TOKEN
    );
    let job = admin
        .run_job(json!({"type": "preheat", "urls": [origin.url("/private")], "headers": [auth]}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(
        origin.bytes_served(),
        MIB,
        "the seed fetched with the token"
    );
    for text in [job.to_string(), admin.get("/api/v1/jobs").await.to_string()] {
        assert!(
            !text.contains(pollen_testkit::origin::PRIVATE_TOKEN),
            "{text}"
        );
        assert!(text.contains("Authorization: <redacted>"), "{text}");
    }
    let db =
        std::fs::read(cluster.dir.path().join("manager").join("manager.db")).unwrap_or_default();
    let wal = std::fs::read(cluster.dir.path().join("manager").join("manager.db-wal"))
        .unwrap_or_default();
    assert!(
        !db.is_empty() || !wal.is_empty(),
        "the database files were found"
    );
    for bytes in [db, wal] {
        assert!(
            !bytes
                .windows(PRIVATE_LEN)
                .any(|w| w == pollen_testkit::origin::PRIVATE_TOKEN.as_bytes()),
            "the token is in the database in the clear"
        );
    }
}

const PRIVATE_LEN: usize = pollen_testkit::origin::PRIVATE_TOKEN.len();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restarted_mid_job_finishes_it_or_says_why() {
    let size = 24 * MIB;
    let origin = origin(size).await;
    let cluster = empty_cluster().await;
    let config = "job_peer_grace = \"30s\"\n";
    let (mut m, admin, _s) = control_plane(&cluster, config).await;
    // The seed reads the origin slowly, so the job is still running when the manager dies.
    let mut seed = daemon(
        &cluster,
        &m,
        "seed",
        "127.0.0.10",
        &["--seed", "--back-to-source-rate-limit", "4MiB"],
    );
    seed.start().await.expect("seed");
    seed.wait_connected().await.expect("connected");
    admin.wait_for_seeds(1).await;
    let url = origin.url("/blob");
    let id = admin
        .post("/api/v1/jobs", json!({"type": "preheat", "urls": [url]}))
        .await["id"]
        .as_i64()
        .expect("id");
    admin
        .wait_for(&format!("/api/v1/jobs/{id}"), "the job running", |j| {
            j["state"] == "running" && j["results"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    let (rest, grpc) = m.addrs();
    m.kill().await;
    // The seed goes on while the manager is away: wait until it has read another MiB.
    let at_kill = origin.bytes_served();
    let deadline = Instant::now() + HANG;
    while origin.bytes_served() < at_kill + MIB {
        assert!(
            Instant::now() < deadline,
            "the seed stopped when the manager died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = cluster
        .start_manager_on(ADMIN_PASSWORD, config, &rest, &grpc)
        .await
        .expect("manager restarts on its addresses");
    let admin = Admin::sign_in(&m).await;
    let _started = Instant::now();
    let job = admin.job_end(id).await;
    assert_eq!(
        job["state"], "succeeded",
        "the resumed job did not finish: {job}"
    );
    let held = seed.stat().await.expect("stat");
    assert!(held.tasks.iter().any(|t| t.complete), "{:?}", held.tasks);
    assert!(
        origin.bytes_served() <= size + size / 2,
        "the resumed job read the origin again from the start: {}",
        origin.bytes_served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preheat_on_half_the_peers_is_found_there_and_deleted_everywhere() {
    let size = 4 * MIB;
    let origin = origin(size).await;
    let cluster = empty_cluster().await;
    let (m, admin, _s) = control_plane(&cluster, "").await;
    let mut seed = daemon(&cluster, &m, "seed", "127.0.0.10", &["--seed"]);
    let mut a = daemon(&cluster, &m, "peer-a", "127.0.0.11", &[]);
    let mut b = daemon(&cluster, &m, "peer-b", "127.0.0.12", &[]);
    for d in [&mut seed, &mut a, &mut b] {
        d.start().await.expect("daemon");
        d.wait_connected().await.expect("connected");
    }
    admin
        .wait_for("/api/v1/peers?active=true", "three peers recorded", |v| {
            v.as_array().map(Vec::len) == Some(3)
        })
        .await;
    let ids = [
        seed.stat().await.expect("stat").host_id,
        a.stat().await.expect("stat").host_id,
        b.stat().await.expect("stat").host_id,
    ];
    let answer = |job: &serde_json::Value, host: &str| {
        job["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["host_id"] == host)
            .map(|r| r["detail"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };

    // Half of the two ordinary peers, rounded up: one of them, never the seed.
    let url = origin.url("/blob?half-the-fleet");
    let job = admin
        .run_job(json!({"type": "preheat", "urls": [url], "peer_percentage": 50}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let ran: Vec<&str> = job["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["host_id"].as_str())
        .collect();
    assert_eq!(ran.len(), 1, "{job}");
    assert_ne!(ran[0], ids[0], "the seed was chosen: {job}");
    let (holder, other) = if ran[0] == ids[1] {
        (&a, &ids[2])
    } else {
        (&b, &ids[1])
    };
    let holder_id = ran[0].to_string();

    let job = admin
        .run_job(json!({"type": "find_task", "urls": [url]}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["results"].as_array().map(Vec::len), Some(3), "{job}");
    assert_eq!(answer(&job, &holder_id), "complete", "{job}");
    assert_eq!(answer(&job, other), "absent", "{job}");

    let job = admin
        .run_job(json!({"type": "delete_task", "urls": [url]}))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(answer(&job, &holder_id), "deleted", "{job}");
    assert_eq!(answer(&job, other), "absent", "{job}");
    for d in [&seed, &a, &b] {
        let held = d.stat().await.expect("stat");
        assert!(held.tasks.is_empty(), "{}: {:?}", d.name, held.tasks);
    }

    // The copies are really gone: the next pull goes back to the origin, and verifies.
    let before = origin.bytes_served();
    let out = cluster.dir.path().join("again");
    download_within(holder, &url, &out).await.expect("download");
    assert_eq!(sha256_file(&out), origin.digest());
    assert!(
        origin.bytes_served() >= before + size,
        "served from a cache"
    );
}
