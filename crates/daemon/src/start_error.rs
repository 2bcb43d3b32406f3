//! Why a daemon could not start: below the parts that set themselves up (the local API
//! socket, the store) and the daemon that starts them.

use pollen_storage::StoreError;

/// Why a daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonStartError {
    /// A directory or socket could not be set up.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The piece store could not be opened.
    #[error("cannot open the piece store")]
    Store(#[from] StoreError),
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}
