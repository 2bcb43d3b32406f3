//! Content verification off the async runtime: the whole content against a known sha256,
//! a held task's pieces against the BLAKE3 digests recorded when they were stored, and a
//! complete task's file against the size and modification time recorded when it completed.
//!
//! Why the last: a complete task's content file is what every later `pollen get` of the URL
//! copies and what peers are served. Nothing of Pollen's writes it once complete, so when its
//! stamp moved someone else did (a hard-linked output edited or truncated, the data directory
//! tampered with). Such a copy is re-read whole; if any piece or the length is wrong it is
//! dropped and fetched again, so one broken file never breaks a URL for good.

use std::io::ErrorKind;

use std::sync::Arc;

use pollen_core::ContentDigest;
use pollen_storage::{Store, StoreError, TaskEntry};
use sha2::{Digest as _, Sha256};
use tracing::warn;

use crate::error::DownloadError;

/// Hashes the task's content file and compares it with `expected`.
pub(crate) async fn verify(
    entry: Arc<TaskEntry>,
    expected: ContentDigest,
) -> Result<(), DownloadError> {
    let actual = tokio::task::spawn_blocking(move || {
        let len = entry.layout().content_length();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            entry.content().read_at(&mut buf[..n], off)?;
            hasher.update(&buf[..n]);
            off += n as u64;
        }
        Ok::<_, pollen_storage::StoreError>(ContentDigest(hasher.finalize().into()))
    })
    .await
    .map_err(|_| DownloadError::ShuttingDown)??;
    if actual == expected {
        Ok(())
    } else {
        Err(DownloadError::DigestMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// The present pieces whose bytes no longer match their recorded digest.
pub(crate) async fn bad_pieces(entry: Arc<TaskEntry>) -> Result<Vec<u32>, DownloadError> {
    tokio::task::spawn_blocking(move || {
        let layout = entry.layout();
        let mut buf = vec![0u8; layout.piece_length() as usize];
        let mut bad = Vec::new();
        for (n, expected) in entry.present_digests() {
            let len = layout.length(n) as usize;
            match entry.content().read_at(&mut buf[..len], layout.offset(n)) {
                Ok(()) => {}
                // The file was cut short behind the store's back: the piece is gone.
                Err(StoreError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                    tracing::warn!(task = %entry.id, piece = n, "held piece is past the end of its truncated content file");
                    bad.push(n);
                    continue;
                }
                Err(e) => return Err(e),
            }
            if pollen_core::PieceDigest::of(&buf[..len]) != expected {
                tracing::warn!(task = %entry.id, piece = n, "held piece no longer matches its digest");
                bad.push(n);
            }
        }
        Ok::<_, pollen_storage::StoreError>(bad)
    })
    .await
    .map_err(|_| DownloadError::ShuttingDown)?
    .map_err(DownloadError::from)
}

/// Whether a complete task can be handed out or served as it is on disk. When its file's
/// stamp is unchanged, yes at once; otherwise the file is re-read: intact (every piece, and
/// the length), it is stamped again and kept; changed, it is dropped from the store (with a
/// log line saying why) and the caller fetches it again. False for a task not complete.
pub(crate) async fn keep_complete(
    store: &Arc<Store>,
    entry: Arc<TaskEntry>,
) -> Result<bool, DownloadError> {
    if !entry.is_complete() {
        return Ok(false);
    }
    if entry.content_unchanged() {
        return Ok(true);
    }
    let expected_len = entry.layout().content_length();
    let actual_len = entry.content().file().metadata().map(|m| m.len()).ok();
    let bad = bad_pieces(entry.clone()).await?;
    let url = entry.snapshot().meta.url;
    if bad.is_empty() && actual_len == Some(expected_len) {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.mark_complete(&entry))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        return Ok(true);
    }
    warn!(
        task = %entry.id,
        %url,
        bad_pieces = bad.len(),
        length = ?actual_len,
        expected_length = expected_len,
        "the cached copy was changed on disk since it was stored; dropped, it will be fetched again"
    );
    let (store, id) = (store.clone(), entry.id);
    tokio::task::spawn_blocking(move || store.remove_task(&id))
        .await
        .map_err(|_| DownloadError::ShuttingDown)??;
    Ok(false)
}
