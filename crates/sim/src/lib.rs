//! A deterministic simulation of a Pollen swarm: no sockets, virtual time, a fluid
//! piece-level link model, and the real scheduler core making every parent decision.
//!
//! It answers the question the scheduler is judged by: with N peers of mixed bandwidth, some
//! joining late, how close does every peer get to the theoretical completion bound T_min,
//! and how many bytes does the origin send? The same seed gives the same run.

#![warn(missing_docs)]

pub mod spec;
pub mod swarm;

pub use spec::{PeerClass, SimSpec};
pub use swarm::{Outcome, Swarm};
