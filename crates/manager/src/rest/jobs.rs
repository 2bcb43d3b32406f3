//! Jobs: create a preheat, find-task or delete-task job, list jobs, follow one. Users and admins run jobs; everyone signed
//! in may read them. A registry password and request headers given with a job are sealed
//! (`auth::sealed`), stored apart and never shown (headers appear as `Name: <redacted>`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::AppState;
use crate::auth::{Access, Principal, Resource};
use crate::store::jobs::{self, Job, JobArgs, Kind};
use crate::store::Page;

/// A new job.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// `preheat`, `find_task` or `delete_task`.
    #[serde(rename = "type")]
    pub kind: String,
    /// URLs to fetch (a file preheat), or whose tasks to find or delete.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Find or delete: task ids (64 hex digits), besides or instead of `urls`.
    #[serde(default)]
    pub task_ids: Vec<String>,
    /// Find or delete: the tag the URLs were downloaded with.
    #[serde(default)]
    pub tag: String,
    /// Find or delete: the application the URLs were downloaded with.
    #[serde(default)]
    pub application: String,
    /// Find or delete: query parameters left out of the URLs' task ids.
    #[serde(default)]
    pub filtered_query: Vec<String>,
    /// An image reference to resolve to its blobs (an image preheat).
    #[serde(default)]
    pub image: String,
    /// `os/arch[/variant]`: one platform of a multi-platform image (default: all).
    #[serde(default)]
    pub platform: String,
    /// Registry user name for the image.
    #[serde(default)]
    pub username: String,
    /// The registry password for `username`; stored apart, never shown.
    #[serde(default)]
    pub password: String,
    /// Reach the registry over plain HTTP.
    #[serde(default)]
    pub insecure: bool,
    /// Headers sent with every URL of a file preheat (`Name: value`).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Scheduler clusters whose peers take part (default: all): a preheat runs on their
    /// active seed peers, a find or delete on all their active peers.
    #[serde(default)]
    pub scheduler_cluster_ids: Vec<i64>,
    /// (peer, target) commands at once (default 4, at most 64).
    #[serde(default)]
    pub concurrency: u32,
    /// Preheat: bytes per second each peer's fetch may take at most (0: no job limit).
    #[serde(default)]
    pub rate_limit: u64,
    /// Preheat on this many ordinary peers, chosen at random, instead of the seed peers.
    #[serde(default)]
    pub peer_count: u32,
    /// Preheat on this percentage (1 to 100) of the ordinary peers instead of the seeds.
    #[serde(default)]
    pub peer_percentage: u32,
}

fn check(kind: Kind, args: &JobArgs) -> ApiResult<()> {
    if kind == Kind::Preheat {
        match (args.urls.is_empty(), args.image.is_empty()) {
            (true, true) => return Err(ApiError::invalid("give urls or an image")),
            (false, false) => return Err(ApiError::invalid("give urls or an image, not both")),
            _ => {}
        }
        if !args.task_ids.is_empty() {
            return Err(ApiError::invalid(
                "a preheat takes urls or an image, not task_ids",
            ));
        }
    } else {
        if !args.image.is_empty() {
            return Err(ApiError::invalid(
                "find_task and delete_task take urls or task_ids, not an image",
            ));
        }
        if args.urls.is_empty() && args.task_ids.is_empty() {
            return Err(ApiError::invalid("give urls or task_ids"));
        }
        if args.task_ids.len() > 1000 {
            return Err(ApiError::invalid("at most 1000 task_ids per job"));
        }
        for t in &args.task_ids {
            if t.parse::<pollen_core::TaskId>().is_err() {
                return Err(ApiError::invalid(format!(
                    "task_ids: {t:?} is not a task id (64 hex digits)"
                )));
            }
        }
    }
    if args.urls.len() > 1000 {
        return Err(ApiError::invalid("at most 1000 urls per job"));
    }
    for u in &args.urls {
        // Any URL a daemon has an origin for (http(s), s3, gs, azblob, file).
        pollen_core::task_id::normalise_url(u, &[])
            .map_err(|e| ApiError::invalid(format!("urls: {e}")))?;
    }
    if !args.image.is_empty() {
        pollen_oci::ImageReference::parse(&args.image)
            .map_err(|e| ApiError::invalid(format!("image: {e}")))?;
    }
    if !args.platform.is_empty() {
        args.platform
            .parse::<pollen_oci::Platform>()
            .map_err(|e| ApiError::invalid(format!("platform: {e}")))?;
    }
    if args.headers.iter().any(|h| !h.contains(':')) {
        return Err(ApiError::invalid("headers must read `Name: value`"));
    }
    if kind != Kind::Preheat && args.rate_limit > 0 {
        return Err(ApiError::invalid(
            "rate_limit applies to a preheat's fetches",
        ));
    }
    if kind != Kind::Preheat && (args.peer_count > 0 || args.peer_percentage > 0) {
        return Err(ApiError::invalid(
            "peer_count and peer_percentage choose where a preheat runs; a find or delete asks every peer",
        ));
    }
    if args.peer_count > 0 && args.peer_percentage > 0 {
        return Err(ApiError::invalid(
            "give peer_count or peer_percentage, not both",
        ));
    }
    if args.peer_percentage > 100 {
        return Err(ApiError::invalid("peer_percentage may be at most 100"));
    }
    if args.peer_count > 100_000 {
        return Err(ApiError::invalid("peer_count may be at most 100000"));
    }
    if args.concurrency > 64 {
        return Err(ApiError::invalid("concurrency may be at most 64"));
    }
    Ok(())
}

