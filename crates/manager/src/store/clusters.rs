//! Scheduler clusters (with their placement scopes and dynamic config) and seed-peer
//! clusters, and which seed-peer clusters serve which scheduler clusters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

/// Which daemons a scheduler cluster serves. Every field is optional; a daemon matching more
/// of them, more precisely, is placed here before a cluster that matches fewer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterScopes {
    /// Networks (`10.0.0.0/8`, `fd00::/8`) whose daemons belong here.
    pub cidrs: Vec<String>,
    /// Data centres, `|`-separated (`idc-a|idc-b`).
    pub idc: String,
    /// A location prefix, most general first (`eu|fra|rack1`).
    pub location: String,
    /// A regular expression matched against the daemon's whole hostname.
    pub hostname_regex: String,
}

/// What a cluster's schedulers and daemons apply; schedulers get it with every keepalive,
/// daemons with every placement, and both keep the last one while the manager is away.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerClusterConfig {
    /// Candidate parents offered to one peer (default 6).
    pub candidate_parent_limit: u32,
    /// Evaluator weights by feature name; a feature not named keeps the scheduler's default.
    pub weights: BTreeMap<String, f64>,
    /// Settings for the cluster's daemons.
    pub peer: PeerConfig,
}

impl Default for SchedulerClusterConfig {
    fn default() -> Self {
        Self {
            candidate_parent_limit: 6,
            weights: BTreeMap::new(),
            peer: PeerConfig::default(),
        }
    }
}

/// Daemon settings a cluster imposes, in bytes per second (0: unlimited). A setting left out
/// (null) leaves each daemon's own (its flag or config file) in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    pub upload_rate_limit: Option<u64>,
    pub download_rate_limit: Option<u64>,
    pub back_to_source_rate_limit: Option<u64>,
}

/// What seed peers of a cluster apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SeedPeerClusterConfig {
    /// Upload connections each seed peer of this cluster serves at once (default 300). Sent
    /// to the seed peers with their placement, which cap their upload server at it and report
    /// the cap to their schedulers, so no more children are sent to a seed than it takes.
    pub load_limit: u32,
}

impl Default for SeedPeerClusterConfig {
    fn default() -> Self {
        Self { load_limit: 300 }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulerCluster {
    pub id: i64,
    pub name: String,
    pub bio: String,
    pub scopes: ClusterScopes,
    pub config: SchedulerClusterConfig,
    /// Daemons that match no cluster's scopes are placed in the default cluster.
    pub is_default: bool,
    /// Seed-peer clusters that fetch new tasks for this cluster.
    pub seed_peer_cluster_ids: Vec<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SeedPeerCluster {
    pub id: i64,
    pub name: String,
    pub bio: String,
    pub config: SeedPeerClusterConfig,
    /// Scheduler clusters this one serves.
    pub scheduler_cluster_ids: Vec<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn json<T: serde::de::DeserializeOwned + Default>(r: &AnyRow, col: &str) -> Result<T, sqlx::Error> {
    let text: String = r.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: Box::new(e),
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

const SC_COLUMNS: &str = "id, name, bio, scopes, config, is_default, created_at, updated_at";
const SPC_COLUMNS: &str = "id, name, bio, config, created_at, updated_at";

impl SchedulerCluster {
    fn from_row(r: &AnyRow, links: Vec<i64>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            bio: r.try_get("bio")?,
            scopes: json(r, "scopes")?,
            config: json(r, "config")?,
            is_default: r.try_get::<i64, _>("is_default")? != 0,
            seed_peer_cluster_ids: links,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

impl SeedPeerCluster {
    fn from_row(r: &AnyRow, links: Vec<i64>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            bio: r.try_get("bio")?,
            config: json(r, "config")?,
            scheduler_cluster_ids: links,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        })
    }
}

/// All (scheduler cluster, seed-peer cluster) links.
async fn links(pool: &AnyPool) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT scheduler_cluster_id, seed_peer_cluster_id FROM cluster_links")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Links scheduler cluster `sc` to seed-peer cluster `spc` (a missing one is a foreign-key
/// violation, which the API reports as a bad id).
async fn insert_link(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    sc: i64,
    spc: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cluster_links (scheduler_cluster_id, seed_peer_cluster_id) VALUES ($1, $2)",
    )
    .bind(sc)
    .bind(spc)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A scheduler cluster's fields as written by the API.
pub struct SchedulerClusterFields<'a> {
    pub name: &'a str,
    pub bio: &'a str,
    pub scopes: &'a ClusterScopes,
    pub config: &'a SchedulerClusterConfig,
    pub is_default: bool,
    pub seed_peer_cluster_ids: &'a [i64],
}

pub async fn list_scheduler_clusters(pool: &AnyPool) -> Result<Vec<SchedulerCluster>, sqlx::Error> {
    let links = links(pool).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SC_COLUMNS} FROM scheduler_clusters ORDER BY id"
    )))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            let mine = links.iter().filter(|l| l.0 == id).map(|l| l.1).collect();
            SchedulerCluster::from_row(r, mine)
        })
        .collect()
}

