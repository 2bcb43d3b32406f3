//! One module per subcommand.

pub(crate) mod ca;
pub(crate) mod daemon;
pub(crate) mod demo;
pub(crate) mod get;
pub(crate) mod init;
pub(crate) mod scheduler;
