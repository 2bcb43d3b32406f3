//! Jobs and their results. A job is `pending` until the runner takes it, `running` until
//! every (peer, target) result is settled, then `succeeded` or `failed` with a reason. A job
//! found `running` at start is resumed: its settled results are kept, the rest run again.
//!
//! Kinds: `preheat` (fetch URLs or an image's blobs into seed peers), `find_task` (which
//! peers hold a task) and `delete_task` (remove a task from every peer's cache).

use serde::{Deserialize, Serialize};
use sqlx::{any::AnyRow, AnyPool, Row};

use crate::db::now;

pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Fetch URLs, or an image's blobs, into the seed peers of chosen clusters.
    Preheat,
    /// Ask every active peer of chosen clusters whether it holds a task.
    FindTask,
    /// Remove a task from the cache of every active peer of chosen clusters.
    DeleteTask,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Self::Preheat, Self::FindTask, Self::DeleteTask];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preheat => "preheat",
            Self::FindTask => "find_task",
            Self::DeleteTask => "delete_task",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a job works on and where (stored as its arguments; no password here).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobArgs {
    /// URLs to fetch (a file preheat), or whose tasks to find or delete.
    pub urls: Vec<String>,
    /// Find or delete jobs: task ids (64 hex digits), besides or instead of `urls`.
    pub task_ids: Vec<String>,
    /// Find or delete jobs: the tag and application the URLs were downloaded with (they
    /// are part of a task's id).
    pub tag: String,
    pub application: String,
    /// Find or delete jobs: query parameters left out of the URLs' task ids (as given to
    /// `pollen get --filter-query`).
    pub filtered_query: Vec<String>,
    /// An image reference to resolve to its blobs (an image preheat), e.g.
    /// `registry.internal/team/app:1.4`.
    pub image: String,
    /// `os/arch[/variant]`: one platform of a multi-platform image (default: all).
    pub platform: String,
    /// Registry user name for the image (its password goes in `password`, kept apart).
    pub username: String,
    /// Reach the registry over plain HTTP.
    pub insecure: bool,
    /// Headers sent with every URL of a file preheat (`Name: value`). Their values are
    /// kept sealed with the password; stored and shown as `Name: <redacted>`.
    pub headers: Vec<String>,
    /// Scheduler clusters whose peers take part (default: all). A preheat runs on their
    /// seed peers, a find or delete on all their active peers.
    pub scheduler_cluster_ids: Vec<i64>,
    /// (peer, target) commands at once (default 4, at most 64).
    pub concurrency: u32,
    /// Preheat: bytes per second each peer's fetch may take at most (0: no job limit; the
    /// peers' own limits apply either way).
    pub rate_limit: u64,
    /// Preheat: run on this many ordinary peers (chosen at random among the active ones of
    /// the clusters) instead of the seed peers. 0: not used.
    pub peer_count: u32,
    /// Preheat: run on this percentage (1 to 100, rounded up) of the clusters' active
    /// ordinary peers instead of the seed peers. 0: not used.
    pub peer_percentage: u32,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct JobResult {
    pub host_id: String,
    /// The URL (or task id) this result is for.
    pub url: String,
    /// `pending`, `succeeded` or `failed`.
    pub state: String,
    pub error: String,
    /// Find: `complete`, `partial N/M` or `absent`. Delete: `deleted` or `absent`.
    pub detail: String,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Job {
    pub id: i64,
    pub kind: Kind,
    /// `pending`, `running`, `succeeded` or `failed`.
    pub state: String,
    pub args: JobArgs,
    /// Why it failed.
    pub error: String,
    pub user_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// Per peer and URL (in a listing: empty).
    pub results: Vec<JobResult>,
}

const COLUMNS: &str = "id, kind, state, args, error, user_id, created_at, updated_at, finished_at";

impl Job {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let args: String = r.try_get("args")?;
        let kind: String = r.try_get("kind")?;
        Ok(Self {
            id: r.try_get("id")?,
            kind: Kind::parse(&kind).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "kind".into(),
                source: format!("unknown job kind {kind:?}").into(),
            })?,
            state: r.try_get("state")?,
            args: serde_json::from_str(&args).map_err(|e| sqlx::Error::ColumnDecode {
                index: "args".into(),
                source: Box::new(e),
            })?,
            error: r.try_get("error")?,
            user_id: r.try_get("user_id")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            finished_at: r.try_get("finished_at")?,
            results: Vec::new(),
        })
    }
}

