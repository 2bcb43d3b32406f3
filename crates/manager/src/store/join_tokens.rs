//! Join tokens (see `pollen_core::join`): a name, the roles it lets a host claim (scheduler,
//! seed), an optional expiry; stored as a hash, revocable.

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

/// A role a join token lets its holder claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JoinRole {
    /// Register with the manager as a scheduler.
    Scheduler,
    /// Open a session with the manager or a scheduler as a seed peer.
    Seed,
}

impl JoinRole {
    /// The role's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduler => "scheduler",
            Self::Seed => "seed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduler" => Some(Self::Scheduler),
            "seed" => Some(Self::Seed),
            _ => None,
        }
    }
}

/// A join token as listed (the secret is shown only once, at creation).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JoinToken {
    pub id: i64,
    pub name: String,
    pub roles: Vec<JoinRole>,
    /// The first characters of the secret, to recognise it.
    pub hint: String,
    /// The admin who created it; none for the one made at first start.
    pub created_by: Option<i64>,
    /// Unix seconds; none means it never expires.
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, name, roles, hint, created_by, expires_at, revoked_at, last_used_at, created_at";

fn roles_to_text(roles: &[JoinRole]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl JoinToken {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            roles: r
                .try_get::<String, _>("roles")?
                .split(',')
                .filter_map(JoinRole::parse)
                .collect(),
            hint: r.try_get("hint")?,
            created_by: r.try_get("created_by")?,
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
            last_used_at: r.try_get("last_used_at")?,
            created_at: r.try_get("created_at")?,
        })
    }

    pub fn allows(&self, role: JoinRole) -> bool {
        self.roles.contains(&role)
    }
}

/// What a new token is.
pub struct NewJoinToken<'a> {
    pub name: &'a str,
    pub roles: &'a [JoinRole],
    pub secret_hash: &'a str,
    pub hint: &'a str,
    pub created_by: Option<i64>,
    pub expires_at: Option<i64>,
}

pub async fn create(pool: &AnyPool, t: &NewJoinToken<'_>) -> Result<JoinToken, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO join_tokens (name, roles, secret_hash, hint, created_by, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    )))
    .bind(t.name)
    .bind(roles_to_text(t.roles))
    .bind(t.secret_hash)
    .bind(t.hint)
    .bind(t.created_by)
    .bind(t.expires_at)
    .bind(now())
    .fetch_one(pool)
    .await?;
    JoinToken::from_row(&row)
}

pub async fn list(pool: &AnyPool) -> Result<Vec<JoinToken>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM join_tokens ORDER BY id"
    )))
    .fetch_all(pool)
    .await?;
    rows.iter().map(JoinToken::from_row).collect()
}

/// How many join tokens were ever made (revoked ones included).
pub async fn count(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM join_tokens")
        .fetch_one(pool)
        .await?
        .try_get("n")
}

/// Marks a token revoked; false when it was already revoked or does not exist.
pub async fn revoke(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r =
        sqlx::query("UPDATE join_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?;
    Ok(r.rows_affected() == 1)
}

/// Whether a token with this id was ever made (revoked or not).
pub async fn exists(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT id FROM join_tokens WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .is_some())
}

/// Revokes every live token named `name` (the one `pollen standalone` makes for itself at
/// each start replaces the last).
pub async fn revoke_named(pool: &AnyPool, name: &str) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE join_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind(name)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// Whether `secret_hash` is a live token for `role`. Records the use.
pub async fn admits(
    pool: &AnyPool,
    secret_hash: &str,
    role: JoinRole,
) -> Result<bool, sqlx::Error> {
    let t = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM join_tokens WHERE secret_hash = $1 \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
    )))
    .bind(secret_hash)
    .bind(t)
    .fetch_optional(pool)
    .await?;
    let Some(token) = row.as_ref().map(JoinToken::from_row).transpose()? else {
        return Ok(false);
    };
    if !token.allows(role) {
        return Ok(false);
    }
    // Coarse on purpose: one write per token per minute at most.
    if token.last_used_at.is_none_or(|u| t - u >= 60) {
        sqlx::query("UPDATE join_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(t)
            .bind(token.id)
            .execute(pool)
            .await?;
    }
    Ok(true)
}

/// The hashes of every live token for `role` (what schedulers check seed claims against).
pub async fn live_hashes(pool: &AnyPool, role: JoinRole) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT secret_hash, roles FROM join_tokens \
         WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1) ORDER BY id",
    )
    .bind(now())
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let roles: String = r.try_get("roles")?;
        if roles.split(',').any(|x| x == role.as_str()) {
            out.push(r.try_get("secret_hash")?);
        }
    }
    Ok(out)
}
