//! Verify before write: the one way a slice's bytes reach a task's content file.
//!
//! Goals:
//! - A parent's bytes for a slice reach the slice's place in the content file only after
//!   they matched the slice's hash (itself checked against the piece's published digest).
//!   A forged copy is refused whole in memory; nothing of it is ever on disk.
//! - A verified slice (held: served to others, counted in the bitfield) is never written
//!   again, by a parent's duplicate copy in the endgame or by the origin reader.
//! - Two writers never write the same slice at once: a writer takes the slice first (and
//!   waits for one that is writing it: a write of at most 256 KiB to the page cache), then
//!   finds it held and writes nothing, or writes it alone.
//!
//! The origin reader's bytes are the reference the piece digest is computed from, so they
//! have nothing to be checked against unless this peer already verified slice hashes of the
//! piece (then they are checked, and a difference means the origin changed). They are
//! written only to slices that are not held, and count only when their piece is committed
//! ([`crate::Store::commit_piece`]), which the caller does only when the digest it computed
//! matches what it expects.
//!
//! Non-goals: durability (the committer's job) and deciding who is at fault (the caller's).
//! Everything here blocks on file I/O and hashing: call it off the async runtime.

use pollen_core::slice::{SliceHash, SliceHasher};

use crate::error::StoreError;
use crate::slices::SliceMark;
use crate::store::TaskEntry;

/// What became of a parent's copy of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifiedPut {
    /// The bytes did not match the slice hash: nothing was written.
    Mismatch {
        /// The hash the bytes have.
        got: SliceHash,
    },
    /// Another copy was verified first: nothing was written.
    Duplicate,
    /// Written and held from now on.
    Stored(SliceMark),
}

/// What became of the origin's bytes for a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginPut {
    /// The hash of the bytes, from which the piece digest is made.
    pub hash: SliceHash,
    /// The bytes differ from the slice hash this peer already verified for the piece:
    /// nothing was written.
    pub mismatch: bool,
    /// The bytes were written (the slice was not held yet).
    pub written: bool,
}

/// Whether a writer may write a slice.
enum Turn {
    /// It is held: nobody writes it again.
    Held,
    /// The caller writes it and must end its turn.
    Mine,
}

impl TaskEntry {
    /// Checks a parent's copy of slice `g` against `expected` and, only if it matches and no
    /// other copy is held, writes it and marks the slice held. Blocking.
    pub fn put_verified_slice(
        &self,
        g: u32,
        bytes: &[u8],
        expected: &SliceHash,
    ) -> Result<VerifiedPut, StoreError> {
        let (offset, got) = self.hash_slice(g, bytes)?;
        if got != *expected {
            return Ok(VerifiedPut::Mismatch { got });
        }
        if let Turn::Held = self.take_turn(g) {
            return Ok(VerifiedPut::Duplicate);
        }
        let written = self.content().write_at(bytes, offset);
        let mark = written.is_ok().then(|| self.mark_slice(g));
        self.end_turn(g);
        written?;
        Ok(mark.map_or(VerifiedPut::Duplicate, VerifiedPut::Stored))
    }

    /// Hashes the origin's bytes for slice `g` and writes them unless the slice is held (or
    /// they differ from a slice hash verified here before). Blocking.
    pub fn put_origin_slice(&self, g: u32, bytes: &[u8]) -> Result<OriginPut, StoreError> {
        let (offset, hash) = self.hash_slice(g, bytes)?;
        let slices = self.slices();
        let known = slices.spot(g).and_then(|s| {
            let hashes = self.slice_hashes(s.piece)?;
            hashes.get(s.index as usize).copied()
        });
        let mut put = OriginPut {
            hash,
            mismatch: known.is_some_and(|k| k != hash),
            written: false,
        };
        if put.mismatch {
            return Ok(put);
        }
        if let Turn::Mine = self.take_turn(g) {
            let written = self.content().write_at(bytes, offset);
            self.end_turn(g);
            written?;
            put.written = true;
        }
        Ok(put)
    }

    /// The offset of slice `g` and the hash of `bytes` as that slice; the bytes must be the
    /// whole slice.
    fn hash_slice(&self, g: u32, bytes: &[u8]) -> Result<(u64, SliceHash), StoreError> {
        let spot = self
            .slices()
            .spot(g)
            .filter(|s| s.length == bytes.len() as u64)
            .ok_or(StoreError::SliceLength {
                slice: g,
                given: bytes.len() as u64,
            })?;
        let mut hasher = SliceHasher::new(self.layout().length(spot.piece), spot.index);
        hasher.update(bytes);
        let hash = hasher
            .finish()
            .first()
            .copied()
            .ok_or(StoreError::SliceLength {
                slice: g,
                given: bytes.len() as u64,
            })?;
        Ok((spot.offset, hash))
    }

