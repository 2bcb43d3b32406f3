//! Shared state of one task's download: which pieces are expected with which digest, and
//! which slices are being fetched right now, so two parents never fetch the same slice.
//!
//! Parents are asked for slices (see `pollen_core::slice`); the origin reader claims whole
//! pieces (every slice of one). Invariant: a slice is claimed by at most one fetcher, except
//! in the endgame (nothing left unclaimed), or when a slice is stuck (in flight for four
//! times the usual slice time, and at least two seconds): then a second parent may fetch it
//! too, so one slow parent cannot hold up a download; the first verified copy counts and the
//! second write rewrites the same bytes. A claim ends (by `release`) when the slice is
//! verified or its fetch failed. Waiters are woken on every change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_core::{Bitfield, PieceDigest};
use pollen_storage::TaskEntry;
use rand::seq::SliceRandom;
use tokio::sync::Notify;

use crate::config::DaemonConfig;

pub(crate) struct PieceClaims {
    pub entry: Arc<TaskEntry>,
    inner: Mutex<Inner>,
    pub changed: Notify,
    /// Slices that arrived after another parent's copy was verified (the price of the
    /// endgame and of re-fetching stuck slices).
    duplicates: AtomicU32,
    /// Verified bytes this download received from peers, and bytes it read from the origin:
    /// what `pollen get` reports at the end.
    pub from_peers: AtomicU64,
    pub from_origin: AtomicU64,
}

struct Inner {
    expected: HashMap<u32, PieceDigest>,
    /// The parents (empty string: the origin) whose fetchers work on each claimed slice:
    /// one, or two in the endgame.
    claimed: HashMap<u32, Vec<String>>,
    /// The last slice bitfield seen from each parent, for rarest-first choices.
    parents: HashMap<String, Bitfield>,
    /// Slices a parent answered "missing" for since its last bitfield (a seed spreading its
    /// upload does that); not asked of it again until the next bitfield.
    refused: HashMap<String, std::collections::HashSet<u32>>,
    /// Pieces whose commit has begun (nobody else must commit, count or report them).
    committing: std::collections::HashSet<u32>,
    /// When each claimed slice was first claimed.
    since: HashMap<u32, Instant>,
    /// Moving mean of how long a slice takes from a parent, in seconds.
    piece_secs: Option<f64>,
    /// Slices to keep in flight over all parents (0: no limit per parent); see
    /// `DaemonConfig::slices_in_flight`.
    in_flight: usize,
}

/// A slice in flight longer than this many usual slice times is stuck.
const STUCK_FACTOR: f64 = 4.0;
/// ... and never before this long.
const STUCK_FLOOR: Duration = Duration::from_secs(2);

impl PieceClaims {
    /// Claims for a download of `entry` keeping `in_flight` slices in flight, spread over
    /// its parents (0: each parent's fetchers take what their pipelines hold).
    pub fn new(entry: Arc<TaskEntry>, in_flight: usize) -> Self {
        let expected = entry.present_digests().into_iter().collect();
        Self {
            entry,
            inner: Mutex::new(Inner {
                expected,
                claimed: HashMap::new(),
                parents: HashMap::new(),
                refused: HashMap::new(),
                committing: std::collections::HashSet::new(),
                since: HashMap::new(),
                piece_secs: None,
                in_flight,
            }),
            changed: Notify::new(),
            duplicates: AtomicU32::new(0),
            from_peers: AtomicU64::new(0),
            from_origin: AtomicU64::new(0),
        }
    }

    /// Claims for a download of `entry` with the daemon's settings.
    pub fn for_download(entry: Arc<TaskEntry>, cfg: &DaemonConfig) -> Arc<Self> {
        Arc::new(Self::new(entry, cfg.slices_in_flight))
    }

