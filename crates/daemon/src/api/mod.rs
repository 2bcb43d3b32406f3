//! The local API on a unix socket: the [`service`] (`pollen get` and friends: download, stat),
//! the [`socket`] it listens on (where it lives, who may reach it), and the [`client`] the
//! CLI uses.
//!
//! Drives downloads from above (`crate::download`); nothing below calls into it.

pub mod client;
pub(crate) mod service;
pub(crate) mod socket;