pub async fn create(
    pool: &AnyPool,
    kind: Kind,
    args: &JobArgs,
    secret: &str,
    user_id: i64,
) -> Result<Job, sqlx::Error> {
    let t = now();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO jobs (kind, state, args, secret, user_id, created_at, updated_at) \
         VALUES ($1, 'pending', $2, $3, $4, $5, $5) RETURNING {COLUMNS}"
    )))
    .bind(kind.as_str())
    .bind(serde_json::to_string(args).unwrap_or_else(|_| "{}".into()))
    .bind(secret)
    .bind(user_id)
    .bind(t)
    .fetch_one(pool)
    .await?;
    Job::from_row(&row)
}

pub async fn list(pool: &AnyPool, limit: i64, offset: i64) -> Result<Vec<Job>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs ORDER BY id DESC LIMIT $1 OFFSET $2"
    )))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    rows.iter().map(Job::from_row).collect()
}

/// A job with its results.
pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut job = Job::from_row(&row)?;
    let rows = sqlx::query(
        "SELECT host_id, url, state, error, detail, updated_at FROM job_results WHERE job_id = $1 \
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    job.results = rows
        .iter()
        .map(|r| {
            Ok(JobResult {
                host_id: r.try_get("host_id")?,
                url: r.try_get("url")?,
                state: r.try_get("state")?,
                error: r.try_get("error")?,
                detail: r.try_get("detail")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(job))
}

/// What a job keeps sealed (see `auth::sealed`): never stored in the clear, never shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSecret {
    /// The registry password for the job's `username`.
    pub password: String,
    /// The request headers of a file preheat (`Name: value`), as given.
    pub headers: Vec<String>,
}

/// Header lines with their values replaced, for `JobArgs::headers` (what the API shows).
pub fn redacted_headers(headers: &[String]) -> Vec<String> {
    headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, _)) => format!("{}: <redacted>", name.trim()),
            None => "<redacted>".into(),
        })
        .collect()
}

/// A job's sealed secret, as stored.
pub async fn secret(pool: &AnyPool, id: i64) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT secret FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Ids of jobs the runner must take: pending ones and (after a restart) running ones.
pub async fn unfinished(pool: &AnyPool) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM jobs WHERE state IN ('pending', 'running') ORDER BY id")
        .fetch_all(pool)
        .await
}

pub async fn set_state(
    pool: &AnyPool,
    id: i64,
    state: &str,
    error: &str,
) -> Result<(), sqlx::Error> {
    let t = now();
    let finished = matches!(state, SUCCEEDED | FAILED).then_some(t);
    sqlx::query(
        "UPDATE jobs SET state = $1, error = $2, updated_at = $3, finished_at = $4 WHERE id = $5",
    )
    .bind(state)
    .bind(error)
    .bind(t)
    .bind(finished)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds a pending result for (host, url) unless the job already has one.
pub async fn plan(pool: &AnyPool, job: i64, host_id: &str, url: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_results (job_id, host_id, url, state, updated_at) \
         VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (job_id, host_id, url) DO NOTHING",
    )
    .bind(job)
    .bind(host_id)
    .bind(url)
    .bind(now())
    .execute(pool)
    .await?;
    Ok(())
}

/// Records how (host, url) ended: its detail, or why it failed.
pub async fn settle(
    pool: &AnyPool,
    job: i64,
    host_id: &str,
    url: &str,
    outcome: Result<&str, &str>,
) -> Result<(), sqlx::Error> {
    let (state, detail, error) = match outcome {
        Ok(detail) => (SUCCEEDED, detail, ""),
        Err(error) => (FAILED, "", error),
    };
    sqlx::query(
        "UPDATE job_results SET state = $1, error = $2, detail = $3, updated_at = $4 \
         WHERE job_id = $5 AND host_id = $6 AND url = $7",
    )
    .bind(state)
    .bind(error)
    .bind(detail)
    .bind(now())
    .bind(job)
    .bind(host_id)
    .bind(url)
    .execute(pool)
    .await?;
    Ok(())
}
