//! Serves the upload server from the piece store: only committed, verified pieces.
//!
//! A seed peer spreads its upload ("super-seeding"): it advertises only the pieces it has
//! handed out least often, so children ask it for pieces nobody has had from it yet and get
//! the others from each other. The seed's upload is the swarm's scarcest resource: when it is
//! no faster than a peer's, every piece it sends twice delays the whole swarm by a piece.
//! A request for a piece handed out more often than the least-served one is answered
//! "missing" (the child asks another parent or another piece). Both rules hold only while
//! children keep asking: after a second with no piece request for the task, the whole
//! bitfield is advertised and served again, so a child that needs a piece nobody else has
//! (its first recipient died) gets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_core::{Bitfield, TaskId};
use pollen_storage::Store;
use pollen_wire::{PieceProvider, ServedPiece};

pub(crate) struct StoreProvider {
    store: Arc<Store>,
    /// Per task, how many times each piece was handed out and when the last one was asked
    /// for; `None` for ordinary peers.
    spread: Option<Mutex<HashMap<TaskId, Handouts>>>,
}

struct Handouts {
    counts: Vec<u32>,
    last: Instant,
}

/// With no piece request for this long, the whole bitfield is advertised again.
const QUIET: Duration = Duration::from_secs(1);

impl StoreProvider {
    /// A provider; `seed` turns on spreading.
    pub fn new(store: Arc<Store>, seed: bool) -> Self {
        Self {
            store,
            spread: seed.then(|| Mutex::new(HashMap::new())),
        }
    }
}

/// The held pieces handed out the fewest times.
fn least_served(held: &Bitfield, counts: &[u32]) -> Bitfield {
    let count = |n: u32| counts.get(n as usize).copied().unwrap_or(0);
    let Some(min) = held.iter_set().map(count).min() else {
        return held.clone();
    };
    let mut out = Bitfield::new(held.len());
    for n in held.iter_set().filter(|n| count(*n) == min) {
        out.set(n);
    }
    out
}

impl PieceProvider for StoreProvider {
    fn bitfield(&self, task: &TaskId) -> Option<Bitfield> {
        let held = self.store.get(task)?.bitfield();
        let Some(spread) = &self.spread else {
            return Some(held);
        };
        let map = spread.lock().unwrap_or_else(|e| e.into_inner());
        Some(match map.get(task) {
            Some(h) if h.last.elapsed() < QUIET => least_served(&held, &h.counts),
            _ => held,
        })
    }

    fn piece(&self, task: &TaskId, number: u32) -> Option<ServedPiece> {
        let entry = self.store.get(task)?;
        let digest = entry.piece_digest(number)?;
        let layout = entry.layout();
        if let Some(spread) = &self.spread {
            let mut map = spread.lock().unwrap_or_else(|e| e.into_inner());
            if !map.contains_key(task) {
                // A new task: forget those the store no longer holds (evicted or removed).
                map.retain(|t, _| self.store.get(t).is_some());
            }
            let h = map.entry(*task).or_insert_with(|| Handouts {
                counts: vec![0; layout.piece_count() as usize],
                last: Instant::now(),
            });
            let busy = h.last.elapsed() < QUIET;
            h.last = Instant::now();
            let count = |n: u32| h.counts.get(n as usize).copied().unwrap_or(0);
            if busy {
                let min = entry.bitfield().iter_set().map(count).min().unwrap_or(0);
                if count(number) > min {
                    return None;
                }
            }
            if let Some(c) = h.counts.get_mut(number as usize) {
                *c = c.saturating_add(1);
            }
        }
        Some(ServedPiece {
            file: entry.content().file().clone(),
            offset: layout.offset(number),
            length: u32::try_from(layout.length(number)).ok()?,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_least_served_held_pieces_are_advertised() {
        let mut held = Bitfield::new(6);
        for n in [0, 1, 2, 4] {
            held.set(n);
        }
        let counts = [1, 0, 2, 0, 1, 0];
        let out = least_served(&held, &counts);
        assert_eq!(out.iter_set().collect::<Vec<_>>(), vec![1]);
        // Once every held piece went out once, all of them are advertised again.
        let out = least_served(&held, &[1, 1, 1, 0, 1, 0]);
        assert_eq!(out.iter_set().collect::<Vec<_>>(), vec![0, 1, 2, 4]);
        assert!(least_served(&Bitfield::new(3), &[])
            .iter_set()
            .next()
            .is_none());
    }
}
