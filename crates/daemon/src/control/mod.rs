//! What other roles order this daemon to do: the scheduler's host-session commands
//! ([`host_sessions`]: fetch a task as a seed, delete one) and the manager's session
//! ([`manager_session`]: placement, cluster limits, preheat and cache jobs).
//!
//! Drives downloads from above (`crate::download`); the local API and the proxy never call
//! into it.

pub(crate) mod host_sessions;
pub(crate) mod manager_session;
