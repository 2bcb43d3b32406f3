//! Schedulers and peers as the manager last saw them (read-only, but for an admin removing
//! a scheduler that is gone for good).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use pollen_proto::manager::{command, HeldTask, ListTasks};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::AppState;
use crate::auth::{Access, Principal, Resource};
use crate::store::peers::{self, Peer};
use crate::store::schedulers::{self, Scheduler};
use crate::store::Page;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SchedulerQuery {
    /// Only this cluster's schedulers.
    pub scheduler_cluster_id: Option<i64>,
    /// Only active ones.
    #[serde(default)]
    pub active: bool,
}

#[utoipa::path(get, path = "/api/v1/schedulers", tag = "hosts", params(SchedulerQuery),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [Scheduler])))]
pub async fn list_schedulers(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(q): Query<SchedulerQuery>,
) -> ApiResult<Json<Vec<Scheduler>>> {
    who.check(Resource::Clusters, Access::Read)?;
    Ok(Json(
        schedulers::list(&state.db.pool, q.scheduler_cluster_id, q.active).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/schedulers/{id}", tag = "hosts",
    params(("id" = i64, Path, description = "Scheduler id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = Scheduler), (status = 404, body = ErrorBody)))]
pub async fn get_scheduler(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Scheduler>> {
    who.check(Resource::Clusters, Access::Read)?;
    schedulers::get(&state.db.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("scheduler"))
}

/// Forget a scheduler (it registers again if it is still running).
#[utoipa::path(delete, path = "/api/v1/schedulers/{id}", tag = "hosts",
    params(("id" = i64, Path, description = "Scheduler id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Forgotten"), (status = 404, body = ErrorBody)))]
pub async fn delete_scheduler(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Clusters, Access::Write)?;
    if !schedulers::delete(&state.db.pool, id).await? {
        return Err(ApiError::NotFound("scheduler"));
    }
    state.bump();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeerQuery {
    pub scheduler_cluster_id: Option<i64>,
    pub seed_peer_cluster_id: Option<i64>,
    /// Only seed peers (true) or only ordinary peers (false).
    pub seed: Option<bool>,
    /// Only active ones.
    #[serde(default)]
    pub active: bool,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/peers", tag = "hosts", params(PeerQuery),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [Peer])))]
pub async fn list_peers(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(q): Query<PeerQuery>,
) -> ApiResult<Json<Vec<Peer>>> {
    who.check(Resource::Peers, Access::Read)?;
    let page = Page {
        limit: q.limit,
        offset: q.offset,
    };
    let filter = peers::Filter {
        scheduler_cluster_id: q.scheduler_cluster_id,
        seed_peer_cluster_id: q.seed_peer_cluster_id,
        seed: q.seed,
        active_only: q.active,
    };
    Ok(Json(
        peers::list(&state.db.pool, filter, page.limit(), page.offset()).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/peers/{id}", tag = "hosts",
    params(("id" = i64, Path, description = "Peer id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = Peer), (status = 404, body = ErrorBody)))]
pub async fn get_peer(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Peer>> {
    who.check(Resource::Peers, Access::Read)?;
    peers::get(&state.db.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("peer"))
}

/// A task in a peer's cache, as the peer reports it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PeerTask {
    /// Hex task id.
    pub task_id: String,
    /// The URL it was first requested with.
    pub url: String,
    pub content_length: u64,
    pub piece_count: u32,
    pub pieces_present: u32,
    /// Every piece present and verified.
    pub complete: bool,
    /// Unix seconds of its last download or upload.
    pub last_access: u64,
    /// Fetched with credentials, or its URL carries a signature: the URL is shown whole only
    /// to admins (others see the origin's host and `<private>`).
    pub private: bool,
}

impl From<HeldTask> for PeerTask {
    fn from(t: HeldTask) -> Self {
        let private = t.private || super::job_view::url_carries_secret(&t.url);
        Self {
            task_id: t.task_id,
            url: t.url,
            content_length: t.content_length,
            piece_count: t.piece_count,
            pieces_present: t.pieces_present,
            complete: t.complete,
            last_access: t.last_access,
            private,
        }
    }
}

/// How long a peer has to list its tasks.
const LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The tasks in a peer's cache, asked of the peer now over its session.
#[utoipa::path(get, path = "/api/v1/peers/{id}/tasks", tag = "hosts",
    params(("id" = i64, Path, description = "Peer id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [PeerTask]), (status = 404, body = ErrorBody),
              (status = 503, description = "The peer is not connected or did not answer", body = ErrorBody)))]
pub async fn peer_tasks(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<PeerTask>>> {
    who.check(Resource::Peers, Access::Read)?;
    let peer = peers::get(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("peer"))?;
    if !state.hub.connected(&peer.host_id) {
        return Err(ApiError::Unavailable(format!(
            "{} is not connected to the manager",
            peer.hostname
        )));
    }
    let cmd = command::Command::ListTasks(ListTasks::default());
    let answer = state
        .hub
        .run(&peer.host_id, cmd, std::time::Duration::ZERO, LIST_TIMEOUT)
        .await
        .map_err(ApiError::Unavailable)?;
    let admin = who.role == crate::auth::Role::Admin;
    Ok(Json(
        answer
            .tasks
            .into_iter()
            .map(PeerTask::from)
            .map(|mut t| {
                if t.private && !admin {
                    t.url = super::job_view::hide(&t.url);
                }
                t
            })
            .collect(),
    ))
}
