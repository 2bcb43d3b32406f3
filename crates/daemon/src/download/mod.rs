//! One download, from request to verified output: the [`conductor`] runs each task (one run
//! per task, however many callers wait on it), [`piece_claims`] keep parents and the origin
//! from fetching the same piece twice, the [`parent_pool`] holds the parents the scheduler
//! offered and runs one [`parent_fetcher`] per connection, the [`origin_fetcher`] reads the
//! origin when told to, and the [`output_writer`] hands the content to the caller with the
//! caller's own rights ([`caller`]); [`cache_files`] moves content between the cache and a
//! caller's files without a download.
//!
//! Uses the scheduler links (`crate::links`) to announce, the upload side's grant keys
//! (`crate::upload`), the store and the traffic limits; never the local API, the control
//! sessions or the proxy, which drive it from above.

pub(crate) mod cache_files;
pub(crate) mod caller;
pub(crate) mod conductor;
pub(crate) mod content_check;
pub(crate) mod held;
pub(crate) mod origin_fetcher;
pub(crate) mod output_writer;
pub(crate) mod parent_fetcher;
pub(crate) mod parent_pool;
pub(crate) mod piece_claims;
pub(crate) mod report;
pub(crate) mod scheduler_events;
pub(crate) mod task_spec;
pub(crate) mod watch;
