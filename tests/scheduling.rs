//! Scheduling under load, on loopback: a slow parent gets a smaller share of the pieces, a
//! host with no free upload slot is not offered as a parent, rate limits hold, and prefetch
//! yields to foreground downloads.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pollen_proto::scheduler::scheduler_client::SchedulerClient;
use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, FinishedPiece, HostInfo, HostLoad, NeedParents,
    PeerEvent, PeerFinished, PiecesFinished, Register, SchedulerEvent, TaskRequest,
};
use pollen_scheduler::task_facts::expected_task_id;
use pollen_scheduler::{SchedulerConfig, SchedulerService};
use pollen_testkit::cluster::{Cluster, ClusterSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;

fn limit_args(bytes_per_sec: u64) -> Vec<String> {
    vec!["--upload-rate-limit".into(), bytes_per_sec.to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_limited_to_a_tenth_serves_a_smaller_share_than_the_fast_ones() {
    let size = 48 * MIB;
    let origin = origin(size).await;
    let expected = origin.digest();
    let mut spec = ClusterSpec::new(bin(), 4);
    spec.peer_args = vec![
        limit_args(40 * MIB),
        limit_args(40 * MIB),
        limit_args(4 * MIB),
        Vec::new(),
    ];
    let mut cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    // The three parents get the file first; then the seed leaves, so the fourth peer can
    // only use them.
    let parents: Vec<_> = cluster.peers[..3].iter().collect();
    assert_all_verified(&get_all(&parents, &url, cluster.dir.path()).await, expected);
    cluster.seed.as_mut().expect("seed").kill().await;
    let mut before = Vec::new();
    for p in &cluster.peers[..3] {
        before.push(p.stat().await.expect("stat").upload_bytes);
    }
    let child: Vec<_> = cluster.peers[3..].iter().collect();
    assert_all_verified(&get_all(&child, &url, cluster.dir.path()).await, expected);
    let mut sent = Vec::new();
    for (p, b) in cluster.peers[..3].iter().zip(before) {
        sent.push(p.stat().await.expect("stat").upload_bytes - b);
    }
    let (fast, slow) = (sent[0].min(sent[1]), sent[2]);
    assert!(
        slow < fast,
        "the slow parent sent {slow} bytes, a fast one only {fast} (all: {sent:?})"
    );
}

/// A download from the origin under `flag` = 8 MiB/s moves at most 8.8 MiB/s.
async fn limited_download(flag: &str) {
    let size = 24 * MIB;
    let limit = 8 * MIB;
    let origin = origin(size).await;
    let mut spec = ClusterSpec::standalone(bin(), 1);
    spec.daemon_args = vec![flag.into(), limit.to_string()];
    let cluster = Cluster::start(spec).await.expect("cluster");
    let out = cluster.dir.path().join("limited.bin");
    let started = Instant::now();
    cluster.peers[0]
        .download(&origin.url("/blob"), &out, None)
        .await
        .expect("download");
    // A real clock, so only an upper bound on speed (a lower bound on time): a slower or
    // busier machine makes the transfer slower and cannot fail this; only a limiter that lets
    // bytes through early can. (The limiter's pacing itself is checked exactly on a paused
    // clock in pollen_core::rate_limit.)
    let rate = size as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate <= 1.1 * limit as f64,
        "moved {rate:.0} B/s under a {limit} B/s {flag}"
    );
    assert_eq!(sha256_file(&out), origin.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_download_is_never_faster_than_its_limit_plus_ten_percent() {
    limited_download("--download-rate-limit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_rate_limited_download_is_never_faster_than_its_limit_plus_ten_percent() {
    limited_download("--task-download-rate-limit").await;
}

/// The first task in `stat` of `len` bytes, as (pieces present, complete).
async fn held(d: &pollen_testkit::cluster::DaemonProc, len: u64) -> Option<(u32, bool)> {
    let stat = d.stat().await.expect("stat");
    stat.tasks
        .iter()
        .find(|t| t.content_length == len)
        .map(|t| (t.pieces_present, t.complete))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_waits_for_a_foreground_download_then_keeps_to_its_limit() {
    let (fg_size, bg_size, bg_limit) = (24 * MIB, 12 * MIB, 4 * MIB);
    let (fg, bg) = (origin(fg_size).await, origin(bg_size).await);
    let work = tempfile::tempdir().expect("tmp");
    let config = work.path().join("daemon.toml");
    std::fs::write(
        &config,
        format!("prefetch_rate_limit = {bg_limit}\n[proxy]\nprefetch = true\n"),
    )
    .expect("config");
    let mut spec = ClusterSpec::standalone(bin(), 1);
    // The foreground download takes a few seconds, so the prefetch starts while it runs.
    spec.daemon_args = vec![
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--task-download-rate-limit".into(),
        (8 * MIB).to_string(),
    ];
    let cluster = Cluster::start(spec).await.expect("daemon");
    let d = &cluster.peers[0];
    let out = cluster.dir.path().join("foreground.bin");
    let url = fg.url("/blob");
    let foreground = d.download(&url, &out, None);
    let prefetch = async {
        // Once the foreground download holds a piece, a Range request starts the prefetch.
        let deadline = Instant::now() + HANG;
        while held(d, fg_size).await.is_none_or(|(n, _)| n == 0) {
            assert!(
                Instant::now() < deadline,
                "the foreground download never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let proxy = d.proxy_addr().await.expect("proxy");
        let r = reqwest::Client::new()
            .get(format!("http://{proxy}/v2/a/b/blobs/{}", bg.digest()))
            .header("X-Pollen-Registry", format!("http://{}", bg.addr))
            .header("Range", "bytes=0-9")
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 206);
    };
    let (done, ()) = tokio::join!(foreground, prefetch);
    done.expect("foreground download");
    assert_eq!(sha256_file(&out), fg.digest());
    // Nothing moved for the prefetch while the foreground download ran.
    let started = Instant::now();
    let (pieces, _) = held(d, bg_size).await.unwrap_or((0, false));
    assert_eq!(
        pieces, 0,
        "the prefetch took pieces during a foreground download"
    );
    let deadline = started + HANG;
    loop {
        if held(d, bg_size).await.is_some_and(|(_, complete)| complete) {
            break;
        }
        assert!(Instant::now() < deadline, "the prefetch never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A real clock, so only an upper bound on speed (a lower bound on time): a slower or
    // busier machine makes the transfer slower and cannot fail this; only a limiter that lets
    // bytes through early can. (The limiter's pacing itself is checked exactly on a paused
    // clock in pollen_core::rate_limit.)
    let rate = bg_size as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate <= 1.1 * bg_limit as f64,
        "prefetch moved {rate:.0} B/s under a {bg_limit} B/s prefetch_rate_limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_upload_is_never_faster_than_its_limit_plus_ten_percent() {
    let size = 24 * MIB;
    let limit = 8 * MIB;
    let origin = origin(size).await;
    let mut spec = ClusterSpec::new(bin(), 1);
    spec.seed_upload_limit = Some(limit);
    let cluster = Cluster::start(spec).await.expect("cluster");
    let url = origin.url("/blob");
    let seed = cluster.seed.as_ref().expect("seed");
    // The seed holds the file first; the peer then gets it from the seed alone.
    seed.download(&url, &cluster.dir.path().join("seed.bin"), None)
        .await
        .expect("seed download");
    let out = cluster.dir.path().join("peer.bin");
    let started = Instant::now();
    cluster.peers[0]
        .download(&url, &out, None)
        .await
        .expect("download");
    // A real clock, so only an upper bound on speed (a lower bound on time): a slower or
    // busier machine makes the transfer slower and cannot fail this; only a limiter that lets
    // bytes through early can. (The limiter's pacing itself is checked exactly on a paused
    // clock in pollen_core::rate_limit.)
    let rate = size as f64 / started.elapsed().as_secs_f64();
    let s = cluster.peers[0].stat().await.expect("stat");
    assert_eq!(s.p2p_download_bytes, size, "the peer did not use the seed");
    assert!(
        rate <= 1.1 * limit as f64,
        "moved {rate:.0} B/s from a parent limited to {limit} B/s"
    );
    assert_eq!(sha256_file(&out), origin.digest());
}

/// A fake daemon speaking the scheduler protocol over real gRPC.
struct FakeHost {
    client: SchedulerClient<Channel>,
    id: String,
    _session: Streaming<pollen_proto::scheduler::HostCommand>,
}

impl FakeHost {
    async fn open(url: &str, id: &str, ip: &str, max_upload_connections: u32) -> Self {
        let mut client = SchedulerClient::connect(url.to_string())
            .await
            .expect("connect");
        let session = client
            .host_session(HostInfo {
                host_id: id.into(),
                hostname: id.into(),
                ip: ip.into(),
                upload_port: 4100,
                max_upload_connections,
                ..Default::default()
            })
            .await
            .expect("session")
            .into_inner();
        Self {
            client,
            id: id.into(),
            _session: session,
        }
    }

    async fn announce(&self, peer: &str) -> (mpsc::Sender<PeerEvent>, Streaming<SchedulerEvent>) {
        let (tx, rx) = mpsc::channel(64);
        tx.send(ev(peer_event::Event::Register(Register {
            peer_id: peer.into(),
            host_id: self.id.clone(),
            task: Some({
                let mut req = TaskRequest {
                    url: "http://origin/blob".into(),
                    ..Default::default()
                };
                req.task_id = expected_task_id(&req).expect("task id");
                req
            }),
        })))
        .await
        .expect("send");
        let stream = self
            .client
            .clone()
            .announce_peer(ReceiverStream::new(rx))
            .await
            .expect("announce")
            .into_inner();
        (tx, stream)
    }

    /// Registers a peer that holds the whole (one-piece) task and says so; the stream is
    /// returned so the caller keeps it open (dropping it may cancel events still queued).
    async fn holder(&self, peer: &str) -> (mpsc::Sender<PeerEvent>, Streaming<SchedulerEvent>) {
        let (tx, rx) = self.announce(peer).await;
        for e in [
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: 4 * MIB,
                piece_length: 4 * MIB,
            }),
            peer_event::Event::PiecesFinished(PiecesFinished {
                pieces: vec![FinishedPiece {
                    number: 0,
                    digest: vec![1; 32],
                    ..Default::default()
                }],
            }),
            peer_event::Event::Finished(PeerFinished {}),
        ] {
            tx.send(ev(e)).await.expect("send");
        }
        (tx, rx)
    }

    async fn load(&self, upload_connections: u32) {
        self.client
            .clone()
            .report_load(HostLoad {
                host_id: self.id.clone(),
                upload_connections,
                ..Default::default()
            })
            .await
            .expect("load report");
    }
}

fn ev(e: peer_event::Event) -> PeerEvent {
    PeerEvent { event: Some(e) }
}

/// The next parents offered, sorted; `None` when the peer is sent to the origin instead.
async fn next_parents(rx: &mut Streaming<SchedulerEvent>) -> Option<Vec<String>> {
    loop {
        let msg = tokio::time::timeout(HANG, rx.message())
            .await
            .expect("the scheduler answered")
            .expect("stream")
            .expect("open");
        match msg.event {
            Some(scheduler_event::Event::Parents(p)) => {
                let mut ids: Vec<String> = p.parents.into_iter().map(|p| p.peer_id).collect();
                ids.sort();
                return Some(ids);
            }
            Some(scheduler_event::Event::BackToSource(_)) => return None,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_every_upload_slot_in_use_is_not_offered_as_a_parent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let server = tokio::spawn(
        SchedulerService::new(SchedulerConfig::default()).serve(listener, stop.clone()),
    );
    let busy = FakeHost::open(&url, "busy", "127.0.0.2", 4).await;
    let free = FakeHost::open(&url, "free", "127.0.0.3", 64).await;
    let child = FakeHost::open(&url, "child", "127.0.0.4", 64).await;
    let _busy_stream = busy.holder("busy-peer").await;
    let _free_stream = free.holder("free-peer").await;
    // The holders' events travel on their own streams: probe until the scheduler knows both.
    let both = vec!["busy-peer".to_string(), "free-peer".to_string()];
    let deadline = Instant::now() + HANG;
    for probe in 0.. {
        assert!(
            Instant::now() < deadline,
            "the holders never became parents"
        );
        let (_tx, mut rx) = child.announce(&format!("probe-{probe}")).await;
        // A probe may also be told to wait (silence) while an earlier one reads the origin.
        let answer = tokio::time::timeout(Duration::from_secs(2), next_parents(&mut rx)).await;
        if answer.ok().flatten().as_ref() == Some(&both) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A load report is applied before its answer returns.
    busy.load(4).await;
    let (tx, mut rx) = child.announce("child-peer").await;
    assert_eq!(
        next_parents(&mut rx).await,
        Some(vec!["free-peer".to_string()])
    );
    // Once the busy host frees its slots, it is offered again.
    busy.load(0).await;
    let mut offered_again = false;
    while Instant::now() < deadline && !offered_again {
        tx.send(ev(peer_event::Event::NeedParents(NeedParents::default())))
            .await
            .expect("send");
        offered_again = next_parents(&mut rx)
            .await
            .is_some_and(|p| p.contains(&"busy-peer".to_string()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        offered_again,
        "the busy host was never offered after freeing its slots"
    );
    // The fake hosts' streams are still open, so a graceful stop would wait for them.
    stop.cancel();
    server.abort();
}
