//! Pollen's scheduler: the live model of hosts, tasks and peers, and who downloads from whom.
//!
//! Daemons open a host session (so the scheduler knows they are alive and can send seed
//! triggers), report their load, and open one announce stream per task. The scheduler
//! answers each peer with the task's facts (length, piece length, piece digests as they are
//! published), a ranked set of candidate parents, or "back to source". It never touches
//! content bytes.
//!
//! Non-goals: persistence (the model is rebuilt from daemons' announcements after a restart)
//! and cross-scheduler coordination.

#![warn(missing_docs)]
#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

mod config;
pub mod core;
pub mod dag;
pub mod evaluator;
mod fuzz_entry;
pub mod join_gate;
pub mod manager_link;
pub mod metrics;
pub mod model;
mod piece_cost;
pub mod piece_set;
mod service;
pub mod slots;
pub mod task_facts;

pub use config::SchedulerConfig;
pub use evaluator::{EvaluatorConfig, Weights};
#[doc(hidden)]
pub use fuzz_entry::fuzz_announce_events;
pub use manager_link::ManagerLink;
pub use service::SchedulerService;
