//! A daemon stopped in the middle of a download stops everything it started: when
//! `DaemonHandle::shutdown` returns, no task of the daemon is left on its runtime, and the
//! output file the download was writing is not left half-written.

use std::time::Duration;

use pollen_daemon::{Daemon, DaemonConfig, ProxyConfig};
use pollen_proto::daemon::DownloadRequest;
use pollen_testkit::origin::{random_data, Origin};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Stops `daemon` and checks that nothing of it is left on `daemon_rt`: what shutdown
/// waited for is over; a connection the HTTP client or the API server was closing as it
/// returned may take a moment more, nothing longer. `what` names the work under test.
fn stop_and_check_nothing_is_left(
    daemon_rt: &tokio::runtime::Runtime,
    daemon: pollen_daemon::DaemonHandle,
    what: &str,
) {
    daemon_rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), daemon.shutdown())
            .await
            .expect("shutdown hung");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while daemon_rt.metrics().num_alive_tasks() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} tasks of the daemon still alive after shutdown ({what})",
            daemon_rt.metrics().num_alive_tasks()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_daemon_stopped_mid_download_leaves_no_task_and_no_half_written_file() {
    // The daemon runs on a runtime of its own, so what is left on it is the daemon's alone;
    // the origin and the client run on another.
    let (outside, daemon_rt) = (runtime(), runtime());
    let dir = tempfile::tempdir().expect("tmp");
    let origin = outside
        .block_on(Origin::start(
            ([127, 0, 0, 1], 0).into(),
            random_data(64 << 20),
        ))
        .expect("origin");
    let cfg = DaemonConfig {
        data_dir: dir.path().join("data"),
        api_socket: dir.path().join("api.sock"),
        api_group: String::new(),
        upload_listen: ([127, 0, 0, 1], 0).into(),
        origin_allow: vec!["127.0.0.0/8".into()],
        proxy: ProxyConfig {
            listen: None,
            ..Default::default()
        },
        ..Default::default()
    };
    let daemon = daemon_rt.block_on(Daemon::start(cfg)).expect("daemon");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let output = out_dir.join("file");
    // The origin sends about 6 MiB/s: the download is well under way, far from done, when
    // the daemon is told to stop.
    let url = origin.url("/slow");
    let (client, stream) = outside.block_on(async {
        let mut client = pollen_daemon::api::client::connect(&daemon.api_socket)
            .await
            .expect("connect");
        let mut stream = client
            .download(DownloadRequest {
                url,
                output_path: output.to_string_lossy().into_owned(),
                ..Default::default()
            })
            .await
            .expect("download starts")
            .into_inner();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), stream.message())
                .await
                .expect("progress")
                .expect("stream")
                .expect("a message");
            assert!(
                !m.done,
                "the download finished before the daemon was stopped"
            );
            if m.completed_bytes > 0 {
                break;
            }
        }
        (client, stream)
    });
    assert!(
        daemon_rt.metrics().num_alive_tasks() > 0,
        "the daemon runs tasks while it downloads"
    );
    // (The download alone would take ten seconds more.)
    stop_and_check_nothing_is_left(&daemon_rt, daemon, "a download");
    drop((client, stream));
    let files: Vec<_> = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        files.is_empty(),
        "shutdown left {files:?} in the output directory"
    );
    assert!(
        origin.bytes_served() < 64 << 20,
        "the download had finished: the test proves nothing"
    );
}

#[test]
fn an_open_proxy_tunnel_is_closed_by_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (outside, daemon_rt) = (runtime(), runtime());
    let dir = tempfile::tempdir().expect("tmp");
    // The tunnel's far end: a server that holds every connection and reports when it ends.
    let (far, far_addr) = outside.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        (l, addr)
    });
    let far_end = outside.spawn(async move {
        let (mut s, _) = far.accept().await.expect("accept");
        let mut buf = [0u8; 64];
        // Zero bytes: the daemon closed its side.
        while s.read(&mut buf).await.expect("read") > 0 {}
    });
    let cfg = DaemonConfig {
        data_dir: dir.path().join("data"),
        api_socket: dir.path().join("api.sock"),
        api_group: String::new(),
        upload_listen: ([127, 0, 0, 1], 0).into(),
        proxy: ProxyConfig {
            listen: Some(([127, 0, 0, 1], 0).into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let daemon = daemon_rt.block_on(Daemon::start(cfg)).expect("daemon");
    let proxy = daemon.proxy_addr.expect("proxy");
    let client = outside.block_on(async {
        let mut c = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        c.write_all(format!("CONNECT {far_addr} HTTP/1.1\r\nHost: {far_addr}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let mut head = [0u8; 12];
        c.read_exact(&mut head).await.expect("answer");
        assert_eq!(&head, b"HTTP/1.1 200", "the tunnel opened");
        c
    });
    stop_and_check_nothing_is_left(&daemon_rt, daemon, "the tunnel");
    outside.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), far_end)
            .await
            .expect("the far end of the tunnel was never closed")
            .expect("far end");
    });
    drop(client);
}
