//! `pollen cache ls|stat|rm|import|export` with real processes: a downloaded task listed,
//! shown by URL and by id prefix, removed (and gone from the listing, its content file with
//! it), and the errors for a task that is not there and a name that is neither an id nor a
//! URL; a removed task no longer offered by the scheduler as held by that host; a file
//! imported as the task of its digest (never of a URL), exported, and spread from a seed.

mod common;

use std::ffi::OsStr;

use common::*;
use pollen_core::TaskKey;
use pollen_proto::scheduler::scheduler_client::SchedulerClient;
use pollen_proto::scheduler::{
    peer_event, scheduler_event, HostInfo, NeedParents, PeerEvent, Register, TaskRequest,
};
use pollen_testkit::cluster::{Cluster, ClusterSpec, DaemonProc};

/// `pollen cache ARGS` on `daemon`: whether it succeeded, stdout, stderr.
async fn cache(daemon: &DaemonProc, args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&OsStr> = vec!["cache".as_ref()];
    all.extend(args.iter().map(OsStr::new));
    let out = pollen_cli(daemon, &all).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_listed_shown_and_removed_by_url_or_id() {
    let origin = origin(3 * MIB).await;
    let url = origin.url("/blob");
    let cluster = lone_daemon(&[]).await;
    let daemon = &cluster.peers[0];
    let out = cluster.dir.path().join("blob.out");
    download_within(daemon, &url, &out).await.expect("download");
    let id = daemon.stat().await.expect("stat").tasks[0].task_id.clone();

    let (ok, listing, err) = cache(daemon, &["ls"]).await;
    assert!(ok, "{err}");
    assert!(
        listing.contains(&id[..12]) && listing.contains(&url),
        "{listing}"
    );
    assert!(listing.contains("100%"), "{listing}");

    let (ok, shown, err) = cache(daemon, &["stat", &url, "--json"]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["task_id"], id.as_str());
    assert_eq!(shown["complete"], true);
    assert_eq!(shown["content_length"], 3 * MIB);
    let (ok, by_prefix, err) = cache(daemon, &["stat", &id[..10]]).await;
    assert!(ok && by_prefix.contains(&url), "{err}{by_prefix}");

    let (ok, _, err) = cache(daemon, &["rm", &id[..10]]).await;
    assert!(ok && err.contains("removed"), "{err}");
    assert!(daemon.stat().await.expect("stat").tasks.is_empty());
    let (ok, listing, _) = cache(daemon, &["ls"]).await;
    assert!(ok && listing.contains("no task"), "{listing}");
    // The user's own output is not the cache's: it stays.
    assert_eq!(std::fs::metadata(&out).expect("output").len(), 3 * MIB);

    let (ok, _, err) = cache(daemon, &["rm", &url]).await;
    assert!(!ok && err.contains("no task in the cache"), "{err}");
    let (ok, _, err) = cache(daemon, &["stat", "not a task"]).await;
    assert!(!ok && err.contains("neither a task id nor a URL"), "{err}");
    // Downloaded again, it is fetched anew from the origin.
    let again = cluster.dir.path().join("again.out");
    download_within(daemon, &url, &again)
        .await
        .expect("download again");
    assert_eq!(daemon.stat().await.expect("stat").origin_bytes, 6 * MIB);
}

/// The upload ports of the parents the scheduler offers a new peer of `url` (registered as
/// host `name`), once it offers any.
async fn parents_offered(scheduler: &str, name: &str, url: &str) -> Vec<u32> {
    let mut client = SchedulerClient::connect(scheduler.to_string())
        .await
        .expect("reach the scheduler");
    let mut commands = client
        .host_session(HostInfo {
            host_id: name.into(),
            hostname: name.into(),
            ip: "127.0.0.1".into(),
            upload_port: 9,
            max_upload_connections: 1,
            ..Default::default()
        })
        .await
        .expect("host session")
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = commands.message().await {} });
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let task = TaskKey::of_url(url).task_id().expect("task id");
    for ev in [
        peer_event::Event::Register(Register {
            peer_id: format!("{name}-peer"),
            host_id: name.into(),
            task: Some(TaskRequest {
                task_id: task.hex(),
                url: url.into(),
                ..Default::default()
            }),
        }),
        peer_event::Event::NeedParents(NeedParents::default()),
    ] {
        tx.send(PeerEvent { event: Some(ev) }).await.expect("send");
    }
    let mut events = client
        .announce_peer(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("announce")
        .into_inner();
    loop {
        let ev = tokio::time::timeout(HANG, events.message())
            .await
            .expect("the scheduler answers")
            .expect("stream open")
            .expect("an event");
        if let Some(scheduler_event::Event::Parents(p)) = ev.event {
            return p.parents.iter().map(|p| p.port).collect();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_task_is_no_longer_offered_by_the_scheduler_as_held_by_that_host() {
    let origin = origin(2 * MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::new(bin(), 1))
        .await
        .expect("cluster");
    let peer = &cluster.peers[0];
    download_within(peer, &url, &cluster.dir.path().join("out"))
        .await
        .expect("download");
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u32>().ok());
    let own = port(&peer.stat().await.expect("stat").upload_addr).expect("upload port");
    let before = parents_offered(&cluster.scheduler_url, "watcher-1", &url).await;
    assert!(before.contains(&own), "the peer holds it: {before:?}");

    let (ok, _, err) = cache(peer, &["rm", &url]).await;
    assert!(ok, "{err}");
    // The report goes out as the task is removed; a few rounds allow for it to arrive.
    let mut n = 2;
    loop {
        let offered = parents_offered(&cluster.scheduler_url, &format!("watcher-{n}"), &url).await;
        if !offered.contains(&own) {
            break;
        }
        assert!(n < 50, "still offered after {n} rounds: {offered:?}");
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes `size` random bytes to `dir/name`.
fn random_file(dir: &std::path::Path, name: &str, size: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pollen_testkit::origin::random_data(size as usize)).expect("write");
    path
}

/// An imported file is the task of its sha256: a download naming that digest gets it from the
/// cache without asking the origin, a download of the URL the import named gets the origin's
/// own bytes, and export writes it back; bad imports are refused with nothing kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_file_serves_its_digest_never_a_url_and_exports() {
    let origin = origin(MIB).await;
    let url = origin.url("/blob");
    let cluster = lone_daemon(&[]).await;
    let daemon = &cluster.peers[0];
    let dir = cluster.dir.path();
    let file = random_file(dir, "model.bin", 3 * MIB + 5);
    let digest = sha256_file(&file);

    let (ok, id, err) = cache(
        daemon,
        &["import", file.to_str().expect("utf-8"), "--url", &url],
    )
    .await;
    assert!(ok, "{err}");
    let id = id.trim().to_string();
    assert_eq!(format!("sha256:{id}"), digest.to_string());
    assert!(err.contains("imported"), "{err}");
    let (ok, listing, _) = cache(daemon, &["ls"]).await;
    assert!(
        ok && listing.contains(&id[..12]) && listing.contains("100%"),
        "{listing}"
    );
    let (ok, again, err) =
        cache(daemon, &["import", file.to_str().expect("utf-8"), "--json"]).await;
    assert!(ok, "{err}");
    let again: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(again["already_held"], true);

    // A download naming the digest is served from the cache; the origin is never asked.
    let by_digest = dir.join("by-digest");
    tokio::time::timeout(
        HANG,
        daemon.download(&url, &by_digest, Some(&digest.to_string())),
    )
    .await
    .expect("not hung")
    .expect("served from the cache");
    assert_eq!(sha256_file(&by_digest), digest);
    assert_eq!(origin.bytes_served(), 0);
    // A download of the URL alone is not the import's: it is what the origin serves.
    let by_url = dir.join("by-url");
    download_within(daemon, &url, &by_url)
        .await
        .expect("download");
    assert_eq!(sha256_file(&by_url), origin.digest());

    // Export by id prefix, by the URL the import recorded; an existing output is refused.
    let out = dir.join("exported");
    let (ok, _, err) = cache(
        daemon,
        &["export", &id[..10], "-O", out.to_str().expect("utf-8")],
    )
    .await;
    assert!(ok && err.contains("saved"), "{err}");
    assert_eq!(sha256_file(&out), digest);
    let (ok, _, err) = cache(daemon, &["export", &id, "-O", out.to_str().expect("utf-8")]).await;
    assert!(!ok && err.contains("--overwrite"), "{err}");
    std::fs::write(&out, b"edited").expect("edit");
    let (ok, _, err) = cache(
        daemon,
        &[
            "export",
            &id,
            "-O",
            out.to_str().expect("utf-8"),
            "--overwrite",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(sha256_file(&out), digest);
    let (ok, _, err) = cache(
        daemon,
        &[
            "export",
            "0123456789abcdef",
            "-O",
            dir.join("none").to_str().expect("utf-8"),
        ],
    )
    .await;
    assert!(!ok && err.contains("no task in the cache"), "{err}");
    assert!(!dir.join("none").exists());

    // Refused imports keep nothing: a wrong digest, a missing file, a directory.
    let tasks = daemon.stat().await.expect("stat").tasks.len();
    let other = random_file(dir, "other.bin", MIB);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (ok, _, err) = cache(
        daemon,
        &["import", other.to_str().expect("utf-8"), "--digest", &wrong],
    )
    .await;
    assert!(!ok && err.contains("digest mismatch"), "{err}");
    let (ok, _, err) = cache(
        daemon,
        &["import", dir.join("missing").to_str().expect("utf-8")],
    )
    .await;
    assert!(
        !ok && err.contains("cannot read") && err.contains("No such file"),
        "{err}"
    );
    let (ok, _, err) = cache(daemon, &["import", dir.to_str().expect("utf-8")]).await;
    assert!(!ok && err.contains("not a regular file"), "{err}");
    assert_eq!(daemon.stat().await.expect("stat").tasks.len(), tasks);
}

/// Downloads the content of `digest` (asked for as `url`) on `peer` without reading the origin.
async fn by_digest_without_origin(
    peer: &DaemonProc,
    url: &str,
    digest: pollen_core::ContentDigest,
    out: &std::path::Path,
) -> Result<(), tonic::Status> {
    let req = pollen_proto::daemon::DownloadRequest {
        url: url.into(),
        output_path: out.to_string_lossy().into_owned(),
        digest: digest.to_string(),
        no_origin: true,
        ..Default::default()
    };
    tokio::time::timeout(HANG, peer.download_request(req))
        .await
        .expect("not hung")
}

/// A file a seed imports is spread to the fleet: a peer that names its digest gets it from the
/// seed although the origin was never read (`--no-origin` would fail otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_imported_on_a_seed_reaches_peers_without_the_origin() {
    let origin = origin(MIB).await;
    let url = origin.url("/blob");
    let cluster = Cluster::start(ClusterSpec::new(bin(), 2))
        .await
        .expect("cluster");
    let seed = cluster.seed.as_ref().expect("a seed");
    let file = random_file(cluster.dir.path(), "weights.bin", 6 * MIB);
    let digest = sha256_file(&file);
    let (ok, _, err) = cache(
        seed,
        &["import", file.to_str().expect("utf-8"), "--url", &url],
    )
    .await;
    assert!(ok, "{err}");
    for (n, peer) in cluster.peers.iter().enumerate() {
        let out = cluster.dir.path().join(format!("out-{n}"));
        by_digest_without_origin(peer, &url, digest, &out)
            .await
            .expect("fetched from the seed");
        assert_eq!(sha256_file(&out), digest);
    }
    assert_eq!(origin.bytes_served(), 0);
    let peer_bytes: u64 = {
        let mut total = 0;
        for p in &cluster.peers {
            total += p.stat().await.expect("stat").p2p_download_bytes;
        }
        total
    };
    assert_eq!(peer_bytes, 2 * 6 * MIB);
}

/// An ordinary peer's import is not trusted by the fleet: its announce does not publish the
/// task's pieces, so another peer asking for the digest is not served by it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_imported_on_an_ordinary_peer_is_not_taken_on_its_word() {
    let origin = origin(MIB).await;
    let url = origin.url("/blob");
    let mut spec = ClusterSpec::new(bin(), 2);
    spec.daemon_args = vec!["--parent-wait".into(), "3s".into()];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let file = random_file(cluster.dir.path(), "weights.bin", 6 * MIB);
    let digest = sha256_file(&file);
    let (ok, _, err) = cache(
        &cluster.peers[0],
        &["import", file.to_str().expect("utf-8"), "--url", &url],
    )
    .await;
    assert!(ok, "{err}");
    let out = cluster.dir.path().join("out");
    let r = by_digest_without_origin(&cluster.peers[1], &url, digest, &out).await;
    let e = r.expect_err("no trusted host holds the content");
    assert!(e.message().contains("--no-origin"), "{e:?}");
    assert!(!out.exists());
    let importer = cluster.peers[0].stat().await.expect("stat");
    assert_eq!(importer.upload_bytes, 0, "the importer served nothing");
}
