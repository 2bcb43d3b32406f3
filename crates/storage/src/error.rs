//! Errors of the piece store.

/// What went wrong in the store; `DiskFull` is singled out so callers can say so plainly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk holding the data directory is full.
    #[error("no space left on the device holding the data directory")]
    DiskFull,
    /// Reading or writing a content file failed.
    #[error("content file I/O failed: {0}")]
    Io(#[source] std::io::Error),
    /// The metadata database failed.
    #[error("metadata store failed: {0}")]
    Db(String),
    /// A metadata record could not be decoded (written by an incompatible version?).
    #[error("corrupt metadata record for task {task}: {reason}")]
    Corrupt {
        /// Task id.
        task: String,
        /// Why.
        reason: String,
    },
    /// Another process (another daemon) has the data directory open.
    #[error("the data directory {0} is already in use by another pollen daemon")]
    InUse(String),
    /// The task is not in the store.
    #[error("task {0} is not in the store")]
    UnknownTask(String),
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
    /// Bytes offered as a slice are not that slice's length (or there is no such slice).
    #[error("slice {slice} cannot be {given} bytes long")]
    SliceLength {
        /// The slice, numbered across the task.
        slice: u32,
        /// Bytes given.
        given: u64,
    },
    /// The origin's bytes differ from a slice hash verified before: the content changed.
    #[error("slice {slice} read from the origin differs from the copy verified against the published digest")]
    OriginChanged {
        /// The slice, numbered across the task.
        slice: u32,
    },
    /// A piece writer was given more or fewer bytes than its piece holds.
    #[error("a piece of {announced} bytes was given {written}")]
    PieceLength {
        /// Bytes the piece holds.
        announced: u64,
        /// Bytes written.
        written: u64,
    },
}

impl StoreError {
    /// Maps an I/O error, recognising a full disk.
    pub fn io(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
            StoreError::DiskFull
        } else {
            StoreError::Io(e)
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
