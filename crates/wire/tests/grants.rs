//! A private task is served only on a connection that showed the scheduler's grant for that
//! task and for the address it comes from; a public task needs none.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::grant::{self, Grant, GrantKey, GrantSigner};
use pollen_core::{Bitfield, RateLimiter, TaskId};
use pollen_wire::{
    PieceClient, PieceProvider, PieceResponse, ServedSlice, UploadServer, UploadStats,
};
use tokio_util::sync::CancellationToken;

const PRIVATE: TaskId = TaskId([0xAA; 32]);
const PUBLIC: TaskId = TaskId([0xBB; 32]);
const LEN: u32 = 1024;

/// Holds one slice of each task; the private one needs a grant under `key`.
struct Holder {
    file: Arc<std::fs::File>,
    key: GrantKey,
}

fn now() -> u64 {
    pollen_core::grant::unix_now()
}

impl PieceProvider for Holder {
    fn bitfield(&self, _task: &TaskId) -> Option<Bitfield> {
        let mut b = Bitfield::new(1);
        b.set(0);
        Some(b)
    }

    fn slice(&self, _task: &TaskId, slice: u32) -> Option<ServedSlice> {
        Some(ServedSlice {
            file: self.file.clone(),
            offset: 0,
            length: LEN,
            piece: slice,
            hashes: Some(vec![[0u8; 32]].into()),
        })
    }

    fn is_private(&self, task: &TaskId) -> bool {
        *task == PRIVATE
    }

    fn admits(&self, task: &TaskId, peer: IpAddr, g: &Grant) -> bool {
        grant::verify(&[self.key], task, peer, g, now()).is_ok()
    }
}

async fn holder(key: GrantKey) -> (std::net::SocketAddr, Arc<UploadStats>, CancellationToken) {
    let file = tempfile::tempfile().expect("file");
    file.set_len(u64::from(LEN)).expect("size");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(UploadStats::default());
    let server = UploadServer::new(
        listener,
        Arc::new(Holder {
            file: Arc::new(file),
            key,
        }),
        RateLimiter::new(None),
        stats.clone(),
        8,
    );
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (addr, stats, stop)
}

/// Asks for `task`'s bitfield and slice 0: whether each was given.
async fn ask(c: &mut PieceClient, task: TaskId) -> (bool, bool) {
    c.request_bitfield(task).await.expect("request");
    let bits = match c.next_response().await.expect("bitfield") {
        PieceResponse::Bitfield(b) => !b.is_empty(),
        other => panic!("expected a bitfield, got {other:?}"),
    };
    c.request_slice(task, 0).await.expect("request");
    let slice = match c.next_response().await.expect("slice") {
        PieceResponse::Slice { .. } => {
            let mut buf = vec![0u8; LEN as usize];
            c.read_payload(&mut buf).await.expect("payload");
            true
        }
        PieceResponse::Missing(_) => false,
        other => panic!("expected a slice answer, got {other:?}"),
    };
    (bits, slice)
}

#[tokio::test]
async fn a_private_task_needs_a_grant_for_this_task_and_address() {
    let scheduler = GrantSigner::generate();
    let (addr, stats, stop) = holder(scheduler.public_key()).await;
    let here: IpAddr = "127.0.0.1".parse().expect("ip");
    let soon = now() + 300;
    let connect = || PieceClient::connect(addr, Duration::from_secs(5));

    let mut c = connect().await.expect("connect");
    assert_eq!(
        ask(&mut c, PUBLIC).await,
        (true, true),
        "public: no grant needed"
    );
    assert_eq!(
        ask(&mut c, PRIVATE).await,
        (false, false),
        "private, no grant"
    );

    // Grants that do not fit: another address (replayed by whoever was shown it), another
    // task, expired, or signed by a key the holder does not know.
    let elsewhere: IpAddr = "10.9.9.9".parse().expect("ip");
    let stranger = GrantSigner::generate();
    for (what, g) in [
        ("another address", scheduler.sign(&PRIVATE, elsewhere, soon)),
        ("another task", scheduler.sign(&PUBLIC, here, soon)),
        ("expired", scheduler.sign(&PRIVATE, here, now() - 1)),
        ("unknown key", stranger.sign(&PRIVATE, here, soon)),
    ] {
        let mut c = connect().await.expect("connect");
        c.send_grant(PRIVATE, g).await.expect("grant sent");
        assert_eq!(ask(&mut c, PRIVATE).await, (false, false), "{what}");
    }

    let mut c = connect().await.expect("connect");
    c.send_grant(PRIVATE, scheduler.sign(&PRIVATE, here, soon))
        .await
        .expect("grant sent");
    assert_eq!(ask(&mut c, PRIVATE).await, (true, true), "granted");
    assert!(stats.ungranted.load(std::sync::atomic::Ordering::Relaxed) >= 10);
    stop.cancel();
}
