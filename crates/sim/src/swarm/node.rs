//! The node stage, as in the daemon: which parent a peer asks for which piece, how many at
//! once, and starting those transfers.

use std::collections::HashMap;

use pollen_scheduler::piece_set::PieceSet;
use rand::RngExt as _;

use super::{Swarm, Transfer, ORIGIN};

impl Swarm {
    /// Picks the next piece child `c` should take from parent `p`, or none.
    pub(super) fn pick(&mut self, c: usize, p: usize, seed: bool) -> Option<u32> {
        let child = &self.peers[c];
        let parent = &self.peers[p];
        let others: Vec<&PieceSet> = child
            .links
            .iter()
            .filter(|l| l.parent != p)
            .map(|l| &self.peers[l.parent].has)
            .collect();
        let mut best: Option<(usize, u32)> = None;
        let mut ties = 0u32;
        let mut endgame: Vec<u32> = Vec::new();
        // A seed offers only the pieces it has handed out least often, as the daemon's
        // upload provider does.
        let sent = self.seed_sent.get(&p);
        let count = |n: u32| sent.map_or(0, |s| s[n as usize]);
        let least = (seed && self.spec.seed_spread)
            .then(|| parent.has.iter().map(count).min())
            .flatten();
        for n in parent.has.iter() {
            if child.has.contains(n) {
                continue;
            }
            if least.is_some_and(|m| count(n) > m) {
                continue;
            }
            if let Some(&copies) = child.in_flight.get(&n) {
                if copies == 1 {
                    endgame.push(n);
                }
                continue;
            }
            let holders = others.iter().filter(|o| o.contains(n)).count();
            if seed && holders > 0 {
                continue;
            }
            match best {
                Some((h, _)) if holders > h => {}
                Some((h, _)) if holders == h => {
                    ties += 1;
                    if self.rng.random_range(0..=ties) == 0 {
                        best = Some((holders, n));
                    }
                }
                _ => {
                    ties = 0;
                    best = Some((holders, n));
                }
            }
        }
        if let Some((_, n)) = best {
            return Some(n);
        }
        // Endgame: only when every missing piece is already in flight.
        let missing = self.spec.pieces - child.has.len();
        if seed || child.in_flight.len() as u32 != missing || endgame.is_empty() {
            return None;
        }
        Some(endgame[self.rng.random_range(0..endgame.len())])
    }

    pub(super) fn start_transfers(&mut self) {
        let mut busy: HashMap<(usize, usize), usize> = HashMap::new();
        let mut uploading: HashMap<usize, usize> = HashMap::new();
        for t in &self.transfers {
            *busy.entry((t.child, t.parent)).or_default() += 1;
            *uploading.entry(t.parent).or_default() += 1;
        }
        let cap = self.spec.upload_cap;
        for c in 0..self.peers.len() {
            let peer = &self.peers[c];
            if !peer.joined || peer.done_at.is_some() {
                continue;
            }
            if peer.back_to_source {
                if !busy.contains_key(&(c, ORIGIN)) {
                    let next = (0..self.spec.pieces)
                        .find(|n| !peer.has.contains(*n) && !peer.in_flight.contains_key(n));
                    if let Some(n) = next {
                        self.begin(c, ORIGIN, n);
                    }
                }
                continue;
            }
            let links = self.peers[c].links.len();
            let share = match self.spec.in_flight {
                0 => self.spec.pieces_per_parent,
                f => (f / links.max(1)).clamp(1, self.spec.pieces_per_parent.max(1)),
            };
            for li in 0..links {
                let (p, seed) = (self.peers[c].links[li].parent, self.peers[c].links[li].seed);
                let limit = if seed { 1 } else { share };
                let mut running = busy.get(&(c, p)).copied().unwrap_or(0);
                let cap = match (cap, self.spec.upload_cap_rate) {
                    (0, r) if r > 0.0 && p != ORIGIN => {
                        ((self.peers[p].up / r).round() as usize).max(1)
                    }
                    (c, _) => c,
                };
                while running < limit && (cap == 0 || uploading.get(&p).copied().unwrap_or(0) < cap)
                {
                    match self.pick(c, p, seed) {
                        Some(n) => {
                            self.begin(c, p, n);
                            running += 1;
                            *uploading.entry(p).or_default() += 1;
                        }
                        None => break,
                    }
                }
                let link = &mut self.peers[c].links[li];
                if running > 0 {
                    link.idle_since = None;
                } else if link.idle_since.is_none() {
                    link.idle_since = Some(self.now);
                }
            }
            let (now, drop_after) = (self.now, self.spec.idle_drop);
            self.peers[c]
                .links
                .retain(|l| l.idle_since.is_none_or(|t| now - t < drop_after));
        }
        let peak = uploading
            .iter()
            .filter(|(p, _)| **p != ORIGIN)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        self.peak_uploads = self.peak_uploads.max(peak);
    }

    pub(super) fn begin(&mut self, child: usize, parent: usize, piece: u32) {
        if parent != ORIGIN && self.peers[parent].seed {
            let pieces = self.spec.pieces as usize;
            self.seed_sent
                .entry(parent)
                .or_insert_with(|| vec![0; pieces])[piece as usize] += 1;
        }
        *self.peers[child].in_flight.entry(piece).or_default() += 1;
        self.transfers.push(Transfer {
            child,
            parent,
            piece,
            done: 0.0,
            started: self.now,
            rate: 0.0,
        });
    }
}