    /// Books a slice that arrived when another copy was already verified.
    pub fn count_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Slices that arrived twice in this download.
    pub fn duplicates(&self) -> u32 {
        self.duplicates.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True for the first caller with a verified copy of piece `n`: it commits the piece.
    /// Later callers (the origin reader and a parent both finishing it) drop theirs.
    pub fn begin_commit(&self, n: u32) -> bool {
        self.entry.piece_digest(n).is_none() && self.lock().committing.insert(n)
    }

    /// Records how long a verified slice took from a parent.
    pub fn record_piece_time(&self, took: Duration) {
        let mut g = self.lock();
        let t = took.as_secs_f64();
        g.piece_secs = Some(match g.piece_secs {
            None => t,
            Some(m) => m + 0.2 * (t - m),
        });
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

    /// Records the slices a parent holds now.
    pub fn set_parent_bitfield(&self, parent: &str, has: Bitfield) {
        let mut g = self.lock();
        g.refused.remove(parent);
        g.parents.insert(parent.to_string(), has);
    }

    /// Records that `parent` answered "missing" for slice `n`.
    pub fn refused(&self, parent: &str, n: u32) {
        self.lock()
            .refused
            .entry(parent.to_string())
            .or_default()
            .insert(n);
    }

    /// Forgets a parent that is no longer used.
    pub fn forget_parent(&self, parent: &str) {
        let mut g = self.lock();
        g.parents.remove(parent);
        g.refused.remove(parent);
    }

    /// Claims a slice `parent` has, we lack, nobody fetches, and whose piece's digest is
    /// known, unless `parent` already has its share of the slices in flight (`in_flight`
    /// over the number of parents, at least one): one of a piece already begun here if
    /// any, then the one fewest of our other parents hold (rarest first), ties broken at
    /// random so different peers fetch different slices and can trade them. A seed parent
    /// is asked only for slices no other parent holds, so its upload goes to what nobody
    /// else can give. Returns the slice and its piece's digest.
    pub fn claim_from(&self, parent: &str, seed: bool) -> Option<(u32, PieceDigest)> {
        let present = self.entry.slice_bitfield();
        let begun = self.entry.begun_pieces();
        let slices = self.entry.slices();
        let piece_of = |n: u32| n / slices.per_piece();
        let mut g = self.lock();
        let has = g.parents.get(parent)?;
        if g.in_flight > 0 {
            let share = (g.in_flight / g.parents.len().max(1)).max(1);
            let asked = g
                .claimed
                .values()
                .filter(|by| by.iter().any(|p| p == parent))
                .count();
            if asked >= share {
                return None;
            }
        }
        let others: Vec<&Bitfield> = g
            .parents
            .iter()
            .filter(|(id, _)| id.as_str() != parent)
            .map(|(_, b)| b)
            .collect();
        let refused = g.refused.get(parent);
        // Pieces begun here (a slice verified or in flight) come first, so pieces are
        // finished, committed and reported one after another rather than all at the end.
        let mut started: std::collections::HashSet<u32> =
            g.claimed.keys().map(|n| piece_of(*n)).collect();
        started.extend(begun);
        let mut candidates: Vec<(bool, usize, u32)> = has
            .iter_set()
            .filter(|n| {
                !present.get(*n)
                    && !g.claimed.contains_key(n)
                    && g.expected.contains_key(&piece_of(*n))
                    && !refused.is_some_and(|r| r.contains(n))
            })
            .map(|n| {
                let holders = others.iter().filter(|b| b.get(n)).count();
                (!started.contains(&piece_of(n)), holders, n)
            })
            .filter(|(_, holders, _)| !seed || *holders == 0)
            .collect();
        candidates.shuffle(&mut rand::rng());
        let pick = candidates
            .iter()
            .min_by_key(|(fresh, holders, _)| (*fresh, *holders))
            .map(|(_, _, n)| *n);
        let n = match pick {
            Some(n) => n,
            None if seed => return None,
            None => {
                // Endgame (every missing slice is claimed) or a stuck slice: help with one
                // that only a different parent is fetching.
                let unclaimed_left =
                    (0..present.len()).any(|n| !present.get(n) && !g.claimed.contains_key(&n));
                let stuck_after = g
                    .piece_secs
                    .map(|s| Duration::from_secs_f64(s * STUCK_FACTOR))
                    .unwrap_or(Duration::MAX)
                    .max(STUCK_FLOOR);
                let mut dup: Vec<u32> = has
                    .iter_set()
                    .filter(|n| {
                        !present.get(*n)
                            && g.claimed
                                .get(n)
                                .is_some_and(|by| by.len() == 1 && by[0] != parent)
                            && (!unclaimed_left
                                || g.since.get(n).is_some_and(|t| t.elapsed() >= stuck_after))
                    })
                    .collect();
                dup.shuffle(&mut rand::rng());
                *dup.first()?
            }
        };
        g.claimed.entry(n).or_default().push(parent.to_string());
        g.since.entry(n).or_insert_with(Instant::now);
        g.expected.get(&piece_of(n)).map(|d| (n, *d))
    }

    /// Whether piece `n` is missing and nobody fetches any of its slices: what
    /// [`PieceClaims::claim_piece`] would take.
    pub fn piece_free(&self, n: u32) -> bool {
        if self.entry.bitfield().get(n) {
            return false;
        }
        let g = self.lock();
        !self
            .entry
            .slices()
            .range_of(n)
            .any(|s| g.claimed.contains_key(&s))
    }

    /// Claims every slice of piece `n` for the origin reader if nobody fetches any of them.
    pub fn claim_piece(&self, n: u32) -> bool {
        if self.entry.bitfield().get(n) {
            return false;
        }
        let range = self.entry.slices().range_of(n);
        let mut g = self.lock();
        if range.clone().any(|s| g.claimed.contains_key(&s)) {
            return false;
        }
        for s in range {
            g.claimed.insert(s, vec![String::new()]);
        }
        true
    }

    /// Ends the origin reader's claim on piece `n`.
    pub fn release_piece(&self, n: u32) {
        for s in self.entry.slices().range_of(n) {
            self.release(s, "");
        }
    }

    /// Ends the claim `parent` (empty: the origin) holds on slice `n`.
    pub fn release(&self, n: u32, parent: &str) {
        let mut g = self.lock();
        if let Some(by) = g.claimed.get_mut(&n) {
            if let Some(i) = by.iter().position(|p| p == parent) {
                by.swap_remove(i);
            }
            if by.is_empty() {
                g.claimed.remove(&n);
                g.since.remove(&n);
            }
        }
        drop(g);
        self.changed.notify_waiters();
    }

    /// True when every piece is present.
    pub fn all_present(&self) -> bool {
        self.entry.bitfield().is_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::slice::SLICE_LENGTH;
    use pollen_core::TaskId;
    use pollen_storage::{Store, TaskMeta};

    /// Claims for a new task of `slices` slices in pieces of four, every digest
    /// published, each parent in `parents` holding every slice; the store's directory lives
    /// as long as the returned guard.
    fn new_claims(
        slices: u64,
        in_flight: usize,
        parents: &[&str],
    ) -> (tempfile::TempDir, PieceClaims) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let meta = TaskMeta {
            content_length: slices * SLICE_LENGTH,
            piece_length: 4 * SLICE_LENGTH,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([5; 32]), meta).expect("task");
        let claims = PieceClaims::new(entry, in_flight);
        let pieces = slices.div_ceil(4) as u32;
        claims.add_expected((0..pieces).map(|n| (n, PieceDigest([n as u8 + 1; 32]))));
        let mut all = Bitfield::new(slices as u32);
        (0..slices as u32).for_each(|n| all.set(n));
        for p in parents {
            claims.set_parent_bitfield(p, all.clone());
        }
        (dir, claims)
    }

    #[test]
    fn slices_of_a_begun_piece_are_claimed_first_and_the_origin_claims_whole_pieces() {
        let (_dir, claims) = new_claims(8, 0, &["a"]);
        claims.entry.mark_slice(5);
        // Slices 0..4 are held only by "a" (rarer), but piece 1 is begun here.
        let mut most = Bitfield::new(8);
        (0..4).for_each(|n| most.set(n));
        claims.set_parent_bitfield("b", most);
        for _ in 0..3 {
            let (n, d) = claims.claim_from("a", false).expect("a slice");
            assert!(
                (4..8).contains(&n) && n != 5,
                "slice {n} is not of the begun piece"
            );
            assert_eq!(d, PieceDigest([2; 32]));
        }
        let (n, _) = claims.claim_from("a", false).expect("then piece 0");
        assert!(n < 4);
        // The origin gets a piece only when none of its slices is claimed.
        assert!(!claims.claim_piece(0) && !claims.claim_piece(1));
        claims.release(n, "a");
        assert!(claims.claim_piece(0));
        assert!(!claims.claim_piece(0), "claimed once");
        claims.release_piece(0);
        assert!(claims.claim_piece(0), "released whole");
    }

    #[test]
    fn slices_in_flight_are_spread_over_the_parents() {
        let (_dir, claims) = new_claims(32, 4, &[]);
        let mut all = Bitfield::new(32);
        (0..32).for_each(|n| all.set(n));
        // One parent takes the whole budget.
        claims.set_parent_bitfield("a", all.clone());
        let a: Vec<u32> = (0..4)
            .map(|_| claims.claim_from("a", false).expect("a slice").0)
            .collect();
        assert!(claims.claim_from("a", false).is_none(), "a has its 4");
        // With four parents, each gets one at a time: a keeps what it asked for but gets no
        // more until it has fewer than one in flight.
        for p in ["b", "c", "d"] {
            claims.set_parent_bitfield(p, all.clone());
        }
        for p in ["b", "c", "d"] {
            assert!(claims.claim_from(p, false).is_some(), "{p} gets one");
            assert!(claims.claim_from(p, false).is_none(), "{p} gets only one");
        }
        for n in &a[..3] {
            claims.release(*n, "a");
        }
        assert!(claims.claim_from("a", false).is_none(), "a still has one");
        claims.release(a[3], "a");
        assert!(claims.claim_from("a", false).is_some(), "a's turn again");
        // Without a budget, a parent takes what it asks for.
        let (_dir, claims) = new_claims(32, 0, &["a"]);
        assert!((0..10).all(|_| claims.claim_from("a", false).is_some()));
    }
}
