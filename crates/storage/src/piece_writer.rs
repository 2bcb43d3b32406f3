//! Streams one piece read from the origin into its content file, slice by slice, off the
//! async runtime.
//!
//! Bytes arrive in chunks of any size (the origin's body). They are gathered into a buffer of
//! one slice (256 KiB); each whole slice is handed to one blocking task that hashes it and
//! writes it (through [`TaskEntry::put_origin_slice`], so a slice already verified here is
//! never written again) while the caller gathers the next one. Hashing and writing on the same
//! thread, straight after each other, keeps the buffer in that core's cache: with the two on
//! different threads, the kernel's copy into the page cache read the buffer cold and cost
//! about five times as much per byte (see docs/benchmarks-history.md). One slice is in
//! flight at a time, so at most two slice buffers exist per writer and the runtime threads
//! never do file I/O or hashing. The piece digest is known when the last slice is in; the
//! caller compares it with what it expects before it commits the piece.

use std::sync::Arc;

use pollen_core::slice::{piece_root, SliceHash, SLICE_LENGTH};
use pollen_core::PieceDigest;
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::slice_write::OriginPut;
use crate::store::TaskEntry;

/// Size of the reads a caller makes into a slice buffer at a time (parents' payloads are read
/// in pieces of this size, so rate limiting stays fine-grained).
pub const WRITE_CHUNK: usize = 128 << 10;

/// A slice in flight: one blocking task that hashes and writes it, and hands the buffer back.
type Flush = JoinHandle<(Vec<u8>, Result<OriginPut, StoreError>)>;

/// Writes one piece read from the origin, chunk by chunk.
pub struct PieceWriter {
    entry: Arc<TaskEntry>,
    piece: u32,
    piece_length: u64,
    /// The global number of the piece's first slice, and of the slice being gathered.
    first_slice: u32,
    next_slice: u32,
    in_flight: Option<(u32, Flush)>,
    buf: Vec<u8>,
    hashes: Vec<SliceHash>,
    accepted: u64,
}

