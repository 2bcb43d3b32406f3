//! Serves the upload server from the piece store: only verified slices, of committed pieces
//! or of pieces still arriving. A complete task whose content file changed since it was
//! stored (see `content_check::keep_complete`) is served to nobody until it was re-read.
//!
//! A seed peer spreads its upload ("super-seeding"): it advertises only the slices it has
//! handed out least often, so children ask it for slices nobody has had from it yet and get
//! the others from each other. The seed's upload is the swarm's scarcest resource: when it is
//! no faster than a peer's, every slice it sends twice delays the whole swarm by a slice.
//! A request for a slice handed out more often than the least-served one is answered
//! "missing" (the child asks another parent or another slice). Both rules hold only while
//! children keep asking: after a second with no slice request for the task, the whole
//! bitfield is advertised and served again, so a child that needs a slice nobody else has
//! (its first recipient died) gets it. A slice whose sending failed, or that went out just
//! before its connection ended, is taken back (no longer counted as handed out): its only
//! recipient may have died before passing it on, and without this it would wait for the
//! seed's next pass over every slice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_core::grant::Grant;
use pollen_core::{Bitfield, SliceHash, TaskId};
use pollen_storage::{Store, TaskEntry};
use pollen_wire::{PieceProvider, ServedSlice};

use crate::upload::grant_keys::GrantKeys;
use tracing::{debug, warn};

pub(crate) struct StoreProvider {
    store: Arc<Store>,
    /// Per task, how many times each slice was handed out and when the last one was asked
    /// for; `None` for ordinary peers.
    spread: Option<Mutex<HashMap<TaskId, Handouts>>>,
    keys: GrantKeys,
}

struct Handouts {
    counts: Vec<u32>,
    /// `levels[c]`: how many slices were handed out exactly `c` times.
    levels: Vec<u32>,
    last: Instant,
}

impl Handouts {
    fn new(slices: u32) -> Self {
        Self {
            counts: vec![0; slices as usize],
            levels: vec![slices],
            last: Instant::now(),
        }
    }

    fn count(&self, n: u32) -> u32 {
        self.counts.get(n as usize).copied().unwrap_or(0)
    }

    fn hand_out(&mut self, n: u32) {
        let Some(c) = self.counts.get_mut(n as usize) else {
            return;
        };
        let was = *c as usize;
        *c = c.saturating_add(1);
        if let Some(l) = self.levels.get_mut(was) {
            *l = l.saturating_sub(1);
        }
        if self.levels.len() <= was + 1 {
            self.levels.resize(was + 2, 0);
        }
        self.levels[was + 1] += 1;
    }

    /// Undoes one [`hand_out`](Self::hand_out) of slice `n`.
    fn take_back(&mut self, n: u32) {
        let Some(c) = self.counts.get_mut(n as usize) else {
            return;
        };
        if *c == 0 {
            return;
        }
        let was = *c as usize;
        *c -= 1;
        if let Some(l) = self.levels.get_mut(was) {
            *l = l.saturating_sub(1);
        }
        if let Some(l) = self.levels.get_mut(was - 1) {
            *l += 1;
        }
    }

    /// The fewest hand-outs of a held slice, of `held` slices held, without walking them:
    /// a slice not held was never handed out, so the slices at zero beyond the ones not
    /// held are held ones. (A slice dropped after being handed out makes this answer high,
    /// which serves a second copy early rather than refusing one.)
    fn least(&self, held: u32) -> u32 {
        let not_held = (self.counts.len() as u32).saturating_sub(held);
        if self.levels.first().copied().unwrap_or(0) > not_held {
            return 0;
        }
        self.levels
            .iter()
            .skip(1)
            .position(|l| *l > 0)
            .map_or(0, |i| i as u32 + 1)
    }
}

/// With no slice request for this long, the whole bitfield is advertised again.
const QUIET: Duration = Duration::from_secs(1);

impl StoreProvider {
    /// A provider; `seed` turns on spreading.
    /// Serves `store`; a private task only to a connection whose grant one of `keys` signed.
    pub fn new(store: Arc<Store>, seed: bool, keys: GrantKeys) -> Self {
        Self {
            store,
            spread: seed.then(|| Mutex::new(HashMap::new())),
            keys,
        }
    }
}

impl StoreProvider {
    /// The task, unless it is complete and its content file changed since it was stored.
    fn servable(&self, task: &TaskId) -> Option<Arc<TaskEntry>> {
        let entry = self.store.get(task)?;
        if entry.is_complete() && !entry.content_unchanged() {
            debug!(task = %task, "not serving a cached copy whose file changed on disk");
            return None;
        }
        Some(entry)
    }
}

