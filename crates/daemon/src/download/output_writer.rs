//! Writes a download to the user's output path.
//!
//! By default pieces are copied from the task's content file into a hidden temporary sibling
//! of the output as soon as they are present (verified and committed), with `copy_file_range`
//! where the kernel allows (on btrfs and XFS, within one filesystem, that shares extents
//! copy-on-write instead of copying bytes) and a plain read/write loop otherwise, so the copy
//! overlaps the transfer instead of following it. The output is the user's: editing it never
//! touches the cache. Only after the download succeeded (every piece present and the whole
//! content checked when its digest is known) is the temporary file renamed onto the output
//! path: the path holds either nothing new or the whole verified file. On failure the
//! temporary file is removed.
//!
//! With `output_hardlink` (asked for explicitly) and the output on the data directory's
//! filesystem, the finished content file is hard-linked to a temporary name and renamed onto
//! the output instead: no byte is written twice, but output and cache are one file. An edit of
//! the output then changes the cache's file; its size or modification time moves, and the
//! cache re-reads it before using it again (see `content_check::keep_complete`).
//!
//! Every operation on the output path (create, link, rename, remove) runs with the local API
//! caller's rights (see `caller`): the daemon never writes where its caller could not.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pollen_core::Bitfield;
use pollen_proto::daemon::ExistingOutput;
use pollen_storage::TaskEntry;
use rand::RngExt as _;

use crate::download::caller::Caller;
use crate::error::DownloadError;

/// The temporary file next to `output` that receives pieces until the final rename.
pub(crate) struct OutputWriter {
    output: PathBuf,
    tmp: PathBuf,
    file: Option<Arc<File>>,
    exported: Bitfield,
    link: bool,
    /// Whose rights every operation on the output path runs with.
    caller: Caller,
}

/// A hidden name beside `output`, unique per call.
pub(crate) fn temp_sibling(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    output.with_file_name(format!(
        ".{name}.pollen-{:08x}.tmp",
        rand::rng().random::<u32>()
    ))
}

/// Maps an output I/O error to what the user should read.
pub(crate) fn output_error(path: &Path, e: io::Error) -> DownloadError {
    if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
        DownloadError::DiskFull(format!("writing {}", path.display()))
    } else {
        DownloadError::Output {
            path: path.display().to_string(),
            source: std::sync::Arc::new(e),
        }
    }
}

/// Copies `len` bytes at `offset` from `src` to the same offset of `dst`.
fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    let (mut off_in, mut off_out) = (offset as i64, offset as i64);
    let mut left = len as usize;
    while left > 0 {
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            left,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "content file too short",
                ))
            }
            Ok(n) => left -= n,
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP,
            ) => {
                // Not supported between these files: copy through a buffer instead.
                let done = len as usize - left;
                return copy_range_buffered(src, dst, offset + done as u64, left as u64);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_range_buffered(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], offset + done)?;
        dst.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

impl OutputWriter {
    /// Plans writing to `output`; nothing is created until the first piece is exported. With
    /// `link_from` (the data directory), the output is hard-linked when it is on the same
    /// filesystem.
    pub fn new(output: PathBuf, link_from: Option<&Path>, caller: Caller) -> Self {
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let link = link_from.is_some_and(|data| {
            let out_dir = output.parent().unwrap_or(Path::new("/"));
            dev(data).is_some() && dev(data) == dev(out_dir)
        });
        Self {
            tmp: temp_sibling(&output),
            output,
            file: None,
            exported: Bitfield::new(0),
            link,
            caller,
        }
    }

    /// Copies every piece of `entry` that is present and not yet copied (nothing in link
    /// mode: the whole file is linked at the end).
    pub async fn export_present(&mut self, entry: &Arc<TaskEntry>) -> Result<(), DownloadError> {
        if self.link {
            return Ok(());
        }
        self.copy_present(entry).await
    }

