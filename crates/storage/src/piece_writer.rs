//! Streams one piece into its content file while hashing it, off the async runtime.
//!
//! Bytes arrive in chunks (from a parent's socket or the origin's body). Small chunks are
//! gathered into a 1 MiB buffer; each full buffer is hashed and written at its offset on the
//! blocking pool, so no piece is ever held whole in memory and the runtime threads never do
//! file I/O or hashing. The digest is known when the last chunk is in; the caller compares it
//! with the expected digest before committing the piece.

use pollen_core::PieceDigest;

use crate::content::ContentFile;
use crate::error::StoreError;

/// Size of the buffer handed to the blocking pool at a time.
pub const WRITE_CHUNK: usize = 1 << 20;

/// Writes one piece chunk by chunk.
pub struct PieceWriter {
    file: ContentFile,
    next_offset: u64,
    hasher: Option<Box<blake3::Hasher>>,
    buf: Vec<u8>,
    written: u64,
}

impl PieceWriter {
    /// Starts a piece at `offset`.
    pub fn new(file: ContentFile, offset: u64) -> Self {
        Self {
            file,
            next_offset: offset,
            hasher: Some(Box::new(blake3::Hasher::new())),
            buf: Vec::new(),
            written: 0,
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Hashes and writes a whole owned buffer at once (no copy); returns it for reuse.
    pub async fn write_owned(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        if !self.buf.is_empty() {
            let pending = std::mem::take(&mut self.buf);
            self.buf = self.flush(pending).await?;
            self.buf.clear();
        }
        self.flush(chunk).await
    }

    /// Accepts a chunk of any size, gathering small ones before they are written.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(WRITE_CHUNK);
            }
            let take = (WRITE_CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == WRITE_CHUNK {
                let full = std::mem::take(&mut self.buf);
                let mut back = self.flush(full).await?;
                back.clear();
                self.buf = back;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, chunk: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let mut hasher = self.hasher.take().ok_or(StoreError::Closed)?;
        let file = self.file.clone();
        let offset = self.next_offset;
        let len = chunk.len() as u64;
        let (hasher, chunk, result) = tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            let r = file.write_at(&chunk, offset);
            (hasher, chunk, r)
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        self.hasher = Some(hasher);
        result?;
        self.next_offset += len;
        self.written += len;
        Ok(chunk)
    }

    /// Writes what is still buffered and returns the digest of everything written.
    pub async fn finish(mut self) -> Result<PieceDigest, StoreError> {
        if !self.buf.is_empty() {
            let pending = std::mem::take(&mut self.buf);
            self.flush(pending).await?;
        }
        self.hasher
            .map(|h| PieceDigest::from(h.finalize()))
            .ok_or(StoreError::Closed)
    }
}
