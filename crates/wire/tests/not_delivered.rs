//! The upload server tells its provider which slices may never have reached a live peer:
//! one whose sending failed, and those sent just before their connection ended. Nothing is
//! reported while the connection lives.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollen_core::{Bitfield, RateLimiter, SliceHash, TaskId, SLICE_LENGTH};
use pollen_wire::{
    PieceClient, PieceProvider, PieceResponse, ServedSlice, UploadServer, UploadStats,
};
use tokio_util::sync::CancellationToken;

const TASK: TaskId = TaskId([3; 32]);
/// Slices the served file holds.
const SLICES: u32 = 256;

/// Serves slices of `length` bytes (zeros from a sparse file) and records what the server
/// reports.
struct Recording {
    file: Arc<std::fs::File>,
    length: u32,
    served: AtomicUsize,
    not_delivered: Mutex<Vec<(TaskId, u32)>>,
}

impl PieceProvider for Recording {
    fn bitfield(&self, _task: &TaskId) -> Option<Bitfield> {
        None
    }

    fn slice(&self, _task: &TaskId, number: u32) -> Option<ServedSlice> {
        Some(ServedSlice {
            file: self.file.clone(),
            offset: u64::from(number) * u64::from(self.length),
            length: self.length,
            piece: number,
            hashes: Some(vec![[0u8; 32] as SliceHash].into()),
        })
    }

    fn served(&self, _task: &TaskId, _bytes: u64) {
        self.served.fetch_add(1, Ordering::SeqCst);
    }

    fn not_delivered(&self, task: &TaskId, slices: &[u32]) {
        let mut got = self.not_delivered.lock().expect("lock");
        got.extend(slices.iter().map(|&n| (*task, n)));
    }
}

struct Server {
    provider: Arc<Recording>,
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn server(length: u32) -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("content");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(u64::from(SLICES) * u64::from(length))
        .expect("sparse file");
    let provider = Arc::new(Recording {
        file: Arc::new(std::fs::File::open(&path).expect("open")),
        length,
        served: AtomicUsize::new(0),
        not_delivered: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = UploadServer::new(
        listener,
        provider.clone(),
        RateLimiter::new(None),
        Arc::new(UploadStats::default()),
        8,
    );
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    Server {
        provider,
        addr,
        stop,
        _dir: dir,
    }
}

/// Waits (up to a generous bound, for a loaded machine) until something was reported.
async fn reported(p: &Recording) -> Vec<(TaskId, u32)> {
    for _ in 0..1000 {
        let got = p.not_delivered.lock().expect("lock").clone();
        if !got.is_empty() {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Vec::new()
}

#[tokio::test]
async fn slices_sent_just_before_a_connection_ends_are_reported_when_it_ends() {
    let s = server(64 * 1024).await;
    let mut c = PieceClient::connect(s.addr, Duration::from_secs(5))
        .await
        .expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    for n in [1, 2] {
        c.request_slice(TASK, n).await.expect("request");
        match c.next_response().await.expect("response") {
            PieceResponse::Slice { header, .. } => assert_eq!(header.slice, n),
            other => panic!("expected slice {n}, got {other:?}"),
        }
        c.read_payload(&mut buf).await.expect("payload");
    }
    // A round trip after the slices: the server has finished with them by now.
    c.request_bitfield(TASK).await.expect("request");
    assert!(matches!(
        c.next_response().await.expect("bitfield"),
        PieceResponse::Bitfield(_)
    ));
    assert_eq!(s.provider.served.load(Ordering::SeqCst), 2);
    assert!(
        s.provider.not_delivered.lock().expect("lock").is_empty(),
        "nothing is reported while the connection lives"
    );
    drop(c);
    let mut got = reported(&s.provider).await;
    got.sort_by_key(|&(_, n)| n);
    assert_eq!(got, vec![(TASK, 1), (TASK, 2)]);
    s.stop.cancel();
}

#[tokio::test]
async fn a_slice_whose_sending_fails_is_reported_and_not_counted_as_served() {
    // Every slice of the largest length asked for at once (64 MiB), far more than the
    // socket buffers hold: the server is still sending one of them when the child goes.
    const ASKED: u32 = SLICES;
    let s = server(SLICE_LENGTH as u32).await;
    let mut c = PieceClient::connect(s.addr, Duration::from_secs(5))
        .await
        .expect("connect");
    for n in 0..ASKED {
        c.request_slice(TASK, n).await.expect("request");
    }
    assert!(matches!(
        c.next_response().await.expect("response"),
        PieceResponse::Slice { .. }
    ));
    // The child dies with the payloads unread.
    drop(c);
    let got = reported(&s.provider).await;
    // Slices are answered in order: those counted as served went out whole, and the next
    // is the one whose sending failed.
    let served = s.provider.served.load(Ordering::SeqCst) as u32;
    assert!(
        served < ASKED,
        "all {ASKED} slices fit in the socket buffers"
    );
    assert!(
        got.contains(&(TASK, served)),
        "{got:?} lacks slice {served}"
    );
    assert!(
        got.iter().all(|&(t, n)| t == TASK && n <= served),
        "{got:?}"
    );
    s.stop.cancel();
}
