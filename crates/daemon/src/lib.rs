//! Pollen's peer daemon: downloads pieces from parents or the origin, stores them, serves
//! them to other peers, and answers the CLI on a local socket.
//!
//! The path of one download: the local API (or a seed trigger from the scheduler) asks the
//! [`conductor`] for a task; it opens an announce stream to the scheduler, learns the task's
//! layout and piece digests, and runs one [`parent_fetcher`] per parent the scheduler offers,
//! or the [`origin_fetcher`] when told (or when the scheduler is unreachable or no parent turns
//! up in time). Every piece is verified against its published BLAKE3 digest before it is
//! committed to the store; the whole content is checked against its sha256 when known.

#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

mod announce_queue;
pub mod api_client;
mod api_socket;
mod caller;
mod conductor;
pub mod config;
mod content_check;
mod daemon;
mod error;
mod gc;
mod grant_keys;
mod host_sessions;
mod identity;
mod live_limits;
pub(crate) mod local_api;
mod manager_session;
mod origin_fetcher;
mod output_writer;
mod parent_fetcher;
mod parent_pool;
mod piece_claims;
mod proxy;
mod report;
mod scheduler_link;
mod scheduler_set;
mod start_error;
mod stats;
mod traffic;
mod upload_provider;

pub use config::{DaemonConfig, GcConfig, ProxyConfig, ProxyRule};
pub use daemon::{Daemon, DaemonHandle};
pub use error::DownloadError;
#[doc(hidden)]
pub use local_api::fuzz_local_api_request;
pub use proxy::ca::{load_or_create as proxy_ca, CaError};
#[doc(hidden)]
pub use proxy::fuzz_mirror_request;
pub use start_error::DaemonStartError;
pub use stats::DaemonStats;
