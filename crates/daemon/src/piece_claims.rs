//! Shared state of one task's download: which pieces are expected with which digest, and
//! which are being fetched right now, so two parents never fetch the same piece.
//!
//! Invariant: a piece is claimed by at most one fetcher; a claim ends (by `release`) when the
//! piece is committed or its fetch failed. Waiters are woken on every change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use pollen_core::{Bitfield, PieceDigest};
use pollen_storage::TaskEntry;
use rand::seq::SliceRandom;
use tokio::sync::Notify;

pub(crate) struct PieceClaims {
    pub entry: Arc<TaskEntry>,
    inner: Mutex<Inner>,
    pub changed: Notify,
}

struct Inner {
    expected: HashMap<u32, PieceDigest>,
    claimed: HashSet<u32>,
}

impl PieceClaims {
    pub fn new(entry: Arc<TaskEntry>) -> Self {
        let expected = entry.present_digests().into_iter().collect();
        Self {
            entry,
            inner: Mutex::new(Inner {
                expected,
                claimed: HashSet::new(),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records digests published by the scheduler.
    pub fn add_expected(&self, digests: impl IntoIterator<Item = (u32, PieceDigest)>) {
        let mut g = self.lock();
        for (n, d) in digests {
            g.expected.entry(n).or_insert(d);
        }
        drop(g);
        self.changed.notify_waiters();
    }

    /// The published digest of piece `n`.
    pub fn expected(&self, n: u32) -> Option<PieceDigest> {
        self.lock().expected.get(&n).copied()
    }

    /// Claims a random piece the parent has, we lack, nobody fetches, and whose digest is
    /// known. Random order spreads different pieces to different peers, so they can trade.
    pub fn claim_from(&self, parent_has: &Bitfield) -> Option<(u32, PieceDigest)> {
        let present = self.entry.bitfield();
        let mut g = self.lock();
        let mut candidates: Vec<u32> = parent_has
            .iter_set()
            .filter(|n| !present.get(*n) && !g.claimed.contains(n) && g.expected.contains_key(n))
            .collect();
        candidates.shuffle(&mut rand::thread_rng());
        let n = *candidates.first()?;
        g.claimed.insert(n);
        g.expected.get(&n).map(|d| (n, *d))
    }

    /// Claims piece `n` for the origin reader if nobody else has it.
    pub fn claim(&self, n: u32) -> bool {
        !self.entry.bitfield().get(n) && self.lock().claimed.insert(n)
    }

    /// Ends a claim (piece committed or fetch failed).
    pub fn release(&self, n: u32) {
        self.lock().claimed.remove(&n);
        self.changed.notify_waiters();
    }

    /// True when every piece is present.
    pub fn all_present(&self) -> bool {
        self.entry.bitfield().is_full()
    }
}
