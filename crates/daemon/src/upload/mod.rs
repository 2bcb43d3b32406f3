//! Serving pieces to other peers: the [`upload_provider`] answers the data plane's server
//! from the store (only verified pieces, private tasks only to granted children), with the
//! scheduler keys in [`grant_keys`] that check a child's grant.
//!
//! A leaf: uses the store and the wire crate, nothing else of the daemon.

pub(crate) mod grant_keys;
pub(crate) mod upload_provider;
