//! Streams one piece, or one slice of a piece, into its content file while hashing it, off
//! the async runtime.
//!
//! Bytes arrive in chunks (from a parent's socket or the origin's body). Small chunks are
//! gathered into a 128 KiB buffer; each full buffer is hashed and then written at its offset
//! by one blocking task, while the caller already receives the next one. Hashing and writing
//! on the same thread, straight after each other, keeps the buffer in that core's cache: with
//! the two on different threads, the kernel's copy into the page cache read the buffer cold
//! and cost about five times as much per byte (see docs/BENCHMARKS.md). One flush is in flight
//! at a time, so the hash sees the bytes in order. No piece is ever held whole in memory and
//! the runtime threads never do file I/O or hashing. The slice hashes (and from them the piece
//! digest) are known when the last chunk is in; the caller compares them with what it expects
//! before it counts the bytes as verified.

use pollen_core::slice::{piece_root, SliceHash, SliceHasher, SliceSpot};
use pollen_core::PieceDigest;
use tokio::task::JoinHandle;

use crate::content::ContentFile;
use crate::error::StoreError;

/// Size of the buffer handed to the blocking pool at a time.
pub const WRITE_CHUNK: usize = 128 << 10;

/// A flush in flight: one blocking task that hashes the buffer, then writes it while it is
/// still in that core's cache, and hands both back.
type Flush = JoinHandle<(Box<SliceHasher>, Vec<u8>, Result<(), StoreError>)>;

/// Writes one piece, or one slice, chunk by chunk.
pub struct PieceWriter {
    file: ContentFile,
    next_offset: u64,
    piece_length: u64,
    hasher: Option<Box<SliceHasher>>,
    in_flight: Option<Flush>,
    buf: Vec<u8>,
    accepted: u64,
}

impl PieceWriter {
    /// Starts a whole piece of `piece_length` bytes at `offset`.
    pub fn new(file: ContentFile, offset: u64, piece_length: u64) -> Self {
        Self::starting(file, offset, piece_length, 0)
    }

    /// Starts one slice of a piece of `piece_length` bytes.
    pub fn slice(file: ContentFile, spot: SliceSpot, piece_length: u64) -> Self {
        Self::starting(file, spot.offset, piece_length, spot.index)
    }

    fn starting(file: ContentFile, offset: u64, piece_length: u64, index: u32) -> Self {
        Self {
            file,
            next_offset: offset,
            piece_length,
            hasher: Some(Box::new(SliceHasher::new(piece_length, index))),
            in_flight: None,
            buf: Vec::new(),
            accepted: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.accepted
    }

    /// Waits for the flush in flight; returns its buffer for reuse.
    async fn settle(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(flush) = self.in_flight.take() else {
            return Ok(None);
        };
        let (hasher, buf, written) = flush.await.map_err(|_| StoreError::Closed)?;
        self.hasher = Some(hasher);
        written?;
        Ok(Some(buf))
    }

    /// Starts hashing and writing `chunk` in the background (after the previous flush).
    async fn flush(&mut self, chunk: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        let spare = self.settle().await?;
        let mut hasher = self.hasher.take().ok_or(StoreError::Closed)?;
        let file = self.file.clone();
        let offset = self.next_offset;
        self.next_offset += chunk.len() as u64;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            let written = file.write_at(&chunk, offset);
            (hasher, chunk, written)
        }));
        Ok(spare)
    }

    /// Hashes and writes a whole owned buffer (no copy); returns a buffer for the caller to
    /// fill next (the one from the previous flush, or a new one).
    pub async fn write_owned(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if !self.buf.is_empty() {
            let pending = std::mem::take(&mut self.buf);
            self.flush(pending).await?;
        }
        self.accepted += chunk.len() as u64;
        Ok(self.flush(chunk).await?.unwrap_or_default())
    }

    /// Accepts a chunk of any size, gathering small ones before they are written.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.accepted += data.len() as u64;
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_CHUNK);
            }
            let take = (WRITE_CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == WRITE_CHUNK {
                let full = std::mem::take(&mut self.buf);
                if let Some(mut spare) = self.flush(full).await? {
                    spare.clear();
                    self.buf = spare;
                }
            }
        }
        Ok(())
    }

    /// Writes what is still buffered and returns the hashes of the slices written.
    pub async fn finish_slices(mut self) -> Result<Vec<SliceHash>, StoreError> {
        if !self.buf.is_empty() {
            let pending = std::mem::take(&mut self.buf);
            self.flush(pending).await?;
        }
        self.settle().await?;
        self.hasher
            .take()
            .map(|h| h.finish())
            .ok_or(StoreError::Closed)
    }

    /// For a writer of a whole piece: writes what is still buffered and returns the digest
    /// of everything written, with the slice hashes it is made of. A piece shorter or
    /// longer than announced is [`StoreError::PieceLength`].
    pub async fn finish(self) -> Result<(PieceDigest, Vec<SliceHash>), StoreError> {
        let (written, announced) = (self.accepted, self.piece_length);
        let hashes = self.finish_slices().await?;
        match piece_root(&hashes, announced) {
            Some(d) if written == announced => Ok((d, hashes)),
            _ => Err(StoreError::PieceLength { announced, written }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mixed_chunk_sizes_hash_and_land_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..(3 * WRITE_CHUNK + 12345))
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        let file = ContentFile::open(&dir.path().join("c"), data.len() as u64 + 10).expect("open");
        let mut w = PieceWriter::new(file.clone(), 10, data.len() as u64);
        w.write(&data[..100]).await.expect("small");
        let spare = w
            .write_owned(data[100..WRITE_CHUNK + 100].to_vec())
            .await
            .expect("owned");
        assert!(spare.is_empty() || spare.capacity() > 0);
        for part in data[WRITE_CHUNK + 100..].chunks(70_000) {
            w.write(part).await.expect("chunk");
        }
        assert_eq!(w.written(), data.len() as u64);
        let (digest, hashes) = w.finish().await.expect("digest");
        assert_eq!(digest, PieceDigest::of(&data));
        assert_eq!(hashes, pollen_core::slice::slice_hashes(&data));
        let mut back = vec![0u8; data.len()];
        file.read_at(&mut back, 10).expect("read");
        assert_eq!(back, data);
    }

    #[tokio::test]
    async fn a_piece_given_fewer_bytes_than_it_holds_has_no_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = ContentFile::open(&dir.path().join("c"), 4096).expect("open");
        let mut w = PieceWriter::new(file, 0, 4096);
        w.write(&[7u8; 1000]).await.expect("write");
        match w.finish().await {
            Err(StoreError::PieceLength { announced, written }) => {
                assert_eq!((announced, written), (4096, 1000))
            }
            other => panic!("expected a length error, got {other:?}"),
        }
    }
}
