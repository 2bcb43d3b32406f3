//! Content verification off the async runtime: the whole content against a known sha256,
//! and a held task's pieces against the BLAKE3 digests recorded when they were stored.

use std::sync::Arc;

use pollen_core::ContentDigest;
use pollen_storage::TaskEntry;
use sha2::{Digest as _, Sha256};

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

/// Re-reads every present piece and checks it against its recorded digest. False when any
/// piece differs (the content file was changed behind the store's back).
pub(crate) async fn verify_pieces(entry: Arc<TaskEntry>) -> Result<bool, DownloadError> {
    Ok(bad_pieces(entry).await?.is_empty())
}

/// The present pieces whose bytes no longer match their recorded digest.
pub(crate) async fn bad_pieces(entry: Arc<TaskEntry>) -> Result<Vec<u32>, DownloadError> {
    tokio::task::spawn_blocking(move || {
        let layout = entry.layout();
        let mut buf = vec![0u8; layout.piece_length() as usize];
        let mut bad = Vec::new();
        for (n, expected) in entry.present_digests() {
            let len = layout.length(n) as usize;
            entry.content().read_at(&mut buf[..len], layout.offset(n))?;
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