/// Create a job; the runner starts it at once.
#[utoipa::path(post, operation_id = "create_job", path = "/api/v1/jobs", tag = "jobs",
    request_body = NewJob, security(("token" = []), ("session" = [])),
    responses((status = 201, body = Job), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<NewJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    who.check(Resource::Jobs, Access::Write)?;
    let req = body.parse()?;
    let Some(kind) = Kind::parse(&req.kind) else {
        return Err(ApiError::invalid(format!(
            "type {:?} is not a job type (preheat, find_task or delete_task)",
            req.kind
        )));
    };
    let mut args = JobArgs {
        urls: req.urls,
        task_ids: req.task_ids,
        tag: req.tag,
        application: req.application,
        filtered_query: req.filtered_query,
        image: req.image,
        platform: req.platform,
        username: req.username,
        insecure: req.insecure,
        headers: req.headers,
        scheduler_cluster_ids: req.scheduler_cluster_ids,
        rate_limit: req.rate_limit,
        peer_count: req.peer_count,
        peer_percentage: req.peer_percentage,
        concurrency: if req.concurrency == 0 {
            4
        } else {
            req.concurrency
        },
    };
    check(kind, &args)?;
    let secret = jobs::JobSecret {
        password: req.password,
        headers: std::mem::take(&mut args.headers),
    };
    args.headers = jobs::redacted_headers(&secret.headers);
    let sealed = serde_json::to_string(&secret)
        .map_err(|e| ApiError::Unavailable(e.to_string()))
        .and_then(|text| {
            state
                .secrets
                .seal(&text)
                .map_err(|e| ApiError::Unavailable(e.to_string()))
        })?;
    let job = jobs::create(&state.db.pool, kind, &args, &sealed, who.user_id).await?;
    state.jobs_added.notify_one();
    Ok((StatusCode::CREATED, Json(job)))
}

#[utoipa::path(get, operation_id = "list_jobs", path = "/api/v1/jobs", tag = "jobs", params(Page),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [Job])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<Job>>> {
    who.check(Resource::Jobs, Access::Read)?;
    let list = jobs::list(&state.db.pool, page.limit(), page.offset()).await?;
    Ok(Json(
        list.into_iter()
            .map(|j| super::job_view::for_viewer(j, &who))
            .collect(),
    ))
}

/// A job with its per-peer results.
#[utoipa::path(get, operation_id = "get_job", path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Job>> {
    who.check(Resource::Jobs, Access::Read)?;
    jobs::get(&state.db.pool, id)
        .await?
        .map(|j| Json(super::job_view::for_viewer(j, &who)))
        .ok_or(ApiError::NotFound("job"))
}
