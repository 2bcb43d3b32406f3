//! `pollen demo`, the README's first command: the whole swarm in one process distributes a
//! file, every copy verified, the origin read about once, and nothing left behind.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_spreads_a_file_peer_to_peer_verifies_every_copy_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(bin())
        .args(["demo", "--json", "--peers", "4", "--size", "16MiB"])
        // The demo's temporary directory goes here, so the test can see it is removed.
        .env("TMPDIR", tmp.path())
        .output()
        .await
        .expect("pollen demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON report");
    let size = 16 * MIB;
    assert_eq!(r["file_bytes"], size);
    assert_eq!(r["all_verified"], true, "{r}");
    let per_peer = r["per_peer"].as_array().expect("per_peer");
    assert_eq!(per_peer.len(), 4);
    assert!(per_peer.iter().all(|p| p["verified"] == true), "{r}");
    // The origin is read once (the seed's fetch), not once per peer; the rest came from
    // peers: four copies, at most one of them from the origin.
    let origin = r["origin_bytes"].as_u64().expect("origin_bytes");
    assert!(
        origin >= size && origin < 2 * size,
        "origin served {origin}: {r}"
    );
    let from_peers: u64 = per_peer
        .iter()
        .map(|p| p["bytes_from_peers"].as_u64().expect("bytes_from_peers"))
        .sum();
    assert!(
        from_peers >= 3 * size,
        "peers took only {from_peers} from each other: {r}"
    );
    // What peers served covers what peers took (a slice sent twice at the end of a download
    // counts on the sender's side only).
    let served = r["p2p_bytes"].as_u64().expect("p2p_bytes");
    assert!(served >= from_peers && served < from_peers + size, "{r}");
    assert_eq!(r["p2p_received_bytes"], from_peers, "{r}");
    // The report's rows account for what the origin sent: the seed's read (and a peer's,
    // had one been sent to the origin) add up to at least the file and at most what was sent.
    let read: u64 = std::iter::once(&r["seed"])
        .chain(per_peer)
        .map(|n| n["bytes_from_origin"].as_u64().expect("bytes_from_origin"))
        .sum();
    assert!(read >= size && read <= origin, "{r}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_zero_peers_with_a_clear_message() {
    let out = tokio::process::Command::new(bin())
        .args(["demo", "--peers", "0"])
        .output()
        .await
        .expect("pollen demo runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--peers must be at least 1"), "{stderr}");
}
