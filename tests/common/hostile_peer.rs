//! A hostile host for the adversary suite. It speaks the scheduler's real gRPC API and the
//! real data plane, as any machine on the network could, and lies: about a task's facts,
//! or with forged bytes behind true slice hashes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pollen_core::slice::slice_hashes;
use pollen_core::{Bitfield, PieceLayout, RateLimiter, SliceHash, SliceLayout, TaskId, TaskKey};
use pollen_proto::scheduler::scheduler_client::SchedulerClient;
use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, FinishedPiece, HostInfo, PeerEvent, PeerFinished,
    PiecesFinished, Register, TaskRequest,
};
use pollen_wire::{PieceProvider, ServedSlice, UploadServer, UploadStats};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What the hostile host says about the task.
pub enum Lie {
    /// Before anyone read the origin: the content is `length` bytes in pieces of
    /// `piece_length`, and every piece's digest is 32 bytes of 0xBA.
    Facts { length: u64, piece_length: u64 },
    /// Once the task's facts are published: it holds every piece (with the published
    /// digests), and serves every slice with its true hash but each byte inverted. `content`
    /// is the origin's content, known to the attacker.
    ForgedBytes { content: Vec<u8> },
}

/// A running hostile host; everything stops when it is dropped.
pub struct HostilePeer {
    /// Calls its upload port answered (bitfields and slices asked of it).
    pub asked: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The task id the scheduler expects for a plain request of `url`.
pub fn task_of(url: &str) -> TaskId {
    TaskKey::of_url(url).task_id().expect("task id")
}

impl HostilePeer {
    /// Opens a host session named `name` with `scheduler` (an `http://` URL), registers a
    /// peer of `url`'s task and tells `lie`. Returns once the lie is told.
    pub async fn join(scheduler: &str, name: &str, url: &str, lie: Lie) -> Self {
        let task = task_of(url);
        let stop = CancellationToken::new();
        let asked = Arc::new(AtomicU64::new(0));
        let forged = Arc::new(Forged {
            task,
            asked: asked.clone(),
            served: OnceLock::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upload port");
        let upload_port = listener.local_addr().expect("addr").port();
        let server = UploadServer::new(
            listener,
            forged.clone(),
            RateLimiter::unlimited(),
            Arc::new(UploadStats::default()),
            16,
        );
        tokio::spawn(server.run(stop.clone()));

        let mut client = SchedulerClient::connect(scheduler.to_string())
            .await
            .expect("reach the scheduler");
        let mut commands = client
            .host_session(HostInfo {
                host_id: name.into(),
                hostname: name.into(),
                ip: "127.0.0.1".into(),
                upload_port: u32::from(upload_port),
                max_upload_connections: 16,
                ..Default::default()
            })
            .await
            .expect("host session")
            .into_inner();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = s.cancelled() => {}
                _ = async { while let Ok(Some(_)) = commands.message().await {} } => {}
            }
        });

        let (tx, rx) = mpsc::channel(16);
        let send = |ev: peer_event::Event| {
            let tx = tx.clone();
            async move {
                tx.send(PeerEvent { event: Some(ev) })
                    .await
                    .expect("announce stream open");
            }
        };
        send(peer_event::Event::Register(Register {
            peer_id: format!("{name}-peer"),
            host_id: name.into(),
            task: Some(TaskRequest {
                task_id: task.hex(),
                url: url.into(),
                ..Default::default()
            }),
        }))
        .await;
        let mut events = client
            .announce_peer(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("announce")
            .into_inner();

        let (told_tx, told) = oneshot::channel();
        let s = stop.clone();
        match lie {
            Lie::Facts {
                length,
                piece_length,
            } => {
                send(peer_event::Event::ContentInfo(ContentInfo {
                    content_length: length,
                    piece_length,
                }))
                .await;
                let pieces = length.div_ceil(piece_length).min(1 << 16) as u32;
                send(peer_event::Event::PiecesFinished(PiecesFinished {
                    pieces: (0..pieces)
                        .map(|n| FinishedPiece {
                            number: n,
                            digest: vec![0xBA; 32],
                            ..Default::default()
                        })
                        .collect(),
                }))
                .await;
                let _ = told_tx.send(());
                tokio::spawn(async move {
                    let _keep = tx;
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = async { while let Ok(Some(_)) = events.message().await {} } => {}
                    }
                });
            }
            Lie::ForgedBytes { content } => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = claim_everything(&mut events, &tx, &forged, content, told_tx) => {}
                    }
                    let _keep = tx;
                });
            }
        }
        tokio::time::timeout(Duration::from_secs(60), told)
            .await
            .expect("the lie was told in time")
            .expect("the hostile peer's announce stream ended early");
        Self { asked, stop }
    }
}

