//! Errors of the piece store.

use pollen_core::error_kind::ErrorKind;

/// What went wrong in the store; `DiskFull` is singled out so callers can say so plainly.
///
/// Cloneable (the causes are shared) so one failed commit answers every piece in it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk holding the data directory is full.
    #[error("no space left on the device holding the data directory")]
    DiskFull,
    /// Reading or writing a content file failed.
    #[error("content file I/O failed")]
    Io(#[source] std::sync::Arc<std::io::Error>),
    /// The metadata database failed.
    #[error("metadata store failed")]
    Db(#[source] std::sync::Arc<redb::Error>),
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
        if ErrorKind::of_io(&e) == ErrorKind::Full {
            StoreError::DiskFull
        } else {
            StoreError::Io(std::sync::Arc::new(e))
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::DiskFull => ErrorKind::Full,
            StoreError::Io(e) => ErrorKind::of_io(e),
            StoreError::Db(e) => match e.as_ref() {
                redb::Error::Io(io) => ErrorKind::of_io(io),
                redb::Error::Corrupted(_) => ErrorKind::Corrupt,
                redb::Error::DatabaseAlreadyOpen => ErrorKind::Refused,
                _ => ErrorKind::Internal,
            },
            StoreError::Corrupt { .. } | StoreError::OriginChanged { .. } => ErrorKind::Corrupt,
            StoreError::InUse(_) => ErrorKind::Refused,
            StoreError::UnknownTask(_) => ErrorKind::NotFound,
            StoreError::Closed => ErrorKind::Unavailable,
            StoreError::SliceLength { .. } | StoreError::PieceLength { .. } => ErrorKind::Invalid,
        }
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                let e = redb::Error::from(e);
                // A full disk under the database is a full disk, whoever hit it.
                if let redb::Error::Io(io) = &e {
                    if ErrorKind::of_io(io) == ErrorKind::Full {
                        return StoreError::DiskFull;
                    }
                }
                StoreError::Db(std::sync::Arc::new(e))
            }
        }
    )*};
}
db_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::UpgradeError
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_and_database_errors_keep_their_cause_and_kind() {
        let e = StoreError::io(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("gone"));

        let full = StoreError::io(std::io::Error::from_raw_os_error(28));
        assert!(matches!(full, StoreError::DiskFull), "{full:?}");
        assert_eq!(full.kind(), ErrorKind::Full);

        let db: StoreError = redb::StorageError::Io(std::io::Error::other("bad sector")).into();
        assert!(matches!(db, StoreError::Db(_)), "{db:?}");
        assert_eq!(db.kind(), ErrorKind::Internal);
        let chain = pollen_core::error_kind::Chain(&db).to_string();
        assert!(
            chain.starts_with("metadata store failed: ") && chain.contains("bad sector"),
            "{chain}"
        );
        let db_full: StoreError =
            redb::StorageError::Io(std::io::Error::from_raw_os_error(28)).into();
        assert!(matches!(db_full, StoreError::DiskFull), "{db_full:?}");
        assert_eq!(
            StoreError::UnknownTask("t".into()).kind(),
            ErrorKind::NotFound
        );
        // The database's own kinds come through: its I/O errors, corruption, a second opener.
        let gone: StoreError = redb::StorageError::Io(std::io::ErrorKind::NotFound.into()).into();
        assert_eq!(gone.kind(), ErrorKind::NotFound);
        let corrupted: StoreError = redb::StorageError::Corrupted("bad page".into()).into();
        assert_eq!(corrupted.kind(), ErrorKind::Corrupt);
        let open: StoreError = redb::DatabaseError::DatabaseAlreadyOpen.into();
        assert_eq!(open.kind(), ErrorKind::Refused);
    }
}