impl PieceWriter {
    /// Starts piece `n` of `entry`.
    pub fn new(entry: Arc<TaskEntry>, n: u32) -> Self {
        let piece_length = entry.layout().length(n);
        let next_slice = entry.slices().global(n, 0);
        Self {
            entry,
            piece: n,
            piece_length,
            first_slice: next_slice,
            next_slice,
            in_flight: None,
            buf: Vec::new(),
            hashes: Vec::new(),
            accepted: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.accepted
    }

    /// Length of the slice being gathered.
    fn slice_length(&self) -> usize {
        let start = u64::from(self.next_slice - self.first_slice) * SLICE_LENGTH;
        self.piece_length.saturating_sub(start).min(SLICE_LENGTH) as usize
    }

    /// Waits for the slice in flight; returns its buffer for reuse.
    async fn settle(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((g, flush)) = self.in_flight.take() else {
            return Ok(None);
        };
        let (buf, put) = flush.await.map_err(|_| StoreError::Closed)?;
        let put = put?;
        if put.mismatch {
            return Err(StoreError::OriginChanged { slice: g });
        }
        self.hashes.push(put.hash);
        Ok(Some(buf))
    }

    /// Starts hashing and writing the gathered slice (after the previous one).
    async fn flush(&mut self) -> Result<(), StoreError> {
        let full = std::mem::take(&mut self.buf);
        let spare = self.settle().await?;
        let (entry, g) = (self.entry.clone(), self.next_slice);
        self.next_slice += 1;
        self.in_flight = Some((
            g,
            tokio::task::spawn_blocking(move || {
                let put = entry.put_origin_slice(g, &full);
                (full, put)
            }),
        ));
        if let Some(mut spare) = spare {
            spare.clear();
            self.buf = spare;
        }
        Ok(())
    }

    /// Accepts a chunk of any size. Bytes past the end of the piece are
    /// [`StoreError::PieceLength`].
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.accepted += data.len() as u64;
        if self.accepted > self.piece_length {
            return Err(StoreError::PieceLength {
                announced: self.piece_length,
                written: self.accepted,
            });
        }
        while !data.is_empty() {
            let want = self.slice_length();
            if self.buf.capacity() < want {
                self.buf.reserve_exact(want - self.buf.len());
            }
            let take = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == want {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Waits for the last slice and returns the digest of the piece, with the slice hashes
    /// it is made of. A piece given fewer bytes than it holds is [`StoreError::PieceLength`].
    pub async fn finish(mut self) -> Result<(PieceDigest, Vec<SliceHash>), StoreError> {
        self.settle().await?;
        let (written, announced) = (self.accepted, self.piece_length);
        match piece_root(&self.hashes, announced) {
            Some(d) if written == announced => Ok((d, self.hashes)),
            _ => Err(StoreError::PieceLength { announced, written }),
        }
    }

    /// The piece being written.
    pub fn piece(&self) -> u32 {
        self.piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, TaskMeta};
    use pollen_core::TaskId;

    fn entry_of(len: u64, piece_length: u64) -> (tempfile::TempDir, Arc<Store>, Arc<TaskEntry>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let meta = TaskMeta {
            content_length: len,
            piece_length,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([3; 32]), meta).expect("task");
        (dir, store, entry)
    }

    #[tokio::test]
    async fn mixed_chunk_sizes_hash_and_land_in_order() {
        let piece = 4 * SLICE_LENGTH;
        let (_dir, _store, entry) = entry_of(piece + 3 * SLICE_LENGTH + 12345, piece);
        let len = entry.layout().length(1);
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let mut w = PieceWriter::new(entry.clone(), 1);
        assert_eq!(w.piece(), 1);
        w.write(&data[..100]).await.expect("small");
        for part in data[100..].chunks(70_000) {
            w.write(part).await.expect("chunk");
        }
        assert_eq!(w.written(), len);
        let (digest, hashes) = w.finish().await.expect("digest");
        assert_eq!(digest, PieceDigest::of(&data));
        assert_eq!(hashes, pollen_core::slice::slice_hashes(&data));
        let mut back = vec![0u8; data.len()];
        entry.content().read_at(&mut back, piece).expect("read");
        assert_eq!(back, data);
        assert!(!entry.has_slice(4), "written, not held before the commit");
    }

    #[tokio::test]
    async fn a_piece_given_fewer_or_more_bytes_than_it_holds_has_no_digest() {
        let (_dir, _store, entry) = entry_of(4096, 4096);
        let mut w = PieceWriter::new(entry.clone(), 0);
        assert_eq!(w.piece(), 0);
        w.write(&[7u8; 1000]).await.expect("write");
        match w.finish().await {
            Err(StoreError::PieceLength { announced, written }) => {
                assert_eq!((announced, written), (4096, 1000));
            }
            other => panic!("expected a length error, got {other:?}"),
        }
        let mut w = PieceWriter::new(entry, 0);
        let r = w.write(&[7u8; 5000]).await;
        assert!(matches!(r, Err(StoreError::PieceLength { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn origin_bytes_that_differ_from_a_verified_slice_fail_the_piece() {
        let piece = 2 * SLICE_LENGTH;
        let (_dir, _store, entry) = entry_of(piece, piece);
        let honest: Vec<u8> = (0..piece).map(|i| (i % 241) as u8).collect();
        let hashes = pollen_core::slice::slice_hashes(&honest);
        entry.set_slice_hashes(0, hashes.clone().into());
        let first = &honest[..SLICE_LENGTH as usize];
        let put = entry.put_verified_slice(0, first, &hashes[0]).expect("put");
        assert!(matches!(put, crate::VerifiedPut::Stored(_)));
        let mut w = PieceWriter::new(entry.clone(), 0);
        w.write(first).await.expect("first slice, held: skipped");
        w.write(&vec![1u8; SLICE_LENGTH as usize])
            .await
            .expect("gathered");
        let r = w.finish().await;
        assert!(
            matches!(r, Err(StoreError::OriginChanged { slice: 1 })),
            "{r:?}"
        );
        let mut back = vec![0u8; piece as usize];
        entry.content().read_at(&mut back, 0).expect("read");
        assert_eq!(&back[..SLICE_LENGTH as usize], first);
        assert!(back[SLICE_LENGTH as usize..].iter().all(|b| *b == 0));
    }

    #[tokio::test]
    async fn a_piece_short_by_part_of_its_last_slice_has_no_digest() {
        // Every slice begun, the last one short: the hashes are all there, the length is not.
        let piece = 2 * SLICE_LENGTH;
        let (_dir, _store, entry) = entry_of(piece, piece);
        let mut w = PieceWriter::new(entry.clone(), 0);
        w.write(&vec![5u8; (SLICE_LENGTH + 1000) as usize])
            .await
            .expect("write");
        match w.finish().await {
            Err(StoreError::PieceLength { announced, written }) => {
                assert_eq!((announced, written), (piece, SLICE_LENGTH + 1000));
            }
            other => panic!("expected a length error, got {other:?}"),
        }
        assert_eq!(entry.held_slice_count(), 0, "nothing of it is held");
    }
}
