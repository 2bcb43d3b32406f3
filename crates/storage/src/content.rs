//! A task's content file: sparse, preallocated to the content length, written at offsets.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::StoreError;

/// Shared handle to one task's content file.
#[derive(Clone, Debug)]
pub struct ContentFile(Arc<File>);

impl ContentFile {
    /// Opens (creating if needed) the file and sets its length.
    pub fn open(path: &Path, len: u64) -> Result<Self, StoreError> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io)?;
        if f.metadata().map_err(StoreError::io)?.len() != len {
            f.set_len(len).map_err(StoreError::io)?;
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
