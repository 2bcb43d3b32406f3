//! The links: sharing each peer's upload and download among its transfers, moving the
//! simulated clock, and what a finished piece changes.

use pollen_proto::scheduler::{peer_event, FinishedPiece, PeerFinished, PiecesFinished};

use super::{digest, Swarm, ORIGIN, TASK};

impl Swarm {
    /// Shares bandwidth among transfers by progressive filling (three rounds).
    pub(super) fn share_bandwidth(&mut self) {
        let n = self.peers.len();
        let mut up: Vec<f64> = self.peers.iter().map(|p| p.up).collect();
        let mut down: Vec<f64> = self.peers.iter().map(|p| p.down).collect();
        let mut origin = self.spec.origin;
        for t in &mut self.transfers {
            t.rate = 0.0;
        }
        for _ in 0..3 {
            let mut up_n = vec![0usize; n];
            let mut down_n = vec![0usize; n];
            let mut origin_n = 0usize;
            for t in &self.transfers {
                down_n[t.child] += 1;
                if t.parent == ORIGIN {
                    origin_n += 1;
                } else {
                    up_n[t.parent] += 1;
                }
            }
            let mut offers = Vec::with_capacity(self.transfers.len());
            for t in &self.transfers {
                let from = if t.parent == ORIGIN {
                    origin / origin_n.max(1) as f64
                } else {
                    up[t.parent] / up_n[t.parent].max(1) as f64
                };
                offers.push(from.min(down[t.child] / down_n[t.child].max(1) as f64));
            }
            for (t, add) in self.transfers.iter_mut().zip(offers) {
                t.rate += add;
                down[t.child] -= add;
                if t.parent == ORIGIN {
                    origin -= add;
                } else {
                    up[t.parent] -= add;
                }
            }
        }
    }

    pub(super) fn advance(&mut self) {
        let dt = self.spec.dt;
        let piece = self.spec.piece_bytes;
        let mut finished = Vec::new();
        for (k, t) in self.transfers.iter_mut().enumerate() {
            let moved = (t.rate * dt).min(piece - t.done);
            t.done += moved;
            if t.parent == ORIGIN {
                self.origin_bytes += moved;
            }
            if t.done >= piece {
                finished.push(k);
            }
        }
        let mut remove = vec![false; self.transfers.len()];
        for k in finished {
            let (c, p, n, started) = {
                let t = &self.transfers[k];
                (t.child, t.parent, t.piece, t.started)
            };
            if remove[k] || self.peers[c].has.contains(n) {
                remove[k] = true;
                continue;
            }
            remove[k] = true;
            // The endgame twin of this piece is cancelled.
            for (j, other) in self.transfers.iter().enumerate() {
                if other.child == c && other.piece == n {
                    remove[j] = true;
                }
            }
            self.complete_piece(c, p, n, started);
        }
        let mut k = 0;
        self.transfers.retain(|_| {
            let keep = !remove[k];
            k += 1;
            keep
        });
    }

    pub(super) fn complete_piece(&mut self, c: usize, p: usize, n: u32, started: f64) {
        let peer = &mut self.peers[c];
        peer.in_flight.remove(&n);
        peer.has.insert(n);
        let parent_peer_id = if p == ORIGIN {
            String::new()
        } else {
            self.peers[p].id.clone()
        };
        let cost_ms = ((self.now - started) * 1000.0).max(1.0) as u32;
        self.event(
            c,
            peer_event::Event::PiecesFinished(PiecesFinished {
                pieces: vec![FinishedPiece {
                    number: n,
                    digest: digest(n),
                    parent_peer_id,
                    cost_ms: if p == ORIGIN { 0 } else { cost_ms },
                }],
            }),
        );
        if self.peers[c].has.len() == self.spec.pieces {
            self.peers[c].done_at = Some(self.now);
            self.peers[c].links.clear();
            self.event(c, peer_event::Event::Finished(PeerFinished {}));
            let id = self.peers[c].id.clone();
            self.core.disconnect(&TASK, &id);
        }
    }
}
