//! A download's side of its announce stream: reading the scheduler's events, and queueing
//! this download's own (pieces finished, done, failed) when it has a scheduler at all.

use pollen_core::PieceDigest;
use pollen_proto::scheduler::{
    peer_event, scheduler_event, FinishedPiece, PiecesFinished, SchedulerEvent,
};
use tonic::Streaming;

use crate::links::announce_queue::AnnounceQueue;

/// The scheduler's next event; `None` when the stream ended or broke; never, without a stream.
pub(crate) async fn next_event(
    rx: &mut Option<Streaming<SchedulerEvent>>,
) -> Option<scheduler_event::Event> {
    let Some(stream) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match stream.message().await {
            Ok(Some(SchedulerEvent { event: Some(e) })) => return Some(e),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Queues `ev` for the scheduler, when there is one.
pub(crate) fn announce(q: &mut Option<AnnounceQueue>, ev: peer_event::Event) {
    if let Some(q) = q {
        q.send(ev);
    }
}

/// Closes the announce stream after the queued events have gone out.
pub(crate) fn close_announce(q: Option<AnnounceQueue>, rx: Option<Streaming<SchedulerEvent>>) {
    if let Some(q) = q {
        q.close(rx);
    }
}

/// The event reporting `pieces` finished: each with its digest and, when it came from a
/// parent, that parent and how long it took.
pub(crate) fn pieces_event(
    pieces: impl IntoIterator<Item = (u32, PieceDigest, Option<(String, u32)>)>,
) -> peer_event::Event {
    peer_event::Event::PiecesFinished(PiecesFinished {
        pieces: pieces
            .into_iter()
            .map(|(number, d, parent)| {
                let (parent_peer_id, cost_ms) = parent.unwrap_or_default();
                FinishedPiece {
                    number,
                    digest: d.0.to_vec(),
                    parent_peer_id,
                    cost_ms,
                }
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_pieces_name_their_parent_and_cost_when_they_had_one() {
        let d = PieceDigest::of(b"piece");
        let ev = pieces_event([(3, d, Some(("parent-1".to_string(), 120))), (4, d, None)]);
        let peer_event::Event::PiecesFinished(p) = ev else {
            panic!("{ev:?}");
        };
        assert_eq!(p.pieces.len(), 2);
        assert_eq!(
            (
                p.pieces[0].number,
                p.pieces[0].parent_peer_id.as_str(),
                p.pieces[0].cost_ms
            ),
            (3, "parent-1", 120)
        );
        assert_eq!(p.pieces[0].digest, d.0.to_vec());
        assert_eq!(
            (p.pieces[1].number, p.pieces[1].parent_peer_id.as_str()),
            (4, "")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stream_there_is_never_an_event() {
        let mut none = None;
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(3600), next_event(&mut none)).await;
        assert!(waited.is_err(), "an event came from no stream");
        // And announcing without a queue is a no-op, not a panic.
        announce(&mut None, peer_event::Event::Finished(Default::default()));
        close_announce(None, None);
    }
}
