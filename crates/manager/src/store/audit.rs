//! The audit log: one row per write request, whoever made it and however it ended.
//!
//! Rows name the route and the target ids, never a request body, so no password or token
//! can reach the log.

use serde::Serialize;
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// None for a write by an unauthenticated caller (a failed sign-in).
    pub user_id: Option<i64>,
    pub user_name: String,
    pub method: String,
    /// The route template, e.g. `/api/v1/users/{id}`.
    pub route: String,
    /// The request path with its ids, e.g. `/api/v1/users/7`.
    pub target: String,
    /// The HTTP status returned.
    pub status: i64,
}

impl AuditEntry {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            at: r.try_get("at")?,
            user_id: r.try_get("user_id")?,
            user_name: r.try_get("user_name")?,
            method: r.try_get("method")?,
            route: r.try_get("route")?,
            target: r.try_get("target")?,
            status: r.try_get("status")?,
        })
    }
}

pub struct NewEntry<'a> {
    pub user_id: Option<i64>,
    pub user_name: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub target: &'a str,
    pub status: u16,
}

pub async fn record(pool: &AnyPool, e: NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, user_id, user_name, method, route, target, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now())
    .bind(e.user_id)
    .bind(e.user_name)
    .bind(e.method)
    .bind(e.route)
    .bind(e.target)
    .bind(i64::from(e.status))
    .execute(pool)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn list(pool: &AnyPool, limit: i64, offset: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, user_id, user_name, method, route, target, status FROM audit_log \
         ORDER BY id DESC LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(AuditEntry::from_row).collect()
}
