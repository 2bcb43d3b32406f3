//! User accounts. The password hash never leaves this module except to be verified.

use serde::Serialize;
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::auth::Role;
use crate::db::now;

/// A user as the API shows it (no password hash).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, name, email, role, disabled, created_at, updated_at";

impl User {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let role: String = r.try_get("role")?;
        Ok(Self {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            email: r.try_get("email")?,
            role: Role::parse(&role).unwrap_or(Role::Guest),
            disabled: r.try_get::<i64, _>("disabled")? != 0,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

pub async fn count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(pool)
        .await
}

pub async fn create(
    pool: &AnyPool,
    name: &str,
    email: &str,
    role: Role,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    let t = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (name, email, role, password_hash, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, $5, $5) RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(email)
    .bind(role.as_str())
    .bind(password_hash)
    .bind(t)
    .fetch_one(pool)
    .await?;
    User::from_row(&row)
}

pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(User::from_row).transpose()
}

/// The user named `name` and their password hash, for signing in.
pub async fn by_name_with_hash(
    pool: &AnyPool,
    name: &str,
) -> Result<Option<(User, String)>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, password_hash FROM users WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => Ok(Some((User::from_row(&r)?, r.try_get("password_hash")?))),
        None => Ok(None),
    }
}

pub async fn password_hash(pool: &AnyPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &AnyPool, limit: i64, offset: i64) -> Result<Vec<User>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users ORDER BY id LIMIT $1 OFFSET $2"
    )))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(User::from_row).collect()
}

/// Changes the given fields; None when there is no such user.
pub async fn update(
    pool: &AnyPool,
    id: i64,
    email: Option<&str>,
    role: Option<Role>,
    disabled: Option<bool>,
) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET email = COALESCE($1, email), role = COALESCE($2, role), \
         disabled = COALESCE($3, disabled), updated_at = $4 WHERE id = $5 RETURNING {COLUMNS}"
    )))
    .bind(email)
    .bind(role.map(Role::as_str))
    .bind(disabled.map(i64::from))
    .bind(now())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(User::from_row).transpose()
}

pub async fn set_password_hash(pool: &AnyPool, id: i64, hash: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn delete(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Admins that are not disabled (the last one cannot be removed or demoted).
pub async fn active_admins(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0")
        .fetch_one(pool)
        .await
}