    /// Waits until nobody writes slice `g`; then it is held, or the caller's to write.
    fn take_turn(&self, g: u32) -> Turn {
        let mut book = self.book();
        loop {
            if book.held.get(g) {
                return Turn::Held;
            }
            if book.writing.insert(g) {
                return Turn::Mine;
            }
            book = self
                .slice_written
                .wait(book)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends a turn taken by [`Self::take_turn`] and wakes writers waiting for the slice.
    fn end_turn(&self, g: u32) {
        self.book().writing.remove(&g);
        self.slice_written.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pollen_core::slice::{slice_hashes, SLICE_LENGTH};
    use pollen_core::TaskId;

    use super::*;
    use crate::{Store, TaskMeta};

    /// A task of two pieces of two slices each, and its bytes.
    fn task() -> (tempfile::TempDir, Arc<Store>, Arc<TaskEntry>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let len = 4 * SLICE_LENGTH;
        let meta = TaskMeta {
            content_length: len,
            piece_length: 2 * SLICE_LENGTH,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([9; 32]), meta).expect("task");
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        (dir, store, entry, data)
    }

    fn slice(data: &[u8], g: usize) -> &[u8] {
        let s = SLICE_LENGTH as usize;
        &data[g * s..(g + 1) * s]
    }

    fn on_disk(entry: &TaskEntry, g: u32) -> Vec<u8> {
        let mut back = vec![0u8; SLICE_LENGTH as usize];
        entry
            .content()
            .read_at(&mut back, u64::from(g) * SLICE_LENGTH)
            .expect("read");
        back
    }

    #[test]
    fn a_forged_slice_never_reaches_the_content_file() {
        let (_dir, _store, entry, data) = task();
        let hashes = slice_hashes(&data[..2 * SLICE_LENGTH as usize]);
        let forged = vec![0xAA; SLICE_LENGTH as usize];
        let put = entry
            .put_verified_slice(1, &forged, &hashes[1])
            .expect("put");
        assert!(matches!(put, VerifiedPut::Mismatch { .. }), "{put:?}");
        assert_eq!(on_disk(&entry, 1), vec![0u8; SLICE_LENGTH as usize]);
        assert!(!entry.has_slice(1));
        let put = entry
            .put_verified_slice(1, slice(&data, 1), &hashes[1])
            .expect("put");
        assert_eq!(put, VerifiedPut::Stored(SliceMark::Added));
        assert_eq!(on_disk(&entry, 1), slice(&data, 1));
    }

    #[test]
    fn a_held_slice_is_never_written_again_by_a_parent_or_the_origin() {
        let (_dir, _store, entry, data) = task();
        let hashes = slice_hashes(&data[..2 * SLICE_LENGTH as usize]);
        entry.set_slice_hashes(0, hashes.clone().into());
        let put = entry
            .put_verified_slice(0, slice(&data, 0), &hashes[0])
            .expect("put");
        assert_eq!(put, VerifiedPut::Stored(SliceMark::Added));
        // The endgame's second copy, forged: refused before any write.
        let forged = vec![0x55; SLICE_LENGTH as usize];
        let put = entry
            .put_verified_slice(0, &forged, &hashes[0])
            .expect("put");
        assert!(matches!(put, VerifiedPut::Mismatch { .. }));
        // An honest second copy: counted as a duplicate, not written.
        let put = entry
            .put_verified_slice(0, slice(&data, 0), &hashes[0])
            .expect("put");
        assert_eq!(put, VerifiedPut::Duplicate);
        // The origin's bytes for it: the same, so not a mismatch, and not written.
        let put = entry.put_origin_slice(0, slice(&data, 0)).expect("put");
        assert_eq!(
            (put.hash, put.mismatch, put.written),
            (hashes[0], false, false)
        );
        // Origin bytes that differ from what was verified (the origin changed): refused.
        let put = entry.put_origin_slice(1, &forged).expect("put");
        assert!(put.mismatch && !put.written);
        assert_eq!(on_disk(&entry, 1), vec![0u8; SLICE_LENGTH as usize]);
        assert_eq!(on_disk(&entry, 0), slice(&data, 0));
    }

    #[test]
    fn the_origin_writes_slices_of_a_piece_nobody_verified_and_they_are_not_held() {
        let (_dir, _store, entry, data) = task();
        let put = entry.put_origin_slice(2, slice(&data, 2)).expect("put");
        assert!(put.written && !put.mismatch);
        assert_eq!(
            put.hash,
            slice_hashes(&data[2 * SLICE_LENGTH as usize..])[0]
        );
        assert!(!entry.has_slice(2), "held only once the piece is committed");
        assert_eq!(on_disk(&entry, 2), slice(&data, 2));
    }

    #[test]
    fn bytes_that_are_not_a_whole_slice_are_refused() {
        let (_dir, _store, entry, data) = task();
        let hashes = slice_hashes(&data[..2 * SLICE_LENGTH as usize]);
        let short = &slice(&data, 0)[..100];
        for r in [
            entry.put_verified_slice(0, short, &hashes[0]).map(|_| ()),
            entry.put_origin_slice(0, short).map(|_| ()),
            entry
                .put_verified_slice(4, slice(&data, 0), &hashes[0])
                .map(|_| ()),
        ] {
            assert!(matches!(r, Err(StoreError::SliceLength { .. })), "{r:?}");
        }
    }

    #[test]
    fn racing_copies_of_one_slice_are_written_once() {
        let (_dir, _store, entry, data) = task();
        let hashes = slice_hashes(&data[..2 * SLICE_LENGTH as usize]);
        let bytes = slice(&data, 1).to_vec();
        let outcomes: Vec<VerifiedPut> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| entry.put_verified_slice(1, &bytes, &hashes[1])))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("put"))
                .collect()
        });
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, VerifiedPut::Stored(_)))
            .count();
        assert_eq!(stored, 1, "{outcomes:?}");
        assert_eq!(on_disk(&entry, 1), bytes);
    }
}