pub async fn get_scheduler_cluster(
    pool: &AnyPool,
    id: i64,
) -> Result<Option<SchedulerCluster>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SC_COLUMNS} FROM scheduler_clusters WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mine = sqlx::query_scalar(
        "SELECT seed_peer_cluster_id FROM cluster_links WHERE scheduler_cluster_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    SchedulerCluster::from_row(&row, mine).map(Some)
}

/// Inserts (`id` None) or replaces a scheduler cluster and its links in one transaction;
/// marking it default unmarks every other. None when `id` names no cluster.
pub async fn save_scheduler_cluster(
    pool: &AnyPool,
    id: Option<i64>,
    f: &SchedulerClusterFields<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    let t = now();
    let mut tx = pool.begin().await?;
    if f.is_default {
        sqlx::query("UPDATE scheduler_clusters SET is_default = 0 WHERE is_default = 1")
            .execute(&mut *tx)
            .await?;
    }
    let id = match id {
        None => sqlx::query_scalar(
            "INSERT INTO scheduler_clusters (name, bio, scopes, config, is_default, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
        )
        .bind(f.name)
        .bind(f.bio)
        .bind(to_json(f.scopes))
        .bind(to_json(f.config))
        .bind(i64::from(f.is_default))
        .bind(t)
        .fetch_one(&mut *tx)
        .await?,
        Some(id) => {
            let r = sqlx::query(
                "UPDATE scheduler_clusters SET name = $1, bio = $2, scopes = $3, config = $4, \
                 is_default = $5, updated_at = $6 WHERE id = $7",
            )
            .bind(f.name)
            .bind(f.bio)
            .bind(to_json(f.scopes))
            .bind(to_json(f.config))
            .bind(i64::from(f.is_default))
            .bind(t)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query("DELETE FROM cluster_links WHERE scheduler_cluster_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            id
        }
    };
    for spc in f.seed_peer_cluster_ids {
        insert_link(&mut tx, id, *spc).await?;
    }
    tx.commit().await?;
    Ok(Some(id))
}

pub async fn delete_scheduler_cluster(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM scheduler_clusters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn list_seed_peer_clusters(pool: &AnyPool) -> Result<Vec<SeedPeerCluster>, sqlx::Error> {
    let links = links(pool).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SPC_COLUMNS} FROM seed_peer_clusters ORDER BY id"
    )))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get("id")?;
            let mine = links.iter().filter(|l| l.1 == id).map(|l| l.0).collect();
            SeedPeerCluster::from_row(r, mine)
        })
        .collect()
}

pub async fn get_seed_peer_cluster(
    pool: &AnyPool,
    id: i64,
) -> Result<Option<SeedPeerCluster>, sqlx::Error> {
    Ok(list_seed_peer_clusters(pool)
        .await?
        .into_iter()
        .find(|c| c.id == id))
}

/// Inserts (`id` None) or replaces a seed-peer cluster and its links; None when `id` names
/// no cluster.
pub async fn save_seed_peer_cluster(
    pool: &AnyPool,
    id: Option<i64>,
    name: &str,
    bio: &str,
    config: &SeedPeerClusterConfig,
    scheduler_cluster_ids: &[i64],
) -> Result<Option<i64>, sqlx::Error> {
    let t = now();
    let mut tx = pool.begin().await?;
    let id = match id {
        None => {
            sqlx::query_scalar(
                "INSERT INTO seed_peer_clusters (name, bio, config, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(name)
            .bind(bio)
            .bind(to_json(config))
            .bind(t)
            .fetch_one(&mut *tx)
            .await?
        }
        Some(id) => {
            let r = sqlx::query(
                "UPDATE seed_peer_clusters SET name = $1, bio = $2, config = $3, updated_at = $4 \
                 WHERE id = $5",
            )
            .bind(name)
            .bind(bio)
            .bind(to_json(config))
            .bind(t)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query("DELETE FROM cluster_links WHERE seed_peer_cluster_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            id
        }
    };
    for sc in scheduler_cluster_ids {
        insert_link(&mut tx, *sc, id).await?;
    }
    tx.commit().await?;
    Ok(Some(id))
}

pub async fn delete_seed_peer_cluster(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM seed_peer_clusters WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}
