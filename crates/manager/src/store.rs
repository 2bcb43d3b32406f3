//! The manager's tables, one module per group, each owning its rows' Rust form and queries.
//!
//! Queries are plain runtime `sqlx::query` strings in the dialect both engines share (see
//! [`crate::db`]); a row type converts itself with `from_row`, so no module depends on which
//! engine answered.

pub mod audit;
pub mod clusters;
pub mod jobs;
pub mod join_tokens;
pub mod peers;
pub mod schedulers;
pub mod sessions;
pub mod tokens;
pub mod users;

/// Whether a database error is a unique-constraint violation (a duplicate name).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether a database error is a foreign-key violation (a reference to a missing row).
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// `limit`/`offset` of a listing, bounded.
#[derive(Clone, Copy, Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Rows to return (default 100, at most 1000).
    pub limit: Option<i64>,
    /// Rows to skip (default 0).
    pub offset: Option<i64>,
}

impl Page {
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
    pub fn offset(&self) -> i64 {
        self.offset.unwrap_or(0).max(0)
    }
}
