//! Pollen's test kit: what the multi-process tests and the benchmark harness start around
//! the product, never part of it (`pollen` does not depend on this crate).
//!
//! - [`cluster`]: a cluster of real `pollen` processes on loopback (scheduler, seed, daemons,
//!   managers), killed and removed on drop;
//! - [`origin`]: real HTTP(S) origins that count what they serve and misbehave on request;
//! - [`registry_kit`]: a real OCI registry (Debian's `docker-registry`) and images pushed
//!   into it with real clients;
//! - [`s3_server`], [`azurite`]: a real S3 API server (`moto`) and Azure's storage emulator,
//!   with objects put by the clouds' own clients;
//! - [`tools`]: the one rule for tests that need a program from the machine.

#![warn(missing_docs)]

pub mod azurite;
pub mod cluster;
pub mod daemon_proc;
pub mod hub;
mod launch;
mod logged_server;
pub mod origin;
pub mod registry_kit;
pub mod role_proc;
pub mod s3_server;
pub mod token_service;
pub mod tools;

pub use cluster::{Cluster, ClusterSpec};
pub use daemon_proc::DaemonProc;
pub use launch::tls_flags;
pub use role_proc::{ManagerProc, RoleProc, SchedulerProc};
