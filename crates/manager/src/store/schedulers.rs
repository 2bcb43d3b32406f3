//! Scheduler instances: registered by each scheduler at start, kept alive by its keepalives,
//! marked inactive by the manager's sweeper when they stop.

use serde::Serialize;
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

/// A scheduler's state while keepalives arrive (`inactive` after one was missed).
pub const ACTIVE: &str = "active";

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Scheduler {
    pub id: i64,
    pub scheduler_cluster_id: i64,
    pub hostname: String,
    pub ip: String,
    pub port: i64,
    /// What daemons dial (`http://IP:PORT` or `https://HOST:PORT`).
    pub url: String,
    pub idc: String,
    pub location: String,
    /// `active` or `inactive`.
    pub state: String,
    pub last_keepalive_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, scheduler_cluster_id, hostname, ip, port, url, idc, location, state, \
                       last_keepalive_at, created_at, updated_at";

impl Scheduler {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            scheduler_cluster_id: r.try_get("scheduler_cluster_id")?,
            hostname: r.try_get("hostname")?,
            ip: r.try_get("ip")?,
            port: r.try_get("port")?,
            url: r.try_get("url")?,
            idc: r.try_get("idc")?,
            location: r.try_get("location")?,
            state: r.try_get("state")?,
            last_keepalive_at: r.try_get("last_keepalive_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// What a scheduler says about itself when it registers.
pub struct Registration<'a> {
    pub scheduler_cluster_id: i64,
    pub hostname: &'a str,
    pub ip: &'a str,
    pub port: i64,
    pub url: &'a str,
    pub idc: &'a str,
    pub location: &'a str,
}

/// Inserts or refreshes the scheduler at (cluster, url) and marks it active.
pub async fn register(pool: &AnyPool, r: &Registration<'_>) -> Result<Scheduler, sqlx::Error> {
    let t = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO schedulers (scheduler_cluster_id, hostname, ip, port, url, idc, location, \
         state, last_keepalive_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $8, $8) \
         ON CONFLICT (scheduler_cluster_id, url) DO UPDATE SET hostname = $2, ip = $3, \
         port = $4, idc = $6, location = $7, state = 'active', last_keepalive_at = $8, \
         updated_at = $8 RETURNING {COLUMNS}"
    )))
    .bind(r.scheduler_cluster_id)
    .bind(r.hostname)
    .bind(r.ip)
    .bind(r.port)
    .bind(r.url)
    .bind(r.idc)
    .bind(r.location)
    .bind(t)
    .fetch_one(pool)
    .await?;
    Scheduler::from_row(&row)
}

/// Records a keepalive: None when the scheduler is unknown (it must register again),
/// Some(true) when it had been marked inactive and is back.
pub async fn keepalive(pool: &AnyPool, id: i64) -> Result<Option<bool>, sqlx::Error> {
    let was: Option<String> = sqlx::query_scalar("SELECT state FROM schedulers WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(was) = was else { return Ok(None) };
    let r =
        sqlx::query("UPDATE schedulers SET state = 'active', last_keepalive_at = $1 WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?;
    Ok((r.rows_affected() == 1).then_some(was != ACTIVE))
}

/// Marks inactive every active scheduler silent since before `cutoff`; returns their ids.
pub async fn expire(pool: &AnyPool, cutoff: i64) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE schedulers SET state = 'inactive', updated_at = $1 \
         WHERE state = 'active' AND last_keepalive_at < $2 RETURNING id",
    )
    .bind(now())
    .bind(cutoff)
    .fetch_all(pool)
    .await
}

/// Schedulers, optionally of one cluster and/or only active ones.
pub async fn list(
    pool: &AnyPool,
    cluster: Option<i64>,
    active_only: bool,
) -> Result<Vec<Scheduler>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schedulers WHERE ($1 IS NULL OR scheduler_cluster_id = $1) \
         AND ($2 = 0 OR state = 'active') ORDER BY id"
    )))
    .bind(cluster)
    .bind(i64::from(active_only))
    .fetch_all(pool)
    .await?;
    rows.iter().map(Scheduler::from_row).collect()
}

pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<Scheduler>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schedulers WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(Scheduler::from_row).transpose()
}

pub async fn delete(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM schedulers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}