    async fn copy_present(&mut self, entry: &Arc<TaskEntry>) -> Result<(), DownloadError> {
        // Pieces held from before a restart are copied only once the download re-read them.
        if !entry.held_pieces_checked() {
            return Ok(());
        }
        let layout = entry.layout();
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let (tmp, len) = (self.tmp.clone(), layout.content_length());
                let f = self
                    .caller
                    .run(move || {
                        let f = create_new(&tmp)?;
                        pollen_storage::preallocate(&f, len)?;
                        Ok(f)
                    })
                    .await
                    .map_err(|e| output_error(&self.output, e))?;
                let f = Arc::new(f);
                self.file = Some(f.clone());
                self.exported = Bitfield::new(layout.piece_count());
                f
            }
        };
        let present = entry.bitfield();
        let todo: Vec<u32> = present
            .iter_set()
            .filter(|n| !self.exported.get(*n))
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let src = entry.content().file().clone();
        let ranges: Vec<(u64, u64)> = todo
            .iter()
            .map(|&n| (layout.offset(n), layout.length(n)))
            .collect();
        let output = self.output.clone();
        tokio::task::spawn_blocking(move || {
            ranges
                .iter()
                .try_for_each(|&(off, len)| copy_range(&src, &file, off, len))
                .map_err(|e| output_error(&output, e))
        })
        .await
        .map_err(|_| DownloadError::ShuttingDown)??;
        for n in todo {
            self.exported.set(n);
        }
        Ok(())
    }

    /// Whether the output path already holds exactly `entry`'s content (`None`: nothing is
    /// there; `Some(false)`: something else is, a directory or a link among them). Read with
    /// the caller's rights, byte for byte against the verified content file.
    pub async fn existing_matches(
        &self,
        entry: &Arc<TaskEntry>,
    ) -> Result<Option<bool>, DownloadError> {
        let src = entry.content().file().clone();
        let len = entry.layout().content_length();
        let output = self.output.clone();
        self.caller
            .run(move || {
                let meta = match std::fs::symlink_metadata(&output) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                if !meta.is_file() || meta.len() != len {
                    return Ok(Some(false));
                }
                let out = File::open(&output)?;
                Ok(Some(same_bytes(&src, &out, len)?))
            })
            .await
            .map_err(|e| output_error(&self.output, e))
    }

    /// What `existing` says to do with an output path that already holds something: `true`
    /// when it holds exactly `entry`'s content and stays as it is; an error when it differs
    /// and must be kept (`KeepSame`); `false` when the output is to be written.
    pub async fn keeps_existing(
        &self,
        entry: &Arc<TaskEntry>,
        existing: ExistingOutput,
    ) -> Result<bool, DownloadError> {
        if existing == ExistingOutput::Replace {
            return Ok(false);
        }
        match self.existing_matches(entry).await? {
            Some(true) => Ok(true),
            Some(false) if existing == ExistingOutput::KeepSame => Err(
                DownloadError::OutputDiffers(self.output.display().to_string()),
            ),
            _ => Ok(false),
        }
    }

    /// Links or copies what is left and renames the temporary file onto the output path.
    pub async fn finish(
        &mut self,
        entry: &Arc<TaskEntry>,
        content_path: &Path,
    ) -> Result<(), DownloadError> {
        if self.link {
            let (src, tmp) = (content_path.to_path_buf(), self.tmp.clone());
            // As the caller: the kernel refuses a link to a file the caller may not read and
            // write (fs.protected_hardlinks), and the output is then copied instead.
            match self
                .caller
                .run(move || std::fs::hard_link(&src, &tmp))
                .await
            {
                Ok(()) => {
                    self.rename_into_place().await?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "hard link refused; copying the output instead");
                    self.link = false;
                }
            }
        }
        self.copy_present(entry).await?;
        if !self.exported.is_full() {
            return Err(DownloadError::TaskLost(
                "the task lost pieces before they reached the output; run the download again"
                    .into(),
            ));
        }
        self.file = None;
        self.rename_into_place().await
    }

    async fn rename_into_place(&mut self) -> Result<(), DownloadError> {
        let (tmp, output) = (self.tmp.clone(), self.output.clone());
        self.caller
            .run(move || std::fs::rename(&tmp, &output))
            .await
            .map_err(|e| output_error(&self.output, e))?;
        self.tmp = PathBuf::new();
        Ok(())
    }

    /// Removes the temporary file, if any, and waits until it is gone: a failed download
    /// reports its error only after the partial output has left the caller's directory.
    pub async fn discard(mut self) {
        self.file = None;
        let tmp = std::mem::take(&mut self.tmp);
        if !tmp.as_os_str().is_empty() {
            let _ = self.caller.run(move || std::fs::remove_file(&tmp)).await;
        }
    }
}

/// Whether the first `len` bytes of `a` and `b` are equal.
fn same_bytes(a: &File, b: &File, len: u64) -> io::Result<bool> {
    const BUF: usize = 1 << 20;
    let (mut x, mut y) = (vec![0u8; BUF], vec![0u8; BUF]);
    let mut off = 0u64;
    while off < len {
        let n = BUF.min((len - off) as usize);
        a.read_exact_at(&mut x[..n], off)?;
        b.read_exact_at(&mut y[..n], off)?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}

/// Creates `path`, failing if anything (a file, a link planted by someone) is there already.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl Drop for OutputWriter {
    /// A writer dropped before `finish` leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let tmp = std::mem::take(&mut self.tmp);
            let caller = self.caller.clone();
            let remove = async move {
                let _ = caller.run(move || std::fs::remove_file(&tmp)).await;
            };
            // Dropped outside a runtime (at shutdown), the temporary file stays behind rather
            // than being removed with the daemon's rights.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(remove);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_discarded_output_is_gone_when_discard_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = OutputWriter::new(dir.path().join("out"), None, Caller::daemon());
        let tmp = w.tmp.clone();
        create_new(&tmp).expect("temporary file");
        w.discard().await;
        assert!(!tmp.exists(), "the partial output is still there");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }
}