/// Waits for the published facts, then claims every piece with the published digests and
/// says it finished; keeps reading the scheduler's answers.
async fn claim_everything(
    events: &mut tonic::Streaming<pollen_proto::scheduler::SchedulerEvent>,
    tx: &mpsc::Sender<PeerEvent>,
    forged: &Forged,
    content: Vec<u8>,
    told: oneshot::Sender<()>,
) {
    let mut layout = None;
    let mut digests: Vec<Option<Vec<u8>>> = Vec::new();
    while let Ok(Some(ev)) = events.message().await {
        match ev.event {
            Some(scheduler_event::Event::TaskInfo(i)) => {
                let l = PieceLayout::with_piece_length(i.content_length, i.piece_length)
                    .expect("published layout");
                digests.resize(l.piece_count() as usize, None);
                layout = Some(l);
            }
            Some(scheduler_event::Event::PieceDigests(d)) => {
                for p in d.pieces {
                    if let Some(slot) = digests.get_mut(p.number as usize) {
                        *slot = Some(p.digest);
                    }
                }
            }
            _ => {}
        }
        let Some(l) = layout else { continue };
        if digests.iter().any(Option::is_none) {
            continue;
        }
        forged.arm(l, &content);
        let pieces = digests
            .iter()
            .enumerate()
            .map(|(n, d)| FinishedPiece {
                number: n as u32,
                digest: d.clone().unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        let claims = [
            peer_event::Event::PiecesFinished(PiecesFinished { pieces }),
            peer_event::Event::Finished(PeerFinished {}),
        ];
        for ev in claims {
            if tx.send(PeerEvent { event: Some(ev) }).await.is_err() {
                return;
            }
        }
        let _ = told.send(());
        break;
    }
    while let Ok(Some(_)) = events.message().await {}
}

/// What the upload port serves: nothing until armed, then every slice of the task with
/// its true slice hashes and forged bytes.
struct Forged {
    task: TaskId,
    asked: Arc<AtomicU64>,
    served: OnceLock<Served>,
}

struct Served {
    slices: SliceLayout,
    file: Arc<std::fs::File>,
    hashes: Vec<Arc<[SliceHash]>>,
}

impl Forged {
    fn arm(&self, layout: PieceLayout, content: &[u8]) {
        use std::io::Write;
        assert_eq!(layout.content_length(), content.len() as u64, "content");
        let hashes = (0..layout.piece_count())
            .map(|n| {
                let start = layout.offset(n) as usize;
                let piece = &content[start..start + layout.length(n) as usize];
                slice_hashes(piece).into()
            })
            .collect();
        let mut file = tempfile::tempfile().expect("forged file");
        let inverted: Vec<u8> = content.iter().map(|b| !b).collect();
        file.write_all(&inverted).expect("write forged file");
        let _ = self.served.set(Served {
            slices: SliceLayout::new(layout),
            file: Arc::new(file),
            hashes,
        });
    }
}

impl PieceProvider for Forged {
    fn bitfield(&self, task: &TaskId) -> Option<Bitfield> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let s = self.served.get().filter(|_| *task == self.task)?;
        let mut all = Bitfield::new(s.slices.count());
        (0..s.slices.count()).for_each(|g| all.set(g));
        Some(all)
    }

    fn slice(&self, task: &TaskId, slice: u32) -> Option<ServedSlice> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let s = self.served.get().filter(|_| *task == self.task)?;
        let spot = s.slices.spot(slice)?;
        Some(ServedSlice {
            file: s.file.clone(),
            offset: spot.offset,
            length: spot.length as u32,
            piece: spot.piece,
            hashes: s.hashes.get(spot.piece as usize).cloned(),
        })
    }
}
