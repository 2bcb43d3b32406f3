//! The scheduler's port under a connection flood: sockets that never become HTTP/2 clients
//! are closed after `connection_setup_timeout`, and a real client still gets answers even
//! when the flood filled every place.

use std::time::Duration;

use pollen_proto::scheduler::scheduler_client::SchedulerClient;
use pollen_proto::scheduler::HostLoad;
use pollen_scheduler::{SchedulerConfig, SchedulerService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

/// Long enough to never fire on a working machine; only a hang reaches it.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_sockets_are_cut_off_and_a_daemon_still_gets_in() {
    let cfg = SchedulerConfig {
        max_connections: 4,
        connection_setup_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(SchedulerService::new(cfg).serve(listener, stop.clone()));

    // More sockets than places: idle ones, and one that sends part of the preface and stops.
    let mut hogs = Vec::new();
    for i in 0..6 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i == 0 {
            s.write_all(b"PRI * HT").await.expect("write");
        }
        hogs.push(s);
    }

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_timeout(HANG)
        .connect()
        .await
        .expect("a real client connects");
    let mut client = SchedulerClient::new(channel);
    let answer = tokio::time::timeout(HANG, client.report_load(HostLoad::default()))
        .await
        .expect("the scheduler answered a real client");
    // The service itself answered (this host has no session), not the transport.
    assert_eq!(
        answer.expect_err("unknown host").code(),
        tonic::Code::NotFound
    );

    for (i, mut s) in hogs.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(HANG, s.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("socket {i} is still open"))
            .unwrap_or(0);
        assert_eq!(n, 0, "socket {i} was answered");
    }
    stop.cancel();
}