/// The held slices handed out the fewest times.
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
    fn is_private(&self, task: &TaskId) -> bool {
        self.store.get(task).is_some_and(|e| e.is_private())
    }

    fn admits(&self, task: &TaskId, peer: std::net::IpAddr, grant: &Grant) -> bool {
        self.keys.admits(task, peer, grant)
    }

    fn slice_hashes(&self, task: &TaskId, piece: u32) -> Option<Arc<[SliceHash]>> {
        match self.store.get(task)?.load_slice_hashes(piece) {
            Ok(h) => h,
            Err(e) => {
                warn!(task = %task, piece, error = %pollen_core::error_kind::Chain(&e), "cannot serve a piece");
                None
            }
        }
    }

    fn bitfield(&self, task: &TaskId) -> Option<Bitfield> {
        let entry = self.servable(task)?;
        let held = entry.slice_bitfield();
        let Some(spread) = &self.spread else {
            return Some(held);
        };
        let map = spread.lock().unwrap_or_else(|e| e.into_inner());
        Some(match map.get(task) {
            Some(h) if h.last.elapsed() < QUIET => least_served(&held, &h.counts),
            _ => held,
        })
    }

    fn slice(&self, task: &TaskId, number: u32) -> Option<ServedSlice> {
        let entry = self.servable(task)?;
        let spot = entry.slices().spot(number)?;
        if !entry.has_slice(number) {
            return None;
        }
        let hashes = entry.slice_hashes(spot.piece);
        if let Some(spread) = &self.spread {
            let mut map = spread.lock().unwrap_or_else(|e| e.into_inner());
            if !map.contains_key(task) {
                // A new task: forget those the store no longer holds (evicted or removed).
                map.retain(|t, _| self.store.get(t).is_some());
            }
            let h = map
                .entry(*task)
                .or_insert_with(|| Handouts::new(entry.slices().count()));
            let busy = h.last.elapsed() < QUIET;
            h.last = Instant::now();
            if busy && h.count(number) > h.least(entry.held_slice_count()) {
                return None;
            }
            h.hand_out(number);
        }
        Some(ServedSlice {
            file: entry.content().file().clone(),
            offset: spot.offset,
            length: u32::try_from(spot.length).ok()?,
            piece: spot.piece,
            hashes,
        })
    }

    fn not_delivered(&self, task: &TaskId, slices: &[u32]) {
        let Some(spread) = &self.spread else {
            return;
        };
        let mut map = spread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = map.get_mut(task) {
            for &n in slices {
                h.take_back(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::slice::{slice_hashes, SLICE_LENGTH};
    use pollen_storage::TaskMeta;

    const TASK: TaskId = TaskId([9; 32]);

    /// A store holding `TASK`: one piece of `slices` slices, written and hashed, with the
    /// `verified` slices marked. Returns the piece's bytes too.
    fn store_with(dir: &tempfile::TempDir, slices: u64, verified: &[u32]) -> (Arc<Store>, Vec<u8>) {
        let store = Store::open(dir.path()).expect("store");
        let len = slices * SLICE_LENGTH;
        let meta = TaskMeta {
            content_length: len,
            piece_length: len,
            ..Default::default()
        };
        let entry = store.ensure_task(TASK, meta).expect("task");
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        entry.content().write_at(&data, 0).expect("write");
        entry.set_slice_hashes(0, slice_hashes(&data).into());
        for &n in verified {
            entry.mark_slice(n);
        }
        (store, data)
    }

    #[test]
    fn verified_slices_of_an_unfinished_piece_are_offered_and_served() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, data) = store_with(&dir, 4, &[2]);
        let task = TASK;
        let provider = StoreProvider::new(store, false, GrantKeys::default());
        let offered = provider.bitfield(&task).expect("known task");
        assert_eq!(offered.iter_set().collect::<Vec<_>>(), vec![2]);
        let served = provider
            .slice(&task, 2)
            .expect("a verified slice is served");
        assert_eq!(
            (served.offset, served.length),
            (2 * SLICE_LENGTH, SLICE_LENGTH as u32)
        );
        let hashes = served.hashes.expect("hashes known");
        assert_eq!(&*hashes, slice_hashes(&data).as_slice());
        assert!(
            provider.slice(&task, 1).is_none(),
            "an unverified slice is not"
        );
        assert!(provider.slice(&task, 4).is_none(), "nor one past the end");
    }

    #[test]
    fn a_seed_serves_a_slice_again_once_it_is_taken_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = store_with(&dir, 2, &[0, 1]);
        let task = TASK;
        let seed = StoreProvider::new(store, true, GrantKeys::default());
        assert!(seed.slice(&task, 0).is_some());
        assert!(
            seed.slice(&task, 0).is_none(),
            "a second copy while slice 1 was never handed out"
        );
        seed.not_delivered(&task, &[0]);
        assert!(
            seed.slice(&task, 0).is_some(),
            "taken back, slice 0 counts as never handed out"
        );
        // Taking back more than was handed out, or an unknown slice, changes nothing.
        seed.not_delivered(&task, &[1, 1, 9]);
        assert!(seed.slice(&task, 0).is_none());
        assert!(seed.slice(&task, 1).is_some());
    }

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

    proptest::proptest! {
        /// The seed's running tally of hand-outs gives the same least-served count as a walk
        /// over the held slices, as slices arrive, are handed out and are taken back in any
        /// order.
        #[test]
        fn handout_levels_match_a_walk_over_the_held_slices(
            slices in 1u32..64,
            steps in proptest::collection::vec((0u8..3, 0u32..64), 0..200),
        ) {
            let mut h = Handouts::new(slices);
            let mut held = Bitfield::new(slices);
            for (what, n) in steps {
                let n = n % slices;
                match what {
                    0 => held.set(n),
                    1 if held.get(n) => h.hand_out(n),
                    2 => h.take_back(n),
                    _ => {}
                }
                let walked = held.iter_set().map(|s| h.count(s)).min().unwrap_or(0);
                proptest::prop_assert_eq!(h.least(held.count()), walked);
            }
        }
    }
}
