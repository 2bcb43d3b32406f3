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
    /// A part the configuration names could not be set up (certificates, a join token, the
    /// origin client, the proxy's CA).
    #[error("cannot set up {what}")]
    Setup {
        /// The part.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl DaemonStartError {
    /// A [`DaemonStartError::Setup`] of `what`, caused by `e`.
    pub(crate) fn setup<E>(what: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| DaemonStartError::Setup {
            what,
            source: Box::new(e),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> pollen_core::error_kind::ErrorKind {
        use pollen_core::error_kind::ErrorKind;
        match self {
            DaemonStartError::Io { source, .. } => ErrorKind::of_io(source),
            DaemonStartError::Store(e) => e.kind(),
            DaemonStartError::Config(_) | DaemonStartError::Setup { .. } => ErrorKind::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_part_that_cannot_be_set_up_keeps_its_cause() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = DaemonStartError::setup("mutual TLS")(missing);
        assert_eq!(e.to_string(), "cannot set up mutual TLS");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("no such file")
        );
        assert_eq!(e.kind(), pollen_core::error_kind::ErrorKind::Invalid);
        let store = DaemonStartError::from(StoreError::InUse("/d".into()));
        assert!(matches!(
            store.source().and_then(|s| s.downcast_ref::<StoreError>()),
            Some(StoreError::InUse(_))
        ));
        assert_eq!(store.kind(), pollen_core::error_kind::ErrorKind::Refused);
    }
}
