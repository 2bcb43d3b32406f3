//! Whole-content verification against a known sha256, off the async runtime.

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
