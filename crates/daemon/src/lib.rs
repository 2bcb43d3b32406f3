//! Pollen's peer daemon: downloads pieces from parents or the origin, stores them, serves
//! them to other peers, and answers the CLI on a local socket.
//!
//! The path of one download: the local API (or a seed trigger from the scheduler) asks the
//! conductor (`download/`) for a task; it opens an announce stream to the scheduler
//! (`links/`), learns the task's layout and piece digests, and runs one parent fetcher per
//! parent the scheduler offers, or the origin fetcher when told (or when the scheduler is
//! unreachable or no parent turns up in time). Every piece is verified against its published
//! BLAKE3 digest before it is committed to the store; the whole content is checked against
//! its sha256 when known. `upload/` serves what is held; `control/` carries the scheduler's
//! and the manager's orders; `api/` is the local socket; `proxy/` the registry mirror and
//! HTTP proxy.
//!
//! Layering, top to bottom: `api`, `control`, `proxy` → `download` → `links`, `upload` → the
//! shared parts at the root (config, errors, stats, traffic, live limits).

#![warn(missing_docs)]
#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

pub mod api;
mod control;
mod download;
mod links;
mod proxy;
mod upload;

pub mod config;
mod daemon;
mod error;
mod gc;
mod identity;
mod live_limits;
mod start_error;
mod stats;
mod traffic;

#[doc(hidden)]
pub use api::service::fuzz_local_api_request;
pub use config::{DaemonConfig, GcConfig, ProxyConfig, ProxyRule};
pub use daemon::{Daemon, DaemonHandle};
pub use error::DownloadError;
pub use proxy::ca::{existing_cert as proxy_ca_cert, CaError};
#[doc(hidden)]
pub use proxy::fuzz_mirror_request;
pub use start_error::DaemonStartError;
pub use stats::DaemonStats;
