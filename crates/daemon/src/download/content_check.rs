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

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_core::{PieceLayout, TaskId};
    use pollen_storage::{PieceWriter, TaskMeta};
    use std::io::Write as _;

    /// A store holding one complete task of three pieces (9 MiB), and its bytes.
    async fn complete_task() -> (tempfile::TempDir, Arc<Store>, Arc<TaskEntry>, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        let layout = PieceLayout::for_content(data.len() as u64);
        let entry = store
            .ensure_task(
                TaskId([7; 32]),
                TaskMeta {
                    url: "http://origin/x".into(),
                    content_length: data.len() as u64,
                    piece_length: layout.piece_length(),
                    ..Default::default()
                },
            )
            .expect("task");
        assert_eq!(layout.piece_count(), 3);
        for n in 0..layout.piece_count() {
            let range = layout.offset(n) as usize..(layout.offset(n) + layout.length(n)) as usize;
            let mut w = PieceWriter::new(entry.clone(), n);
            w.write(&data[range]).await.expect("write");
            let (digest, _) = w.finish().await.expect("finish");
            store.commit_piece(&entry, n, digest).await.expect("commit");
        }
        store.mark_complete(&entry).expect("complete");
        (dir, store, entry, data)
    }

    fn sha256(data: &[u8]) -> ContentDigest {
        ContentDigest(Sha256::digest(data).into())
    }

    #[tokio::test]
    async fn the_whole_content_must_match_its_sha256() {
        let (_dir, _store, entry, data) = complete_task().await;
        verify(entry.clone(), sha256(&data)).await.expect("intact");
        let err = verify(entry, sha256(b"something else"))
            .await
            .expect_err("another digest");
        assert!(
            matches!(&err, DownloadError::DigestMismatch { actual, .. } if *actual == sha256(&data).to_string()),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_changed_byte_and_a_cut_file_name_the_pieces_they_broke() {
        let (_dir, store, entry, _) = complete_task().await;
        assert!(bad_pieces(entry.clone()).await.expect("read").is_empty());
        let path = store.content_path(&entry.id);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[(5 << 20) + 17] ^= 0xff; // inside piece 1 (4 MiB pieces)
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(bad_pieces(entry.clone()).await.expect("read"), vec![1]);
        // Cut inside piece 0: every piece after it is gone, piece 0 is short.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(100)
            .expect("truncate");
        assert_eq!(bad_pieces(entry).await.expect("read"), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn an_untouched_copy_is_kept_without_reading_it() {
        let (_dir, store, entry, _) = complete_task().await;
        assert!(entry.content_unchanged());
        assert!(keep_complete(&store, entry.clone()).await.expect("check"));
        assert!(store.get(&entry.id).is_some());
    }

    #[tokio::test]
    async fn a_copy_touched_but_intact_is_kept_and_stamped_again() {
        let (_dir, store, entry, _) = complete_task().await;
        let path = store.content_path(&entry.id);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open")
            .set_modified(later)
            .expect("set mtime");
        assert!(!entry.content_unchanged(), "the stamp moved");
        assert!(keep_complete(&store, entry.clone()).await.expect("check"));
        assert!(entry.content_unchanged(), "stamped again");
        assert!(store.get(&entry.id).is_some());
    }

    #[tokio::test]
    async fn a_copy_grown_or_edited_is_dropped_from_the_store() {
        // Appended to: every piece still matches, the length does not.
        let (_dir, store, entry, _) = complete_task().await;
        let path = store.content_path(&entry.id);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"edit\n").expect("append");
        drop(f);
        assert!(!keep_complete(&store, entry.clone()).await.expect("check"));
        assert!(
            store.get(&entry.id).is_none(),
            "dropped, to be fetched again"
        );

        // Edited in place: the length is right, a piece is not.
        let (_dir, store, entry, _) = complete_task().await;
        let path = store.content_path(&entry.id);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(!keep_complete(&store, entry.clone()).await.expect("check"));
        assert!(store.get(&entry.id).is_none());
    }

    #[tokio::test]
    async fn an_unfinished_task_is_never_kept_as_complete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let entry = store
            .ensure_task(
                TaskId([8; 32]),
                TaskMeta {
                    url: "http://origin/y".into(),
                    content_length: 10,
                    piece_length: 4 << 20,
                    ..Default::default()
                },
            )
            .expect("task");
        assert!(!keep_complete(&store, entry.clone()).await.expect("check"));
        assert!(store.get(&entry.id).is_some(), "left alone, not dropped");
    }
}
