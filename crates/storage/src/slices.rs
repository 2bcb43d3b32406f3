//! Slices of a task held in memory: which slices of unfinished pieces are verified (so they
//! can be served before their piece is whole), and each piece's slice hashes (so a slice can
//! be sent with what its receiver verifies it against).
//!
//! Nothing here is durable: after a restart, unfinished pieces are fetched again whole, as
//! before slices, and the hashes of finished pieces are computed again from their bytes the
//! first time a slice of them is asked for. A piece counts as present only through
//! [`crate::Store::commit_piece`]; a verified slice is never more than that: verified bytes
//! in the content file.

use std::sync::Arc;

use pollen_core::slice::{piece_root, SliceHasher};
use pollen_core::{Bitfield, SliceHash, SliceLayout};

use crate::error::StoreError;
use crate::slice_book::SliceBook;
use crate::store::TaskEntry;

/// Read size when a piece's slice hashes are computed from the content file.
const HASH_READ: usize = 1 << 20;

/// What marking a slice verified did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceMark {
    /// It was already verified (another parent's copy came first).
    Already,
    /// It is verified now; its piece still lacks slices.
    Added,
    /// It is verified now and was its piece's last missing slice.
    PieceDone,
}

impl TaskEntry {
    /// How the task's pieces are cut into slices.
    pub fn slices(&self) -> SliceLayout {
        SliceLayout::new(self.layout())
    }

    /// The slices this task can serve: every slice of a present piece and every verified
    /// slice of an unfinished one.
    pub fn slice_bitfield(&self) -> Bitfield {
        self.book().held.clone()
    }

    /// How many slices this task can serve (without copying the bitfield).
    pub fn held_slice_count(&self) -> u32 {
        self.book().held.count()
    }

    /// True when slice `g` can be served.
    pub fn has_slice(&self, g: u32) -> bool {
        self.book().held.get(g)
    }

    /// Unfinished pieces of which a slice is verified.
    pub fn begun_pieces(&self) -> Vec<u32> {
        self.book().begun.iter().copied().collect()
    }

    /// The known slice hashes of piece `n`.
    pub fn slice_hashes(&self, n: u32) -> Option<Arc<[SliceHash]>> {
        self.book().hashes.get(&n).cloned()
    }

    /// Records piece `n`'s slice hashes, checked by the caller against its digest.
    pub fn set_slice_hashes(&self, n: u32, hashes: Arc<[SliceHash]>) {
        self.book().hashes.entry(n).or_insert(hashes);
    }

    /// Marks slice `g` verified (its bytes written and checked against its hash). Only
    /// [`TaskEntry::put_verified_slice`] should call it outside tests: that is what makes
    /// "held" mean "verified bytes on disk".
    pub fn mark_slice(&self, g: u32) -> SliceMark {
        let slices = self.slices();
        let Some(spot) = slices.spot(g) else {
            return SliceMark::Already;
        };
        let mut book = self.book();
        if book.held.get(g) {
            return SliceMark::Already;
        }
        book.held.set(g);
        if slices.range_of(spot.piece).all(|s| book.held.get(s)) {
            book.begun.remove(&spot.piece);
            SliceMark::PieceDone
        } else {
            book.begun.insert(spot.piece);
            SliceMark::Added
        }
    }

    /// Marks every slice of piece `n` held (it was committed).
    pub(crate) fn hold_piece_slices(&self, n: u32) {
        let slices = self.slices();
        let mut book = self.book();
        slices.range_of(n).for_each(|g| book.held.set(g));
        book.begun.remove(&n);
    }

    /// Forgets what is known of the slices of pieces found bad.
    pub(crate) fn forget_slices(&self, numbers: &[u32]) {
        let slices = self.slices();
        let mut book = self.book();
        for &n in numbers {
            book.hashes.remove(&n);
            book.begun.remove(&n);
            for g in slices.range_of(n) {
                book.held.clear(g);
            }
        }
    }

