//! The store itself: tasks in memory for fast lookups, backed by redb and content files.
//!
//! Lock order: the store's task map, then a task's state; never the other way round. Locks
//! are held only for in-memory updates, never across I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use pollen_core::{Bitfield, PieceDigest, PieceLayout, SliceLayout, TaskId};
use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use crate::committer::{self, PieceCommit};
use crate::content::ContentFile;
use crate::error::StoreError;
use crate::meta::{ContentStamp, TaskMeta};
use crate::slice_book::SliceBook;
use crate::tables::{PIECES, TASKS};

/// The daemon's piece store.
pub struct Store {
    dir: PathBuf,
    db: Arc<Database>,
    committer: Mutex<Option<mpsc::Sender<PieceCommit>>>,
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    tasks: RwLock<HashMap<TaskId, Arc<TaskEntry>>>,
}

/// One task held by the store.
pub struct TaskEntry {
    /// Task id.
    pub id: TaskId,
    content: ContentFile,
    layout: PieceLayout,
    state: RwLock<TaskState>,
    pub(crate) slice_book: Mutex<SliceBook>,
    /// Signalled when a slice writer ends its turn (see `crate::slice_write`).
    pub(crate) slice_written: Condvar,
    /// False for an unfinished task loaded from disk until its held pieces are re-read (see
    /// [`TaskEntry::held_pieces_checked`]).
    held_checked: AtomicBool,
}

struct TaskState {
    meta: TaskMeta,
    present: Bitfield,
    digests: Vec<Option<PieceDigest>>,
}

/// A consistent copy of a task's state.
#[derive(Clone, Debug)]
pub struct TaskSnapshot {
    /// Metadata.
    pub meta: TaskMeta,
    /// Present pieces.
    pub present: Bitfield,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TaskEntry {
    /// The task's content file.
    pub fn content(&self) -> &ContentFile {
        &self.content
    }

    /// The task's piece layout.
    pub fn layout(&self) -> PieceLayout {
        self.layout
    }

    /// Whether the task was fetched with credentials (see `TaskMeta::private`).
    pub fn is_private(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .meta
            .private
    }

    /// A copy of the metadata and present pieces.
    pub fn snapshot(&self) -> TaskSnapshot {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        TaskSnapshot {
            meta: s.meta.clone(),
            present: s.present.clone(),
        }
    }

    /// The present pieces.
    pub fn bitfield(&self) -> Bitfield {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .present
            .clone()
    }

    /// The digest of piece `n` if it is present.
    pub fn piece_digest(&self, n: u32) -> Option<PieceDigest> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        if s.present.get(n) {
            s.digests.get(n as usize).copied().flatten()
        } else {
            None
        }
    }

    /// Digests of all present pieces, by number.
    pub fn present_digests(&self) -> Vec<(u32, PieceDigest)> {
        let s = self.state.read().unwrap_or_else(|e| e.into_inner());
        s.present
            .iter_set()
            .filter_map(|n| s.digests[n as usize].map(|d| (n, d)))
            .collect()
    }

    /// True when the task is complete and its content file still has the size and
    /// modification time recorded when it completed. False for an incomplete task, and for
    /// one completed before stamps were recorded (a caller re-reads it once and stamps it).
    pub fn content_unchanged(&self) -> bool {
        let recorded = {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if !s.meta.complete {
                return false;
            }
            s.meta.content_stamp
        };
        let Some(recorded) = recorded else {
            return false;
        };
        ContentStamp::of(self.content.file()).is_ok_and(|now| now == recorded)
    }

    /// Whether the pieces this task holds may be read as verified. True for a task created by
    /// this process (each piece was verified as it was stored) and for a complete one (its
    /// stamp guards it: [`Self::content_unchanged`]). False for an unfinished task loaded from
    /// disk until [`Self::mark_held_pieces_checked`]: a crash or power cut may have left a
    /// committed piece's bytes other than what was verified, so they are re-read first.
    pub fn held_pieces_checked(&self) -> bool {
        self.held_checked.load(Ordering::Acquire) || self.is_complete()
    }

    /// Whether the held bytes can be handed out as they are on disk, with no download behind
    /// them: a complete task whose file is as it was stored, or an unfinished one whose
    /// pieces this process verified or re-read.
    pub fn held_bytes_trusted(&self) -> bool {
        if self.is_complete() {
            self.content_unchanged()
        } else {
            self.held_checked.load(Ordering::Acquire)
        }
    }

    /// Records that the held pieces were re-read and the bad ones dropped.
    pub fn mark_held_pieces_checked(&self) {
        self.held_checked.store(true, Ordering::Release);
    }

