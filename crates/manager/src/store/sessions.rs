//! Console sign-in sessions: a cookie secret, stored hashed, with an expiry.

use sqlx::{AnyPool, Row};

use crate::auth::Role;
use crate::db::now;

/// A live session's id and its user's id, name and role.
pub struct SessionUser {
    pub session_id: i64,
    pub user_id: i64,
    pub name: String,
    pub role: Role,
}

pub async fn create(
    pool: &AnyPool,
    user_id: i64,
    secret_hash: &str,
    ttl_secs: i64,
) -> Result<i64, sqlx::Error> {
    let t = now();
    sqlx::query_scalar(
        "INSERT INTO sessions (secret_hash, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(secret_hash)
    .bind(user_id)
    .bind(t)
    .bind(t + ttl_secs)
    .fetch_one(pool)
    .await
}

pub async fn authenticate(
    pool: &AnyPool,
    secret_hash: &str,
) -> Result<Option<SessionUser>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT s.id, s.user_id, u.name, u.role FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.secret_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
    )
    .bind(secret_hash)
    .bind(now())
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(SessionUser {
        session_id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Guest),
    }))
}

pub async fn delete(pool: &AnyPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ends every session of a user but `keep` (after a password change, or all of them when
/// the user is disabled).
pub async fn delete_for_user_except(
    pool: &AnyPool,
    user_id: i64,
    keep: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR id <> $2)")
        .bind(user_id)
        .bind(keep)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops expired sessions.
pub async fn sweep(pool: &AnyPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now())
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