    /// Piece `n`'s slice hashes: the known ones, or (for a present piece whose hashes this
    /// process never saw, e.g. after a restart) computed from its bytes and checked against
    /// its digest. Blocks on file reads; call it off the async runtime.
    pub fn load_slice_hashes(&self, n: u32) -> Result<Option<Arc<[SliceHash]>>, StoreError> {
        if let Some(h) = self.slice_hashes(n) {
            return Ok(Some(h));
        }
        let Some(digest) = self.piece_digest(n) else {
            return Ok(None);
        };
        let layout = self.layout();
        let (offset, len) = (layout.offset(n), layout.length(n));
        let mut hasher = SliceHasher::new(len, 0);
        let mut buf = vec![0u8; HASH_READ];
        let mut at = 0u64;
        while at < len {
            let take = (len - at).min(HASH_READ as u64) as usize;
            self.content().read_at(&mut buf[..take], offset + at)?;
            hasher.update(&buf[..take]);
            at += take as u64;
        }
        let hashes: Arc<[SliceHash]> = hasher.finish().into();
        if piece_root(&hashes, len) != Some(digest) {
            return Err(StoreError::Corrupt {
                task: self.id.hex(),
                reason: format!("piece {n} no longer matches its digest"),
            });
        }
        self.set_slice_hashes(n, hashes.clone());
        Ok(Some(hashes))
    }

    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, SliceBook> {
        self.slice_book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use pollen_core::slice::{slice_hashes, SLICE_LENGTH};
    use pollen_core::{PieceDigest, TaskId};

    use super::*;
    use crate::{Store, TaskMeta};

    #[tokio::test]
    async fn verified_slices_are_served_before_their_piece_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let len = 5 * SLICE_LENGTH + 7;
        let meta = TaskMeta {
            content_length: len,
            piece_length: 4 * SLICE_LENGTH,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([4; 32]), meta).expect("task");
        let s = entry.slices();
        assert_eq!(s.count(), 6);
        assert!(entry.begun_pieces().is_empty());
        assert_eq!(entry.mark_slice(1), SliceMark::Added);
        assert_eq!(entry.mark_slice(1), SliceMark::Already);
        assert_eq!(entry.begun_pieces(), vec![0]);
        assert!(entry.has_slice(1) && !entry.has_slice(0));
        assert_eq!(
            entry.slice_bitfield().iter_set().collect::<Vec<_>>(),
            vec![1]
        );
        for g in [0, 2] {
            assert_eq!(entry.mark_slice(g), SliceMark::Added);
        }
        assert_eq!(entry.mark_slice(3), SliceMark::PieceDone);
        assert!(entry.begun_pieces().is_empty(), "piece 0 is whole");
        assert_eq!(entry.mark_slice(9), SliceMark::Already, "past the end");
        // Piece 1 (two slices) committed whole: all its slices count.
        let data: Vec<u8> = (0..len - 4 * SLICE_LENGTH).map(|i| i as u8).collect();
        entry
            .content()
            .write_at(&data, 4 * SLICE_LENGTH)
            .expect("write");
        store
            .commit_piece(&entry, 1, PieceDigest::of(&data))
            .await
            .expect("commit");
        assert_eq!(entry.slice_bitfield().count(), 6);
        assert_eq!(
            entry.mark_slice(5),
            SliceMark::Already,
            "of a committed piece"
        );
        // Its slice hashes were never recorded: they are computed from the bytes.
        let hashes = entry.load_slice_hashes(1).expect("read").expect("present");
        assert_eq!(&*hashes, slice_hashes(&data).as_slice());
        // A piece found bad loses its slices too.
        store.drop_pieces(&entry, &[0]).expect("drop");
        assert!(!entry.has_slice(2));
        assert_eq!(entry.load_slice_hashes(0).expect("read"), None);
        // After a restart, the slices of the committed piece are held again.
        drop(entry);
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        let entry = store.get(&TaskId([4; 32])).expect("task");
        assert_eq!(
            entry.slice_bitfield().iter_set().collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    #[tokio::test]
    async fn hashes_of_a_piece_longer_than_one_read_are_computed_over_its_bytes_only() {
        // One piece of 2.5 MiB: read in 1 MiB, 1 MiB and a last half, at its own offset.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let len = 10 * SLICE_LENGTH;
        let meta = TaskMeta {
            content_length: len,
            piece_length: 16 * SLICE_LENGTH,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([6; 32]), meta).expect("task");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        entry.content().write_at(&data, 0).expect("write");
        store
            .commit_piece(&entry, 0, PieceDigest::of(&data))
            .await
            .expect("commit");
        let hashes = entry.load_slice_hashes(0).expect("read").expect("present");
        assert_eq!(&*hashes, slice_hashes(&data).as_slice());
    }
}
