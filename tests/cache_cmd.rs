//! `pollen cache ls|stat|rm` with real processes: a downloaded task listed, shown by URL and
//! by id prefix, removed (and gone from the listing, its content file with it), and the
//! errors for a task that is not there and a name that is neither an id nor a URL; and a
//! removed task no longer offered by the scheduler as held by that host.

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
