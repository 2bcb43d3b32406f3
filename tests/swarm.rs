//! A real swarm of processes on loopback: origin load, real peer-to-peer exchange, and a
//! parent killed in the middle of a transfer.

mod common;

use std::time::Duration;

use common::*;
use pollen_testkit::cluster::{Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_peers_get_verified_copies_while_the_origin_serves_the_file_about_once() {
    let size = 64 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let cluster = Cluster::start(ClusterSpec::new(bin(), 5))
        .await
        .expect("cluster");
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, &origin.url("/blob"), cluster.dir.path()).await;
    assert_all_verified(&results, expected);
    for p in &cluster.peers {
        let s = p.stat().await.expect("stat");
        assert_eq!(s.origin_bytes, 0, "{} went to the origin", p.name);
        assert_eq!(
            s.p2p_download_bytes, size,
            "{} got part of the file elsewhere",
            p.name
        );
    }
    let served = origin.bytes_served();
    assert!(
        served as f64 <= 1.1 * size as f64,
        "origin served {served} bytes for a {size}-byte file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_slow_seed_most_bytes_move_between_ordinary_peers() {
    let size = 64 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 5);
    spec.peer_upload_limit = Some(40 * MIB);
    spec.seed_upload_limit = Some(10 * MIB);
    let cluster = Cluster::start(spec).await.expect("cluster");
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, &origin.url("/blob"), cluster.dir.path()).await;
    assert_all_verified(&results, expected);
    let mut received = 0;
    let mut from_peers = 0;
    for p in &cluster.peers {
        let s = p.stat().await.expect("stat");
        received += s.p2p_download_bytes;
        from_peers += s.upload_bytes;
    }
    let seed = cluster
        .seed
        .as_ref()
        .expect("seed")
        .stat()
        .await
        .expect("stat");
    assert!(
        2 * from_peers >= received,
        "only {from_peers} of {received} bytes came from ordinary peers (the seed sent {})",
        seed.upload_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_killed_mid_transfer_does_not_break_the_other_downloads() {
    let size = 64 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 5);
    // Slow enough that the transfer is still running when the parent dies.
    spec.peer_upload_limit = Some(12 * MIB);
    spec.seed_upload_limit = Some(12 * MIB);
    let mut cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    let dir = cluster.dir.path().to_path_buf();
    // Find the peer that serves others first, then kill it while the others still download.
    let (victim, results) = {
        let peers: Vec<_> = cluster.peers.iter().collect();
        let downloads = get_all(&peers, &url, &dir);
        let pick = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                for (i, p) in cluster.peers.iter().enumerate() {
                    if p.stat().await.map(|s| s.upload_bytes > 0).unwrap_or(false) {
                        return i;
                    }
                }
            }
        };
        tokio::pin!(downloads);
        let victim = tokio::select! {
            i = pick => i,
            _ = &mut downloads => panic!("every download finished before any peer served another"),
        };
        // Kill by pid through the OS, since the cluster is borrowed by the running downloads.
        let pid = cluster.peers[victim].pid().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill");
        (victim, downloads.await)
    };
    cluster.peers[victim].kill().await;
    for (i, r) in results.iter().enumerate() {
        if i == victim {
            continue;
        }
        let path = r.as_ref().expect("download survived the parent's death");
        assert_eq!(sha256_file(path), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_serving_corrupt_pieces_is_blocklisted_and_the_bytes_come_from_elsewhere() {
    // 16 pieces of 256 slices: far more than one parent's connections can have in flight,
    // so a parent that was not dropped after its first forged slice would be caught again.
    let size = 64 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    let cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    let first = cluster.dir.path().join("first.out");
    cluster.peers[0]
        .download(&url, &first, None)
        .await
        .expect("first get");
    // Rot peer-1's stored copy behind its back, the way a failing disk does: the bytes change
    // but the file's length and modification time do not, so peer-1 still believes its copy
    // and serves bad bytes to peer-2. (An edit that moves the mtime is caught by peer-1 itself;
    // see resilience.rs.)
    let content = cluster.peers[0].data_dir.join("content");
    let file = std::fs::read_dir(&content)
        .expect("content dir")
        .next()
        .expect("file")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&file).expect("read");
    for b in bytes.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    let mtime = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(&file, &bytes).expect("corrupt");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    let second = cluster.dir.path().join("second.out");
    tokio::time::timeout(HANG, cluster.peers[1].download(&url, &second, None))
        .await
        .expect("not hung")
        .expect("the download survives a lying parent");
    assert_eq!(sha256_file(&second), expected);
    let s = cluster.peers[1].stat().await.expect("stat");
    // The lie was seen...
    assert!(s.pieces_rejected >= 1, "no piece was rejected: {s:?}");
    let log = cluster.peers[1].log_text();
    assert_eq!(
        log.matches("parent failed").count(),
        1,
        "the lying parent failed more than once, or never:\n{log}"
    );
    // ...and the liar was dropped at once: no more forged slices than its connections had in
    // flight when the first one arrived (2 connections x 2 requests by default), and it was
    // never taken up again.
    assert!(s.pieces_rejected <= 4, "the liar kept being asked: {s:?}");
    assert_eq!(
        log.matches("downloading from parent").count(),
        1,
        "the liar was taken up again:\n{log}"
    );
    // The bytes came from the origin instead: nothing from peers, the whole file from it.
    assert_eq!(s.p2p_download_bytes, 0, "{s:?}");
    assert_eq!(s.origin_bytes, size, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_stops_answering_is_given_up_and_the_download_completes() {
    let size = 16 * MIB;
    let origin = origin(size).await;
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.seed = false;
    spec.daemon_args = vec!["--parent-stall-timeout".into(), "2s".into()];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    cluster.peers[0]
        .download(&url, &cluster.dir.path().join("first.out"), None)
        .await
        .expect("first get");
    // peer-1 holds the file but is frozen: connections to it open, nothing ever comes back.
    cluster.peers[0].pause(true);
    let second = cluster.dir.path().join("second.out");
    let r = tokio::time::timeout(HANG, cluster.peers[1].download(&url, &second, None)).await;
    cluster.peers[0].pause(false);
    r.expect("not hung")
        .expect("the download survives a silent parent");
    assert_eq!(sha256_file(&second), origin.digest());
    let log = cluster.peers[1].log_text();
    assert!(
        log.contains("sent nothing"),
        "the stall was not reported:\n{log}"
    );
}

/// Returns once some peer of `cluster` received piece bytes from another.
async fn p2p_started(cluster: &Cluster) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = 0;
        for p in &cluster.peers {
            got += p.stat().await.map(|s| s.p2p_download_bytes).unwrap_or(0);
        }
        if got > 0 {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_scheduler_or_the_seed_mid_transfer_does_not_break_downloads() {
    let size = 48 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    for victim in ["scheduler", "seed"] {
        let mut spec = ClusterSpec::new(bin(), 3);
        spec.peer_upload_limit = Some(8 * MIB);
        spec.seed_upload_limit = Some(8 * MIB);
        let cluster = Cluster::start(spec).await.expect("cluster");
        let url = format!("{}?run={victim}", origin.url("/blob"));
        let dir = cluster.dir.path().to_path_buf();
        let seed_pid = cluster.seed.as_ref().and_then(|s| s.pid()).expect("seed");
        let results = {
            let peers: Vec<_> = cluster.peers.iter().collect();
            let downloads = get_all(&peers, &url, &dir);
            tokio::pin!(downloads);
            tokio::select! {
                _ = p2p_started(&cluster) => {}
                _ = &mut downloads => panic!("finished before the fault"),
            }
            if victim == "seed" {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(seed_pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("kill seed");
            } else {
                cluster.kill_scheduler();
            }
            downloads.await
        };
        for r in &results {
            let path = r
                .as_ref()
                .unwrap_or_else(|e| panic!("after losing the {victim}: {e}"));
            assert_eq!(sha256_file(path), expected, "after losing the {victim}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_scheduler_restart_daemons_register_again_and_the_next_swarm_is_p2p() {
    let size = 24 * MIB;
    let (first, second) = (origin(size).await, origin(size).await);
    let mut spec = ClusterSpec::new(bin(), 3);
    spec.peer_upload_limit = Some(8 * MIB);
    spec.seed_upload_limit = Some(8 * MIB);
    let mut cluster = Cluster::start(spec).await.expect("cluster");
    let dir = cluster.dir.path().to_path_buf();
    let first_url = first.url("/blob");
    // A swarm loses its scheduler mid-transfer and still completes.
    let results = {
        let peers: Vec<_> = cluster.peers.iter().collect();
        let downloads = get_all(&peers, &first_url, &dir);
        tokio::pin!(downloads);
        tokio::select! {
            _ = p2p_started(&cluster) => {}
            _ = &mut downloads => panic!("finished before the fault"),
        }
        cluster.kill_scheduler();
        downloads.await
    };
    assert_all_verified(&results, first.digest());
    // Every daemon notices, then finds the scheduler again once it is back.
    for d in cluster.daemons() {
        let deadline = std::time::Instant::now() + HANG;
        while d.stat().await.expect("stat").scheduler_connected {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never noticed",
                d.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster
        .restart_scheduler()
        .await
        .expect("scheduler restarts");
    for d in cluster.daemons() {
        d.wait_connected().await.expect("registered again");
    }
    // The next swarm goes through the new scheduler: the origin serves about one copy and
    // the peers trade pieces.
    let before: u64 = futures::future::join_all(cluster.peers.iter().map(|p| p.stat()))
        .await
        .into_iter()
        .map(|s| s.expect("stat").p2p_download_bytes)
        .sum();
    let peers: Vec<_> = cluster.peers.iter().collect();
    let results = get_all(&peers, &second.url("/blob"), &dir).await;
    assert_all_verified(&results, second.digest());
    let after: u64 = futures::future::join_all(cluster.peers.iter().map(|p| p.stat()))
        .await
        .into_iter()
        .map(|s| s.expect("stat").p2p_download_bytes)
        .sum();
    assert!(
        after - before >= 2 * size,
        "the peers got only {} of {} bytes from each other or the seed",
        after - before,
        3 * size
    );
    assert!(
        second.bytes_served() <= size + size / 10,
        "the origin served {} bytes for a {size}-byte file",
        second.bytes_served()
    );
}
