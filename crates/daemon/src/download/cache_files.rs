//! `pollen cache import` and `export`: a local file enters the cache as a task, and a task held
//! here leaves it as a file, both with the caller's own rights.
//!
//! Why an import is content-addressed: a local user could otherwise put any bytes in the cache
//! under any URL, and every later `pollen get` of that URL on the host (another user's among
//! them) would be handed them. The task's id is the file's sha256, so the import serves exactly
//! the downloads that name that digest (`--digest`, an OCI blob, a hub LFS file) and nothing
//! else. Across the fleet the usual trust rules hold: a seed's announce of the task is trusted
//! for its pieces' digests, an ordinary peer's counts only once a trusted host has published
//! them.
//!
//! The file is read twice (its sha256 first, then its pieces into the content file) and the
//! stored copy is hashed once more before it is marked complete, so a file that changes while
//! it is imported leaves nothing behind.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pollen_core::{ContentDigest, PieceLayout, TaskId, TaskKey};
use pollen_storage::{PieceWriter, TaskEntry};
use sha2::{Digest as _, Sha256};
use tracing::info;

use pollen_proto::daemon::ExistingOutput;

use super::caller::Caller;
use super::conductor::Conductor;
use super::content_check;
use super::origin_fetcher::task_meta;
use super::output_writer::OutputWriter;
use crate::error::DownloadError;

/// What an import did.
#[derive(Debug)]
pub(crate) struct Imported {
    pub id: TaskId,
    pub content_length: u64,
    /// The cache already held the content complete.
    pub already_held: bool,
}

fn input_error(path: &Path, e: io::Error) -> DownloadError {
    DownloadError::Input {
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

/// The sha256 and length of `file`, read from its start.
fn hash_file(file: &File) -> io::Result<(ContentDigest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = file.read_at(&mut buf, off)?;
        if n == 0 {
            return Ok((ContentDigest(hasher.finalize().into()), off));
        }
        hasher.update(&buf[..n]);
        off += n as u64;
    }
}

impl Conductor {
    /// Imports the file at `path` (absolute), opened with `caller`'s rights, as the
    /// content-addressed task of its sha256; `url` is recorded as where the content comes
    /// from, `expected` is the digest it must have.
    pub(crate) async fn import_file(
        &self,
        caller: &Caller,
        path: PathBuf,
        url: String,
        expected: Option<ContentDigest>,
    ) -> Result<Imported, DownloadError> {
        let open = path.clone();
        let file = caller
            .run(move || {
                let f = File::open(&open)?;
                if !f.metadata()?.is_file() {
                    return Err(io::Error::other("not a regular file"));
                }
                Ok(f)
            })
            .await
            .map_err(|e| input_error(&path, e))?;
        let file = Arc::new(file);
        let f = file.clone();
        let (digest, len) = tokio::task::spawn_blocking(move || hash_file(&f))
            .await
            .map_err(|_| DownloadError::ShuttingDown)?
            .map_err(|e| input_error(&path, e))?;
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(DownloadError::DigestMismatch {
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        let mut key = TaskKey::of_url(url);
        key.digest = Some(digest);
        let id = key
            .task_id()
            .map_err(|e| DownloadError::InvalidRequest(e.to_string()))?;
        let _busy = self.reserve(id).ok_or_else(|| {
            DownloadError::InvalidRequest(format!(
                "task {id} is being downloaded or imported on this host; import it when that ends"
            ))
        })?;
        if let Some(entry) = self.store.get(&id).filter(|e| e.is_complete()) {
            if content_check::keep_complete(&self.store, entry).await? {
                return Ok(Imported {
                    id,
                    content_length: len,
                    already_held: true,
                });
            }
        }
        let layout = PieceLayout::for_content(len);
        let store = self.store.clone();
        let meta = task_meta(&key, len, layout.piece_length());
        let entry = tokio::task::spawn_blocking(move || store.ensure_task(id, meta))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        let stored = self.store_pieces(&entry, &file, &path).await;
        let stored = match stored {
            Ok(()) => content_check::verify(entry.clone(), digest)
                .await
                .map_err(|_| {
                    DownloadError::InvalidRequest(format!(
                        "{} changed while it was imported; nothing was kept",
                        path.display()
                    ))
                }),
            Err(e) => Err(e),
        };
        let store = self.store.clone();
        if let Err(e) = stored {
            let _ = tokio::task::spawn_blocking(move || store.remove_task(&id)).await;
            return Err(e);
        }
        let e = entry.clone();
        tokio::task::spawn_blocking(move || store.mark_complete(&e))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        info!(task = %id, file = %path.display(), bytes = len, "file imported into the cache");
        self.announce_complete(&entry).await;
        Ok(Imported {
            id,
            content_length: len,
            already_held: false,
        })
    }

    /// Copies every piece `entry` lacks from `file` into its content file and commits it.
    async fn store_pieces(
        &self,
        entry: &Arc<TaskEntry>,
        file: &Arc<File>,
        path: &Path,
    ) -> Result<(), DownloadError> {
        let layout = entry.layout();
        let present = entry.bitfield();
        for n in (0..layout.piece_count()).filter(|n| !present.get(*n)) {
            let (f, off, len) = (file.clone(), layout.offset(n), layout.length(n) as usize);
            let buf = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                f.read_exact_at(&mut buf, off).map(|()| buf)
            })
            .await
            .map_err(|_| DownloadError::ShuttingDown)?
            .map_err(|e| input_error(path, e))?;
            let mut w = PieceWriter::new(entry.clone(), n);
            w.write(&buf).await?;
            let (digest, hashes) = w.finish().await?;
            entry.set_slice_hashes(n, hashes.into());
            self.store.commit_piece(entry, n, digest).await?;
        }
        Ok(())
    }

    /// Writes the complete task `id` held here to `output` (absolute) with `caller`'s rights;
    /// the content length, and whether an existing output already held it and was kept.
    /// A private task is refused: who may read it is checked at its origin by a download.
    pub(crate) async fn export_task(
        &self,
        caller: Caller,
        id: TaskId,
        output: PathBuf,
        existing: ExistingOutput,
    ) -> Result<(u64, bool), DownloadError> {
        let held =
            || DownloadError::NotHeld(format!("task {id} is not held complete on this host"));
        let entry = self
            .store
            .get(&id)
            .filter(|e| e.is_complete())
            .ok_or_else(held)?;
        if entry.is_private() {
            return Err(DownloadError::Refused(format!(
                "task {id} was fetched with credentials; download it with `pollen get` and yours, which its origin checks first"
            )));
        }
        if !content_check::keep_complete(&self.store, entry.clone()).await? {
            return Err(DownloadError::NotHeld(format!(
                "the cached copy of task {id} changed on disk and was dropped; download it again"
            )));
        }
        let len = entry.layout().content_length();
        let link_from = self
            .cfg
            .output_hardlink
            .then_some(self.cfg.data_dir.as_path());
        let mut w = OutputWriter::new(output, link_from, caller);
        let outcome: Result<bool, DownloadError> = async {
            if w.keeps_existing(&entry, existing).await? {
                return Ok(true);
            }
            w.finish(&entry, &self.store.content_path(&id)).await?;
            Ok(false)
        }
        .await;
        w.discard().await;
        let kept = outcome?;
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.touch(&entry)).await;
        Ok((len, kept))
    }
}
