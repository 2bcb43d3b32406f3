//! Reads a task's bytes in order while its download runs, so the mirror can start answering
//! before the whole blob is here.
//!
//! Pieces arrive in any order (rarest first); the reader hands out the bytes at its cursor as
//! soon as the piece holding them is verified and committed, and otherwise waits for the
//! download's next progress. A task that was already complete is read only after the
//! conductor has re-verified it. The reader never sees unverified bytes: a piece is present
//! only once its BLAKE3 digest matched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pollen_core::TaskId;
use pollen_storage::{Store, TaskEntry};
use sha2::{Digest as _, Sha256};

use crate::download::watch::DownloadWatch;
use crate::error::DownloadError;

/// Largest chunk handed out at a time.
const READ_CHUNK: u64 = 256 << 10;

/// Why the reader stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamFail {
    /// The P2P download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// No piece at the cursor arrived within the stall timeout.
    #[error("no progress for {0:?}")]
    Stalled(Duration),
    /// Reading a present piece from the content file failed.
    #[error("reading the piece store")]
    Read(#[source] pollen_storage::StoreError),
    /// The bytes at the cursor will not come: the download ended without them, or the
    /// reading task was stopped.
    #[error("{0}")]
    Gone(String),
}

/// An in-order reader over one task, from `pos` up to `end` (exclusive; the content's end
/// when None).
pub(crate) struct TaskStream {
    store: Arc<Store>,
    id: TaskId,
    /// The running download; None reads pieces already held and nothing else.
    watch: Option<DownloadWatch>,
    pos: u64,
    end: Option<u64>,
    stall: Duration,
    verified: bool,
}

impl TaskStream {
    pub fn new(
        store: Arc<Store>,
        watch: DownloadWatch,
        pos: u64,
        end: Option<u64>,
        stall: Duration,
    ) -> Self {
        let verified = !watch.from_cache;
        Self {
            store,
            id: watch.id,
            watch: Some(watch),
            pos,
            end,
            stall,
            verified,
        }
    }

    /// A reader over pieces already held (for a Range request they cover), with no download
    /// behind it: a missing piece ends it with an error.
    pub fn held(store: Arc<Store>, id: TaskId, pos: u64, end: u64) -> Self {
        Self {
            store,
            id,
            watch: None,
            pos,
            end: Some(end),
            stall: Duration::ZERO,
            verified: true,
        }
    }

    /// Offset of the next byte to be read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The download's outcome so far: Some once it has ended.
    fn outcome(&self) -> Option<Result<(), DownloadError>> {
        match &self.watch {
            Some(w) => w.result.borrow().clone(),
            None => Some(Ok(())),
        }
    }

    /// The next chunk, `None` at the end. The bytes are also fed to `hash` on the blocking
    /// pool while they are read, so the caller's whole-content check costs the runtime nothing.
    pub async fn next(
        &mut self,
        hash: &mut Option<Box<Sha256>>,
    ) -> Result<Option<Bytes>, StreamFail> {
        loop {
            if !self.verified {
                // A cached copy is handed out only after the conductor re-verified it.
                match self.outcome() {
                    Some(Ok(())) => self.verified = true,
                    Some(Err(e)) => return Err(e.into()),
                    None => {
                        self.wait().await?;
                        continue;
                    }
                }
            }
            if let Some(entry) = self.store.get(&self.id) {
                let layout = entry.layout();
                let end = self
                    .end
                    .unwrap_or(layout.content_length())
                    .min(layout.content_length());
                if self.pos >= end {
                    return Ok(None);
                }
                if let Some(n) = layout.piece_at(self.pos) {
                    // Held from before a restart: not until the download re-read them.
                    if entry.bitfield().get(n) && entry.held_pieces_checked() {
                        let piece_end = layout.offset(n) + layout.length(n);
                        let len = (piece_end.min(end) - self.pos).min(READ_CHUNK);
                        let bytes = read(entry, self.pos, len as usize, hash).await?;
                        self.pos += len;
                        return Ok(Some(bytes));
                    }
                }
            }
            match self.outcome() {
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(())) => {
                    return Err(StreamFail::Gone(format!(
                        "the download ended without the bytes at offset {}",
                        self.pos
                    )))
                }
                None => self.wait().await?,
            }
        }
    }

    /// Waits for progress or the end of the download, at most the stall timeout.
    async fn wait(&mut self) -> Result<(), StreamFail> {
        let Some(watch) = self.watch.as_mut() else {
            return Err(StreamFail::Gone("a held piece went missing".into()));
        };
        if watch.progressed_within(self.stall).await {
            Ok(())
        } else {
            Err(StreamFail::Stalled(self.stall))
        }
    }
}

async fn read(
    entry: Arc<TaskEntry>,
    pos: u64,
    len: usize,
    hash: &mut Option<Box<Sha256>>,
) -> Result<Bytes, StreamFail> {
    let mut h = hash.take();
    let (h, r) = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        let r = entry.content().read_at(&mut buf, pos).map(|()| {
            if let Some(h) = h.as_mut() {
                h.update(&buf);
            }
            Bytes::from(buf)
        });
        (h, r)
    })
    .await
    .map_err(|_| StreamFail::Gone("the reading task was cancelled".into()))?;
    *hash = h;
    r.map_err(StreamFail::Read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::error_kind::Chain;
    use pollen_storage::StoreError;

    #[test]
    fn a_failed_read_keeps_the_store_error_and_its_io_cause() {
        let e = StreamFail::Read(StoreError::io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short read",
        )));
        let store = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<StoreError>())
            .expect("the store error as the source");
        assert_eq!(
            std::error::Error::source(store)
                .map(|s| s.to_string())
                .as_deref(),
            Some("short read"),
            "the io error under it"
        );
        // The mirror's log line shows the whole chain.
        assert!(
            Chain(&e)
                .to_string()
                .starts_with("reading the piece store: "),
            "{}",
            Chain(&e)
        );
        // A download's own failure passes through with its sources.
        let e = StreamFail::from(DownloadError::Storage(StoreError::io(
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        )));
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<StoreError>()));
    }
}
