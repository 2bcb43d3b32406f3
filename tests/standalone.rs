//! `pollen standalone`: manager, scheduler and seed daemon in one process serve this machine,
//! and another daemon that joins through the manager gets its files peer to peer.

mod common;

use common::manager::Admin;
use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_this_machine_and_daemons_that_join_it() {
    let size = 16 * MIB;
    let origin = origin(size).await;
    let mut spec = ClusterSpec::standalone(bin(), 0);
    spec.seed = false;
    let cluster = Cluster::start(spec).await.expect("cluster");
    // A client for the standalone seed's API socket (the process itself is started below).
    let local = cluster.stranger("standalone-seed", vec![]);
    let data = cluster.dir.path().join("standalone");
    let args: Vec<String> = [
        "standalone",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--scheduler-listen",
        "127.0.0.5:0",
        "--upload-listen",
        "127.0.0.5:0",
        "--proxy-listen",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--api-socket".to_string(),
        local.socket.to_string_lossy().into_owned(),
        "--data-dir".into(),
        data.to_string_lossy().into_owned(),
    ])
    .collect();
    let standalone = cluster
        .start_role(
            "standalone",
            &args,
            &[("POLLEN_ADMIN_PASSWORD", "standalone-admin")],
        )
        .await
        .expect("standalone starts");
    assert!(
        standalone.line.starts_with("standalone ready"),
        "{}",
        standalone.line
    );
    let grpc = standalone.field("grpc").expect("grpc").to_string();
    let rest = standalone.field("manager").expect("manager").to_string();

    // This machine: `pollen get` through the standalone seed.
    local
        .wait_connected()
        .await
        .expect("the seed has its scheduler");
    let out = cluster.dir.path().join("local");
    download_within(&local, &origin.url("/blob"), &out)
        .await
        .expect("local download");
    assert_eq!(sha256_file(&out), origin.digest());

    // Another daemon joins through the manager and gets the file from the seed.
    let mut joiner = cluster.stranger(
        "joiner",
        vec![
            "--manager".into(),
            grpc,
            "--upload-listen".into(),
            "127.0.0.6:0".into(),
        ],
    );
    joiner.start().await.expect("joiner starts");
    joiner.wait_connected().await.expect("joiner placed");
    let out = cluster.dir.path().join("joined");
    download_within(&joiner, &origin.url("/blob"), &out)
        .await
        .expect("joiner download");
    assert_eq!(sha256_file(&out), origin.digest());
    assert_eq!(
        origin.bytes_served(),
        size,
        "the joiner went to the origin instead of the seed"
    );

    // The manager shows both, and the scheduler.
    let admin = Admin::sign_in_at(&rest, "standalone-admin").await;
    let peers = admin.get("/api/v1/peers?active=true").await;
    let peers = peers.as_array().expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(peers.iter().filter(|p| p["is_seed"] == true).count(), 1);
    let schedulers = admin.get("/api/v1/schedulers?active=true").await;
    assert_eq!(schedulers.as_array().map(Vec::len), Some(1), "{schedulers}");
}

/// With its API socket in use by another daemon, or its proxy port taken, `pollen standalone`
/// fails before it starts anything (no manager database, no listener) and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_checks_its_socket_and_ports_before_starting_anything() {
    let other = Cluster::start(ClusterSpec::standalone(bin(), 1))
        .await
        .expect("a daemon already running");
    let busy = &other.peers[0].socket;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let data = other.dir.path().join("standalone");
    let run = |socket: &std::path::Path, proxy: &str| {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--scheduler-listen",
            "127.0.0.1:0",
            "--upload-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            proxy,
            "--api-socket",
        ])
        .arg(socket)
        .arg("--data-dir")
        .arg(&data)
        .env("POLLEN_ADMIN_PASSWORD", "standalone-admin");
        async move {
            tokio::time::timeout(HANG, cmd.output())
                .await
                .expect("standalone hung")
                .expect("runs")
        }
    };
    let o = run(busy, "off").await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "standalone started on a busy socket");
    assert!(
        err.contains("another pollen daemon answers on") && err.contains("--api-socket"),
        "{err}"
    );
    let o = run(&other.dir.path().join("free.sock"), &taken_addr).await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "standalone started on a taken port");
    assert!(
        err.contains(&format!(
            "cannot listen on {taken_addr} for the seed's registry mirror"
        )),
        "{err}"
    );
    assert!(
        !data.join("manager").exists(),
        "the manager made its database before the start failed"
    );
    drop(taken);
}
