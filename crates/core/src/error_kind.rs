//! What kind of failure an error is, in words every crate shares, and one way to show an
//! error with its causes.
//!
//! Library errors keep their cause (`source()`), say only their own part in `Display`, and
//! answer [`ErrorKind`] through a `kind()` method, so a caller can tell a timeout from a
//! missing file from a full disk without reading text. Where an error is shown to a person
//! or written to a log, [`Chain`] prints it with every cause.

use std::fmt;

/// The kind of a failure: what a caller may do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something did not answer in time; trying again may work.
    Timeout,
    /// What was asked for does not exist.
    NotFound,
    /// Refused by a rule or by the other side (forbidden, unauthorised, guarded).
    Refused,
    /// Data is not what it should be (a digest mismatch, a malformed record or frame).
    Corrupt,
    /// A disk or a quota is full.
    Full,
    /// The other side or a link is down or broke; trying again may work.
    Unavailable,
    /// The request or configuration itself is wrong; trying again will not help.
    Invalid,
    /// A fault of this program or its machine (an I/O error, a task that died).
    Internal,
}

impl ErrorKind {
    /// The kind's name, as logs and metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Refused => "refused",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Full => "full",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of an I/O error.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        if e.raw_os_error() == Some(28) {
            return ErrorKind::Full;
        }
        match e.kind() {
            K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
            K::NotFound => ErrorKind::NotFound,
            K::PermissionDenied => ErrorKind::Refused,
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge => ErrorKind::Full,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown => ErrorKind::Unavailable,
            K::InvalidInput | K::InvalidData => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shows an error and each of its causes, `: `-separated, on one line; a cause whose text
/// its error already shows is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !shown.ends_with(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_every_cause_once() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            Chain(&e).to_string(),
            "cannot read the config: no such file"
        );
        let plain = std::io::Error::other("disk on fire");
        assert_eq!(Chain(&plain).to_string(), "disk on fire");
    }

    #[test]
    fn io_errors_have_kinds() {
        let k = |e: std::io::Error| ErrorKind::of_io(&e);
        assert_eq!(k(std::io::Error::from_raw_os_error(28)), ErrorKind::Full);
        assert_eq!(k(std::io::ErrorKind::NotFound.into()), ErrorKind::NotFound);
        assert_eq!(k(std::io::ErrorKind::TimedOut.into()), ErrorKind::Timeout);
        assert_eq!(
            k(std::io::ErrorKind::ConnectionRefused.into()),
            ErrorKind::Unavailable
        );
        assert_eq!(
            k(std::io::ErrorKind::PermissionDenied.into()),
            ErrorKind::Refused
        );
        for (kind, expected) in [
            (std::io::ErrorKind::StorageFull, ErrorKind::Full),
            (std::io::ErrorKind::QuotaExceeded, ErrorKind::Full),
            (std::io::ErrorKind::InvalidData, ErrorKind::Invalid),
            (std::io::ErrorKind::Other, ErrorKind::Internal),
        ] {
            assert_eq!(k(kind.into()), expected, "{kind:?}");
        }
        assert_eq!(ErrorKind::Corrupt.to_string(), "corrupt");
    }
}
