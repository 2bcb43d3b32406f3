//! What a download tells the scheduler, never dropped.
//!
//! The announce stream's channel is bounded, and the scheduler may be slow to read it. A full
//! channel must neither stall the download (a slow scheduler would then slow every pull) nor
//! lose events: a lost `PiecesFinished` leaves the scheduler believing this peer lacks pieces
//! it holds, a lost `Finished` leaves it a downloader for ever. So events that do not fit
//! wait here, in order, and are coalesced while they wait: consecutive `PiecesFinished` merge
//! into one (a task has a bounded number of pieces, so the backlog is bounded by the task),
//! and a `NeedParents` replaces the one already waiting. The backlog goes out as the channel
//! frees up (before every new event and on the conductor's one-second tick), and whole, within
//! a deadline, when the stream is closed.

use std::collections::VecDeque;
use std::time::Duration;

use pollen_proto::scheduler::{peer_event, PeerEvent, SchedulerEvent};
use tokio::sync::mpsc::{self, error::TrySendError};
use tonic::Streaming;
use tracing::debug;

/// How long a closing stream may take to send its backlog and hear the scheduler out.
const CLOSE_DEADLINE: Duration = Duration::from_secs(10);

/// One announce stream's sending side, with the events waiting for room.
pub(crate) struct AnnounceQueue {
    tx: mpsc::Sender<PeerEvent>,
    backlog: VecDeque<peer_event::Event>,
}

impl AnnounceQueue {
    pub fn new(tx: mpsc::Sender<PeerEvent>) -> Self {
        Self {
            tx,
            backlog: VecDeque::new(),
        }
    }

    /// Sends `ev` now if the channel has room and nothing waits before it; otherwise it waits,
    /// coalesced with what waits already.
    pub fn send(&mut self, ev: peer_event::Event) {
        self.flush();
        if self.backlog.is_empty() {
            if let Err(TrySendError::Full(PeerEvent { event: Some(ev) })) =
                self.tx.try_send(PeerEvent { event: Some(ev) })
            {
                debug!("announce channel full; the event waits");
                self.wait(ev);
            }
        } else {
            self.wait(ev);
        }
    }

    /// Sends what waits, in order, as far as the channel has room.
    pub fn flush(&mut self) {
        while let Some(ev) = self.backlog.pop_front() {
            match self.tx.try_send(PeerEvent { event: Some(ev) }) {
                Ok(()) => {}
                Err(TrySendError::Full(PeerEvent { event })) => {
                    if let Some(ev) = event {
                        self.backlog.push_front(ev);
                    }
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.backlog.clear();
                    return;
                }
            }
        }
    }

    /// Events waiting for room.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.backlog.len()
    }

    fn wait(&mut self, ev: peer_event::Event) {
        use peer_event::Event::{NeedParents, PiecesFinished};
        match (self.backlog.back_mut(), ev) {
            (Some(PiecesFinished(last)), PiecesFinished(more)) => last.pieces.extend(more.pieces),
            (_, NeedParents(n)) => {
                self.backlog.retain(|e| !matches!(e, NeedParents(_)));
                self.backlog.push_back(NeedParents(n));
            }
            (_, ev) => self.backlog.push_back(ev),
        }
    }

    /// Ends the stream gracefully: sends the backlog, closes the request side, and drains
    /// the answers until the scheduler closes its side (so the last events, such as
    /// `Finished`, are processed rather than lost to a stream reset); all within a deadline,
    /// in the background.
    pub fn close(self, rx: Option<Streaming<SchedulerEvent>>) {
        let Self { tx, backlog } = self;
        tokio::spawn(async move {
            let finish = async move {
                for ev in backlog {
                    if tx.send(PeerEvent { event: Some(ev) }).await.is_err() {
                        break;
                    }
                }
                drop(tx);
                if let Some(mut rx) = rx {
                    while let Ok(Some(_)) = rx.message().await {}
                }
            };
            let _ = tokio::time::timeout(CLOSE_DEADLINE, finish).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_proto::scheduler::{FinishedPiece, NeedParents, PeerFinished, PiecesFinished};

    fn pieces(ns: &[u32]) -> peer_event::Event {
        peer_event::Event::PiecesFinished(PiecesFinished {
            pieces: ns
                .iter()
                .map(|&number| FinishedPiece {
                    number,
                    ..Default::default()
                })
                .collect(),
        })
    }

    fn need(p: &str) -> peer_event::Event {
        peer_event::Event::NeedParents(NeedParents {
            parents: vec![p.into()],
        })
    }

    #[tokio::test]
    async fn a_full_channel_loses_nothing_and_keeps_the_order() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut q = AnnounceQueue::new(tx);
        for n in 0..10 {
            q.send(pieces(&[n]));
            if n == 4 {
                q.send(need("a"));
                q.send(need("b"));
            }
        }
        q.send(peer_event::Event::Finished(PeerFinished {}));
        // Two fit; the rest waits, coalesced: pieces 2-4, the latest NeedParents, pieces
        // 5-9, Finished.
        assert_eq!(q.waiting(), 4);
        let mut got = Vec::new();
        while got.last() != Some(&"finished".to_string()) {
            q.flush();
            let ev = rx.recv().await.expect("event").event.expect("some");
            got.push(match ev {
                peer_event::Event::PiecesFinished(p) => format!(
                    "pieces {:?}",
                    p.pieces.iter().map(|f| f.number).collect::<Vec<_>>()
                ),
                peer_event::Event::NeedParents(n) => format!("need {:?}", n.parents),
                peer_event::Event::Finished(_) => "finished".into(),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            got,
            [
                "pieces [0]",
                "pieces [1]",
                "pieces [2, 3, 4]",
                "need [\"b\"]",
                "pieces [5, 6, 7, 8, 9]",
                "finished"
            ]
        );
    }

    #[tokio::test]
    async fn closing_sends_the_backlog_before_the_stream_ends() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut q = AnnounceQueue::new(tx);
        q.send(pieces(&[0]));
        q.send(pieces(&[1]));
        q.send(peer_event::Event::Finished(PeerFinished {}));
        q.close(None);
        let mut n = 0;
        while let Some(ev) = rx.recv().await {
            n += 1;
            if n == 3 {
                assert!(matches!(ev.event, Some(peer_event::Event::Finished(_))));
            }
        }
        assert_eq!(n, 3, "every event arrived, then the stream closed");
    }
}
