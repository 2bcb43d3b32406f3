//! Checks and writes a parent's slices off the async runtime, one behind the other, so the
//! connection reads the next slice while the previous one is hashed and written.
//!
//! A slice is read whole into memory (256 KiB) before anything of it is written: see
//! [`crate::slice_write`]. The sink keeps one slice in flight; submitting the next one hands
//! back the outcome of the one before, tagged with whatever the caller needs to act on it
//! (which slice it asked for, when, its place among the pieces in flight). Two buffers per
//! sink are reused, so a long download allocates nothing per slice.

use std::sync::Arc;

use pollen_core::SliceHash;
use tokio::task::JoinHandle;

use crate::error::StoreError;
use crate::slice_write::VerifiedPut;
use crate::store::TaskEntry;

type Put = JoinHandle<(Vec<u8>, Result<VerifiedPut, StoreError>)>;

/// Called with a slice's length as soon as it is stored, on the thread that stored it.
pub type OnStored = Arc<dyn Fn(u64) + Send + Sync>;

/// One connection's slices on their way to the content file.
pub struct SliceSink<T> {
    entry: Arc<TaskEntry>,
    in_flight: Option<(T, Put)>,
    spare: Vec<u8>,
    on_stored: Option<OnStored>,
}

impl<T> SliceSink<T> {
    /// A sink for the slices of `entry`.
    pub fn new(entry: Arc<TaskEntry>) -> Self {
        Self {
            entry,
            in_flight: None,
            spare: Vec::new(),
            on_stored: None,
        }
    }

    /// Calls `f` for every slice stored, at once: a count kept this way is right even when
    /// the sink's owner is dropped with a slice in flight (the write finishes regardless).
    pub fn on_stored(mut self, f: OnStored) -> Self {
        self.on_stored = Some(f);
        self
    }

    /// A buffer of `len` bytes to read the next slice into.
    pub fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.spare);
        buf.resize(len, 0);
        buf
    }

    /// True while a slice is being checked and written.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts checking slice `g` (read into `bytes`) against `expected` and writing it;
    /// returns the outcome of the slice submitted before, if any.
    pub async fn submit(
        &mut self,
        g: u32,
        bytes: Vec<u8>,
        expected: SliceHash,
        tag: T,
    ) -> Result<Option<(T, VerifiedPut)>, StoreError> {
        let before = self.settle().await?;
        let (entry, on_stored) = (self.entry.clone(), self.on_stored.clone());
        let put = tokio::task::spawn_blocking(move || {
            let put = entry.put_verified_slice(g, &bytes, &expected);
            if let (Ok(VerifiedPut::Stored(_)), Some(f)) = (&put, on_stored) {
                f(bytes.len() as u64);
            }
            (bytes, put)
        });
        self.in_flight = Some((tag, put));
        Ok(before)
    }

    /// Waits for the slice in flight and returns its outcome.
    pub async fn settle(&mut self) -> Result<Option<(T, VerifiedPut)>, StoreError> {
        let Some((tag, put)) = self.in_flight.take() else {
            return Ok(None);
        };
        let (buf, put) = put.await.map_err(|_| StoreError::Closed)?;
        self.spare = buf;
        Ok(Some((tag, put?)))
    }
}

#[cfg(test)]
mod tests {
    use pollen_core::slice::{slice_hashes, SLICE_LENGTH};
    use pollen_core::TaskId;

    use super::*;
    use crate::{SliceMark, Store, TaskMeta};

    #[tokio::test]
    async fn each_submit_returns_the_outcome_of_the_slice_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let len = 2 * SLICE_LENGTH;
        let meta = TaskMeta {
            content_length: len,
            piece_length: len,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([6; 32]), meta).expect("task");
        let data: Vec<u8> = (0..len).map(|i| (i % 199) as u8).collect();
        let hashes = slice_hashes(&data);
        let mut sink = SliceSink::new(entry.clone());
        let s = SLICE_LENGTH as usize;
        let mut buf = sink.buffer(s);
        buf.copy_from_slice(&data[s..]);
        assert!(sink
            .submit(1, buf, hashes[1], "b")
            .await
            .expect("b")
            .is_none());
        assert!(sink.busy());
        let mut buf = sink.buffer(s);
        buf.fill(0xEE);
        let before = sink
            .submit(0, buf, hashes[0], "forged")
            .await
            .expect("forged");
        assert_eq!(before, Some(("b", VerifiedPut::Stored(SliceMark::Added))));
        let last = sink.settle().await.expect("settle");
        assert!(
            matches!(last, Some(("forged", VerifiedPut::Mismatch { .. }))),
            "{last:?}"
        );
        assert!(!sink.busy() && !entry.has_slice(0) && entry.has_slice(1));
        assert_eq!(
            entry.held_slice_count(),
            1,
            "the verified slice alone is held"
        );
        let mut buf = sink.buffer(s);
        assert_eq!(
            buf.len(),
            s,
            "the spare buffer is reused at the length asked"
        );
        buf.copy_from_slice(&data[..s]);
        sink.submit(0, buf, hashes[0], "a").await.expect("a");
        let done = sink.settle().await.expect("settle");
        assert_eq!(done, Some(("a", VerifiedPut::Stored(SliceMark::PieceDone))));
    }
}
