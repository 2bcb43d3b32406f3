//! Daemons (peers and seed peers) connected to the manager. A row is written when a daemon
//! opens its session and kept, marked inactive, after it goes away, so the console can show
//! where a host was last seen.

use serde::Serialize;
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Peer {
    pub id: i64,
    /// The daemon's stable host id.
    pub host_id: String,
    pub hostname: String,
    pub ip: String,
    pub upload_port: i64,
    pub idc: String,
    pub location: String,
    pub is_seed: bool,
    /// The scheduler cluster it was placed in.
    pub scheduler_cluster_id: Option<i64>,
    /// For a seed peer, the seed-peer cluster it belongs to.
    pub seed_peer_cluster_id: Option<i64>,
    /// `active` while its session is open, else `inactive`.
    pub state: String,
    /// Why it is inactive (since `updated_at`); empty while active.
    pub inactive_reason: String,
    /// When it was last known alive: refreshed while its session is open (the session's
    /// HTTP/2 keepalive ends a session whose daemon stopped answering within a minute).
    pub last_seen_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "id, host_id, hostname, ip, upload_port, idc, location, is_seed, \
                       scheduler_cluster_id, seed_peer_cluster_id, state, inactive_reason, \
                       last_seen_at, created_at, updated_at";

impl Peer {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            host_id: r.try_get("host_id")?,
            hostname: r.try_get("hostname")?,
            ip: r.try_get("ip")?,
            upload_port: r.try_get("upload_port")?,
            idc: r.try_get("idc")?,
            location: r.try_get("location")?,
            is_seed: r.try_get::<i64, _>("is_seed")? != 0,
            scheduler_cluster_id: r.try_get("scheduler_cluster_id")?,
            seed_peer_cluster_id: r.try_get("seed_peer_cluster_id")?,
            state: r.try_get("state")?,
            inactive_reason: r.try_get("inactive_reason")?,
            last_seen_at: r.try_get("last_seen_at")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// What a daemon says about itself when it opens its session.
pub struct Hello<'a> {
    pub host_id: &'a str,
    pub hostname: &'a str,
    pub ip: &'a str,
    pub upload_port: i64,
    pub idc: &'a str,
    pub location: &'a str,
    pub is_seed: bool,
    pub scheduler_cluster_id: Option<i64>,
    pub seed_peer_cluster_id: Option<i64>,
}

/// Inserts or refreshes the peer with `host_id` and marks it active.
pub async fn upsert(pool: &AnyPool, h: &Hello<'_>) -> Result<Peer, sqlx::Error> {
    let t = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO peers (host_id, hostname, ip, upload_port, idc, location, is_seed, \
         scheduler_cluster_id, seed_peer_cluster_id, state, last_seen_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10, $10) \
         ON CONFLICT (host_id) DO UPDATE SET hostname = $2, ip = $3, upload_port = $4, idc = $5, \
         location = $6, is_seed = $7, scheduler_cluster_id = $8, seed_peer_cluster_id = $9, \
         state = 'active', inactive_reason = '', last_seen_at = $10, updated_at = $10 \
         RETURNING {COLUMNS}"
    )))
    .bind(h.host_id)
    .bind(h.hostname)
    .bind(h.ip)
    .bind(h.upload_port)
    .bind(h.idc)
    .bind(h.location)
    .bind(i64::from(h.is_seed))
    .bind(h.scheduler_cluster_id)
    .bind(h.seed_peer_cluster_id)
    .bind(t)
    .fetch_one(pool)
    .await?;
    Peer::from_row(&row)
}

/// Marks a peer inactive, saying why; its last-seen time becomes now.
pub async fn set_inactive(pool: &AnyPool, id: i64, reason: &str) -> Result<(), sqlx::Error> {
    let t = now();
    sqlx::query(
        "UPDATE peers SET state = 'inactive', inactive_reason = $1, last_seen_at = $2, \
         updated_at = $2 WHERE id = $3",
    )
    .bind(reason)
    .bind(t)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that an active peer's session is still open.
pub async fn seen(pool: &AnyPool, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE peers SET last_seen_at = $1 WHERE id = $2 AND state = 'active'")
        .bind(now())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks every peer inactive (at manager start: no session survives a restart).
pub async fn set_all_inactive(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE peers SET state = 'inactive', updated_at = $1, \
         inactive_reason = 'the manager restarted while its session was open' \
         WHERE state = 'active'",
    )
    .bind(now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Filters of a peer listing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    pub scheduler_cluster_id: Option<i64>,
    pub seed_peer_cluster_id: Option<i64>,
    pub seed: Option<bool>,
    pub active_only: bool,
}

pub async fn list(
    pool: &AnyPool,
    f: Filter,
    limit: i64,
    offset: i64,
) -> Result<Vec<Peer>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM peers WHERE ($1 IS NULL OR scheduler_cluster_id = $1) \
         AND ($2 IS NULL OR seed_peer_cluster_id = $2) AND ($3 IS NULL OR is_seed = $3) \
         AND ($4 = 0 OR state = 'active') ORDER BY id LIMIT $5 OFFSET $6"
    )))
    .bind(f.scheduler_cluster_id)
    .bind(f.seed_peer_cluster_id)
    .bind(f.seed.map(i64::from))
    .bind(i64::from(f.active_only))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(Peer::from_row).collect()
}

pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<Peer>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM peers WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(Peer::from_row).transpose()
}
