//! The upload server's cap on slices sent at once holds over every connection, and a
//! congestion control the kernel refuses does not stop it serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pollen_core::{Bitfield, PieceDigest, RateLimiter, TaskId};
use pollen_wire::{
    PieceClient, PieceProvider, PieceResponse, ServedSlice, UploadServer, UploadStats,
};
use tokio_util::sync::CancellationToken;

const PIECE: usize = 256 * 1024;
const PIECES: u32 = 4;

/// Serves one file of `PIECES` pieces and records how many were being sent at once.
struct Counting {
    file: Arc<std::fs::File>,
    digest: PieceDigest,
    sending: AtomicUsize,
    most: AtomicUsize,
}

impl PieceProvider for Counting {
    fn bitfield(&self, _task: &TaskId) -> Option<Bitfield> {
        let mut b = Bitfield::new(PIECES);
        (0..PIECES).for_each(|n| b.set(n));
        Some(b)
    }

    fn slice(&self, _task: &TaskId, number: u32) -> Option<ServedSlice> {
        let now = self.sending.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Some(ServedSlice {
            file: self.file.clone(),
            offset: u64::from(number) * PIECE as u64,
            length: PIECE as u32,
            piece: number,
            hashes: Some(vec![self.digest.0].into()),
        })
    }

    fn served(&self, _task: &TaskId, _bytes: u64) {
        self.sending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the server did for [`serve_all`]'s clients.
struct Served {
    /// The most pieces being sent at once.
    most: usize,
    /// Piece bytes the server counted as sent.
    bytes: u64,
}

/// Three clients each fetch every piece through a server with the given cap; returns the
/// most pieces that were being sent at once.
async fn most_at_once(limit: usize) -> usize {
    serve_all(limit, "").await.most
}

/// Every piece, once per client.
const ALL_BYTES: u64 = 3 * PIECES as u64 * PIECE as u64;

/// [`most_at_once`] with the server's connections set to TCP congestion control `congestion`.
async fn serve_all(limit: usize, congestion: &str) -> Served {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("content");
    let data = vec![7u8; PIECE * PIECES as usize];
    std::fs::write(&path, &data).expect("write");
    let provider = Arc::new(Counting {
        file: Arc::new(std::fs::File::open(&path).expect("open")),
        digest: PieceDigest::of(&data[..PIECE]),
        sending: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Slow enough that the clients' requests overlap: 3 MiB at 4 MiB/s.
    let stats = Arc::new(UploadStats::default());
    let server = UploadServer::new(
        listener,
        provider.clone(),
        RateLimiter::new(Some(4 << 20)),
        stats.clone(),
        8,
    )
    .with_piece_limit(limit)
    .with_congestion_control(congestion);
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(tokio::spawn(async move {
            let mut c = PieceClient::connect(addr, Duration::from_secs(5))
                .await
                .expect("connect");
            let task = TaskId([1; 32]);
            for n in 0..PIECES {
                c.request_slice(task, n).await.expect("request");
            }
            let mut buf = vec![0u8; PIECE];
            for n in 0..PIECES {
                match c.next_response().await.expect("response") {
                    PieceResponse::Slice { header: h, .. } => assert_eq!(h.slice, n),
                    other => panic!("expected piece {n}, got {other:?}"),
                }
                c.read_payload(&mut buf).await.expect("payload");
                assert!(buf.iter().all(|b| *b == 7));
            }
        }));
    }
    for c in clients {
        c.await.expect("every client got every piece");
    }
    stop.cancel();
    Served {
        most: provider.most.load(Ordering::SeqCst),
        bytes: stats.bytes.load(Ordering::SeqCst),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_pieces_are_sent_at_once_than_the_cap() {
    assert_eq!(most_at_once(1).await, 1);
    // Three clients asking at once fill a cap of two.
    assert_eq!(most_at_once(2).await, 2);
    // Without the cap the same clients are served side by side, so the cap is what held.
    assert!(most_at_once(0).await > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_congestion_control_set_or_refused_still_serves_every_piece() {
    // Reno is in every Linux kernel; an unknown name is refused, logged and left at the
    // system's default. Either way every client gets every piece (checked in serve_all).
    assert_eq!(serve_all(0, "reno").await.bytes, ALL_BYTES);
    assert_eq!(serve_all(0, "no-such-algorithm").await.bytes, ALL_BYTES);
}