    /// True when every piece is present and the content passed its digest check.
    pub fn is_complete(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .meta
            .complete
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and loads every task. The content
    /// directory and the metadata file are the daemon user's alone (0700, 0600): cached
    /// content may be private, and a local user reads it only through the daemon.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let content = dir.join("content");
        std::fs::create_dir_all(&content).map_err(StoreError::io)?;
        std::fs::set_permissions(&content, std::fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io)?;
        let meta = dir.join("metadata.redb");
        // redb's file format v3 is the one later redb releases read (they cannot open v2):
        // new metadata files are made in it, and an older cache is converted once on open.
        let mut db = match redb::Builder::new()
            .create_with_file_format_v3(true)
            .create(&meta)
        {
            Ok(db) => {
                std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o600))
                    .map_err(StoreError::io)?;
                db
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::InUse(dir.display().to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        if db.upgrade()? {
            tracing::info!(file = %meta.display(), "cache metadata converted to redb's file format v3");
        }
        let db = Arc::new(db);
        {
            let txn = db.begin_write()?;
            txn.open_table(TASKS)?;
            txn.open_table(PIECES)?;
            txn.commit()?;
        }
        let (tx, thread) = committer::spawn(db.clone())?;
        let store = Self {
            dir: dir.to_path_buf(),
            committer: Mutex::new(Some(tx)),
            committer_thread: Mutex::new(Some(thread)),
            db,
            tasks: RwLock::new(HashMap::new()),
        };
        store.load()?;
        Ok(Arc::new(store))
    }

    /// Path of a task's content file (for copying it out).
    pub fn content_path(&self, id: &TaskId) -> PathBuf {
        self.dir.join("content").join(id.hex())
    }

    fn load(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read()?;
        let tasks = txn.open_table(TASKS)?;
        let pieces = txn.open_table(PIECES)?;
        let mut map = self.tasks.write().unwrap_or_else(|e| e.into_inner());
        for row in tasks.iter()? {
            let (k, v) = row?;
            let id = TaskId(k.value());
            let meta: TaskMeta =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    task: id.hex(),
                    reason: e.to_string(),
                })?;
            let Some(layout) =
                PieceLayout::with_piece_length(meta.content_length, meta.piece_length)
            else {
                tracing::warn!(task = %id, "skipping a task with an unusable piece layout");
                continue;
            };
            let path = self.content_path(&id);
            if !path.exists() {
                tracing::warn!(task = %id, "content file missing; the task will be fetched again");
                continue;
            }
            let content = ContentFile::open(&path, meta.content_length)?;
            let mut present = Bitfield::new(layout.piece_count());
            let mut digests = vec![None; layout.piece_count() as usize];
            for row in pieces.range((id.0, 0)..=(id.0, u32::MAX))? {
                let (k, v) = row?;
                let (_, n) = k.value();
                if n < layout.piece_count() {
                    present.set(n);
                    digests[n as usize] = Some(PieceDigest(v.value()));
                }
            }
            let slice_book = Mutex::new(SliceBook::new(SliceLayout::new(layout), &present));
            map.insert(
                id,
                Arc::new(TaskEntry {
                    id,
                    content,
                    layout,
                    state: RwLock::new(TaskState {
                        meta,
                        present,
                        digests,
                    }),
                    slice_book,
                    slice_written: Condvar::new(),
                    held_checked: AtomicBool::new(false),
                }),
            );
        }
        tracing::info!(tasks = map.len(), "piece store loaded");
        Ok(())
    }

    /// The task, if the store has it.
    pub fn get(&self, id: &TaskId) -> Option<Arc<TaskEntry>> {
        self.tasks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every task in the store.
    pub fn tasks(&self) -> Vec<Arc<TaskEntry>> {
        self.tasks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn write_meta(&self, id: &TaskId, meta: &TaskMeta) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt {
            task: id.hex(),
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write()?;
        txn.open_table(TASKS)?.insert(id.0, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Returns the task, creating it (metadata and sparse content file) if absent. An existing
    /// task whose content length differs from `meta` (the origin changed) is replaced.
    pub fn ensure_task(
        &self,
        id: TaskId,
        mut meta: TaskMeta,
    ) -> Result<Arc<TaskEntry>, StoreError> {
        if let Some(existing) = self.get(&id) {
            if existing.layout.content_length() == meta.content_length {
                return Ok(existing);
            }
            tracing::warn!(task = %id, "content length changed at the origin; discarding the old copy");
            self.remove_task(&id)?;
        }
        let layout = PieceLayout::with_piece_length(meta.content_length, meta.piece_length)
            .ok_or_else(|| StoreError::Corrupt {
                task: id.hex(),
                reason: "unusable piece length".into(),
            })?;
        meta.complete = false;
        meta.last_access = now_unix();
        let content = ContentFile::open(&self.content_path(&id), meta.content_length)?;
        self.write_meta(&id, &meta)?;
        let entry = Arc::new(TaskEntry {
            id,
            content,
            layout,
            state: RwLock::new(TaskState {
                meta,
                present: Bitfield::new(layout.piece_count()),
                digests: vec![None; layout.piece_count() as usize],
            }),
            slice_book: Mutex::new(SliceBook::new(
                SliceLayout::new(layout),
                &Bitfield::new(layout.piece_count()),
            )),
            slice_written: Condvar::new(),
            held_checked: AtomicBool::new(true),
        });
        let mut map = self.tasks.write().unwrap_or_else(|e| e.into_inner());
        Ok(map.entry(id).or_insert(entry).clone())
    }

    /// Durably records piece `number` (whose bytes are already written) and then marks it
    /// present. Returns once the metadata commit is on disk.
    pub async fn commit_piece(
        &self,
        entry: &TaskEntry,
        number: u32,
        digest: PieceDigest,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(PieceCommit {
                task: entry.id,
                number,
                digest,
                done,
            })
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)??;
        // Slices first: a piece is never present while a slice of it is not servable.
        entry.hold_piece_slices(number);
        let mut s = entry.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = s.digests.get_mut(number as usize) {
            *slot = Some(digest);
            s.present.set(number);
        }
        Ok(())
    }

    /// Forgets pieces whose bytes turned out bad (e.g. lost in a power cut after their
    /// metadata was committed): absent at once for readers, then removed durably.
    pub fn drop_pieces(&self, entry: &TaskEntry, numbers: &[u32]) -> Result<(), StoreError> {
        {
            let mut s = entry.state.write().unwrap_or_else(|e| e.into_inner());
            for &n in numbers {
                s.present.clear(n);
                if let Some(slot) = s.digests.get_mut(n as usize) {
                    *slot = None;
                }
            }
            s.meta.complete = false;
        }
        entry.forget_slices(numbers);
        let txn = self.db.begin_write()?;
        {
            let mut pieces = txn.open_table(PIECES)?;
            for &n in numbers {
                pieces.remove((entry.id.0, n))?;
            }
        }
        txn.commit()?;
        let meta = entry
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .meta
            .clone();
        self.write_meta(&entry.id, &meta)
    }

    /// Applies `f` to the task's metadata and persists it.
    pub fn update_meta(
        &self,
        entry: &TaskEntry,
        f: impl FnOnce(&mut TaskMeta),
    ) -> Result<(), StoreError> {
        let meta = {
            let mut s = entry.state.write().unwrap_or_else(|e| e.into_inner());
            f(&mut s.meta);
            s.meta.clone()
        };
        self.write_meta(&entry.id, &meta)
    }

    /// Marks the task complete (all pieces present, content digest checked when known) and
    /// records its content file's stamp (see [`TaskEntry::content_unchanged`]). Also called
    /// again after a complete task whose stamp changed was re-read and found intact.
    pub fn mark_complete(&self, entry: &TaskEntry) -> Result<(), StoreError> {
        let stamp = ContentStamp::of(entry.content.file()).map_err(StoreError::io)?;
        self.update_meta(entry, |m| {
            m.complete = true;
            m.last_access = now_unix();
            m.content_stamp = Some(stamp);
        })
    }

    /// Records that the task was just used.
    pub fn touch(&self, entry: &TaskEntry) -> Result<(), StoreError> {
        self.update_meta(entry, |m| m.last_access = now_unix())
    }

    /// Removes a task's metadata and content file.
    pub fn remove_task(&self, id: &TaskId) -> Result<(), StoreError> {
        self.tasks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let txn = self.db.begin_write()?;
        {
            txn.open_table(TASKS)?.remove(id.0)?;
            let mut pieces = txn.open_table(PIECES)?;
            let keys: Vec<u32> = pieces
                .range((id.0, 0)..=(id.0, u32::MAX))?
                .filter_map(|r| r.ok().map(|(k, _)| k.value().1))
                .collect();
            for n in keys {
                pieces.remove((id.0, n))?;
            }
        }
        txn.commit()?;
        match std::fs::remove_file(self.content_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(e)),
        }
    }
}

impl Drop for Store {
    /// Stops the committer thread so the database is closed when the store is gone.
    fn drop(&mut self) {
        self.committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = self
            .committer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
