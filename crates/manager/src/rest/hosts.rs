//! Schedulers and peers as the manager last saw them (read-only, but for an admin removing
//! a scheduler that is gone for good).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

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
