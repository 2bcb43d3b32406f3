//! A task's content file: preallocated to the content length, written at offsets.
//!
//! Preallocation (`fallocate`) reserves the space up front, so a full disk is reported when
//! the task is created rather than halfway through, and spares the filesystem block allocation
//! on the write path (on ext4 here, writes into preallocated extents ran several times faster
//! than into a sparse file). Where `fallocate` is unsupported the file is made sparse instead.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::StoreError;

/// Shared handle to one task's content file.
#[derive(Clone, Debug)]
pub struct ContentFile(Arc<File>);

impl ContentFile {
    /// Opens (creating if needed, readable by the daemon's user only) the file and sets its
    /// length.
    pub fn open(path: &Path, len: u64) -> Result<Self, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = OpenOptions::new()
            .mode(0o600)
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io)?;
        if f.metadata().map_err(StoreError::io)?.len() != len {
            preallocate(&f, len).map_err(StoreError::io)?;
        }
        Ok(Self(Arc::new(f)))
    }

    /// The underlying file, for `sendfile` and copies.
    pub fn file(&self) -> &Arc<File> {
        &self.0
    }

    /// Writes `buf` at `offset` (blocking).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), StoreError> {
        self.0.write_all_at(buf, offset).map_err(StoreError::io)
    }

    /// Reads exactly `buf.len()` bytes at `offset` (blocking).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), StoreError> {
        self.0.read_exact_at(buf, offset).map_err(StoreError::io)
    }
}

/// Sizes `f` to `len` bytes, reserving the blocks where the filesystem can.
pub fn preallocate(f: &File, len: u64) -> std::io::Result<()> {
    if len > 0 {
        let flags = nix::fcntl::FallocateFlags::empty();
        match nix::fcntl::fallocate(f, flags, 0, len as i64) {
            Ok(()) => {}
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    f.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn preallocation_reserves_the_blocks_and_empty_content_needs_none() {
        let dir = tempfile::tempdir().expect("tmp");
        let empty = File::create(dir.path().join("empty")).expect("create");
        preallocate(&empty, 0).expect("an empty file is fine");
        assert_eq!(empty.metadata().expect("meta").len(), 0);
        let full = File::create(dir.path().join("full")).expect("create");
        preallocate(&full, 1 << 20).expect("sized");
        let meta = full.metadata().expect("meta");
        assert_eq!(meta.len(), 1 << 20);
        // Where the filesystem reserves blocks (ext4, xfs, tmpfs), they are reserved now,
        // before any byte is written: a full disk shows at once, not mid-download.
        let supported = nix::fcntl::fallocate(
            File::create(dir.path().join("probe")).expect("probe"),
            nix::fcntl::FallocateFlags::empty(),
            0,
            4096,
        )
        .is_ok();
        if supported {
            assert!(meta.blocks() * 512 >= 1 << 20, "{} blocks", meta.blocks());
        }
    }
}
