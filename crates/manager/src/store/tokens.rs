//! Personal access tokens: a name, scopes, an optional expiry; stored as a hash, revocable.

use serde::Serialize;
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::auth::{Resource, Role};
use crate::db::now;

/// A token as listed (the secret itself is shown only once, at creation).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Token {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub hint: String,
    pub scopes: Vec<Resource>,
    /// Unix seconds; none means it never expires.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, user_id, name, hint, scopes, expires_at, revoked_at, last_used_at, created_at";

fn scopes_to_text(scopes: &[Resource]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn scopes_from_text(text: &str) -> Vec<Resource> {
    text.split(',').filter_map(Resource::parse).collect()
}

impl Token {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            name: r.try_get("name")?,
            hint: r.try_get("hint")?,
            scopes: scopes_from_text(&r.try_get::<String, _>("scopes")?),
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
            last_used_at: r.try_get("last_used_at")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

pub async fn create(
    pool: &AnyPool,
    user_id: i64,
    name: &str,
    secret_hash: &str,
    hint: &str,
    scopes: &[Resource],
    expires_at: Option<i64>,
) -> Result<Token, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tokens (user_id, name, secret_hash, hint, scopes, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(user_id)
    .bind(name)
    .bind(secret_hash)
    .bind(hint)
    .bind(scopes_to_text(scopes))
    .bind(expires_at)
    .bind(now())
    .fetch_one(pool)
    .await?;
    Token::from_row(&row)
}

pub async fn list_for_user(pool: &AnyPool, user_id: i64) -> Result<Vec<Token>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tokens WHERE user_id = $1 ORDER BY id"
    )))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(Token::from_row).collect()
}

pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<Token>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tokens WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(Token::from_row).transpose()
}

/// Marks a token revoked; false when it was already revoked or does not exist.
pub async fn revoke(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// The live token whose secret hashes to `secret_hash`, with its owner's name and role;
/// none when unknown, revoked, expired, or its owner is disabled. Records the use.
pub async fn authenticate(
    pool: &AnyPool,
    secret_hash: &str,
) -> Result<Option<(Token, String, Role)>, sqlx::Error> {
    let t = now();
    let row = sqlx::query(
        "SELECT t.id, t.user_id, t.name, t.hint, t.scopes, t.expires_at, t.revoked_at, \
         t.last_used_at, t.created_at, u.name AS user_name, u.role AS user_role \
         FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.secret_hash = $1 AND t.revoked_at IS NULL \
         AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.disabled = 0",
    )
    .bind(secret_hash)
    .bind(t)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let token = Token::from_row(&row)?;
    let role = Role::parse(&row.try_get::<String, _>("user_role")?).unwrap_or(Role::Guest);
    let name: String = row.try_get("user_name")?;
    // Coarse on purpose: one write per token per minute at most.
    if token.last_used_at.is_none_or(|u| t - u >= 60) {
        sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
            .bind(t)
            .bind(token.id)
            .execute(pool)
            .await?;
    }
    Ok(Some((token, name, role)))
}
