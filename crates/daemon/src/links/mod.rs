//! The daemon's side of the scheduler protocol: one [`scheduler_link`] per scheduler (host
//! session, announce streams), the [`scheduler_set`] that picks a task's scheduler by
//! rendezvous hashing, and the [`announce_queue`] that batches a download's events.
//!
//! Below the downloads that use them: never calls into `crate::download`, the control
//! sessions or the local API.

pub(crate) mod announce_queue;
pub(crate) mod scheduler_link;
pub(crate) mod scheduler_set;
