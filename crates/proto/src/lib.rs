//! gRPC definitions of Pollen's control plane and the daemon's local API.
//!
//! `scheduler.v1`: a host session per daemon (the scheduler pushes seed triggers down it) and
//! one bidirectional announce stream per (peer, task). `daemon.v1`: what the CLI asks of the
//! local daemon over its unix socket. `manager.v1`: scheduler registration and keepalive (with
//! dynamic config), and a session per daemon that carries its placement.

#![allow(missing_docs, clippy::all)]

/// Scheduler control plane.
pub mod scheduler {
    tonic::include_proto!("pollen.scheduler.v1");
}

/// The daemon's local API.
pub mod daemon {
    tonic::include_proto!("pollen.daemon.v1");
}

/// The manager's control plane for schedulers and daemons.
pub mod manager {
    tonic::include_proto!("pollen.manager.v1");
}
