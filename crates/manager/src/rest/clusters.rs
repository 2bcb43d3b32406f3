//! Scheduler clusters and seed-peer clusters. Everyone signed in may read them; only admins
//! change them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::{validate, AppState};
use crate::auth::{Access, Principal, Resource};
use crate::store::clusters::{
    self, ClusterScopes, SchedulerCluster, SchedulerClusterConfig, SchedulerClusterFields,
    SeedPeerCluster, SeedPeerClusterConfig,
};
use crate::store::{is_foreign_key_violation, is_unique_violation};

/// A scheduler cluster as written (create, or replace with PUT).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulerClusterInput {
    pub name: String,
    #[serde(default)]
    pub bio: String,
    #[serde(default)]
    pub scopes: ClusterScopes,
    #[serde(default)]
    pub config: SchedulerClusterConfig,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub seed_peer_cluster_ids: Vec<i64>,
}

/// A seed-peer cluster as written (create, or replace with PUT).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeedPeerClusterInput {
    pub name: String,
    #[serde(default)]
    pub bio: String,
    #[serde(default)]
    pub config: SeedPeerClusterConfig,
    #[serde(default)]
    pub scheduler_cluster_ids: Vec<i64>,
}

fn save_error(e: sqlx::Error, name: &str, kind: &str) -> ApiError {
    if is_unique_violation(&e) {
        ApiError::Conflict(format!("a {kind} named {name:?} already exists"))
    } else if is_foreign_key_violation(&e) {
        ApiError::invalid("a linked cluster id does not exist")
    } else {
        e.into()
    }
}

fn check_scheduler_cluster(c: &SchedulerClusterInput) -> ApiResult<()> {
    validate::name("name", &c.name)?;
    validate::text("bio", &c.bio, 1024)?;
    validate::scopes(&c.scopes)?;
    validate::scheduler_config(&c.config)
}

#[utoipa::path(get, path = "/api/v1/scheduler-clusters", tag = "clusters",
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [SchedulerCluster])))]
pub async fn list_scheduler_clusters(
    State(state): State<Arc<AppState>>,
    who: Principal,
) -> ApiResult<Json<Vec<SchedulerCluster>>> {
    who.check(Resource::Clusters, Access::Read)?;
    Ok(Json(
        clusters::list_scheduler_clusters(&state.db.pool).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/scheduler-clusters", tag = "clusters",
    request_body = SchedulerClusterInput, security(("token" = []), ("session" = [])),
    responses((status = 201, body = SchedulerCluster), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_scheduler_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<SchedulerClusterInput>,
) -> ApiResult<(StatusCode, Json<SchedulerCluster>)> {
    who.check(Resource::Clusters, Access::Write)?;
    let req = body.parse()?;
    let c = save_scheduler_cluster(&state, None, &req).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn save_scheduler_cluster(
    state: &AppState,
    id: Option<i64>,
    req: &SchedulerClusterInput,
) -> ApiResult<SchedulerCluster> {
    check_scheduler_cluster(req)?;
    let fields = SchedulerClusterFields {
        name: &req.name,
        bio: &req.bio,
        scopes: &req.scopes,
        config: &req.config,
        is_default: req.is_default,
        seed_peer_cluster_ids: &req.seed_peer_cluster_ids,
    };
    let id = clusters::save_scheduler_cluster(&state.db.pool, id, &fields)
        .await
        .map_err(|e| save_error(e, &req.name, "scheduler cluster"))?
        .ok_or(ApiError::NotFound("scheduler cluster"))?;
    state.bump();
    clusters::get_scheduler_cluster(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("scheduler cluster"))
}

#[utoipa::path(get, path = "/api/v1/scheduler-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Scheduler cluster id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = SchedulerCluster), (status = 404, body = ErrorBody)))]
pub async fn get_scheduler_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<SchedulerCluster>> {
    who.check(Resource::Clusters, Access::Read)?;
    clusters::get_scheduler_cluster(&state.db.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("scheduler cluster"))
}

/// Replace a scheduler cluster; its schedulers and daemons pick up the new config.
#[utoipa::path(put, path = "/api/v1/scheduler-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Scheduler cluster id")),
    request_body = SchedulerClusterInput, security(("token" = []), ("session" = [])),
    responses((status = 200, body = SchedulerCluster), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn replace_scheduler_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
    body: Body<SchedulerClusterInput>,
) -> ApiResult<Json<SchedulerCluster>> {
    who.check(Resource::Clusters, Access::Write)?;
    let req = body.parse()?;
    save_scheduler_cluster(&state, Some(id), &req)
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/scheduler-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Scheduler cluster id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Deleted with its schedulers"),
              (status = 404, body = ErrorBody)))]
pub async fn delete_scheduler_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Clusters, Access::Write)?;
    if !clusters::delete_scheduler_cluster(&state.db.pool, id).await? {
        return Err(ApiError::NotFound("scheduler cluster"));
    }
    state.bump();
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/seed-peer-clusters", tag = "clusters",
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [SeedPeerCluster])))]
pub async fn list_seed_peer_clusters(
    State(state): State<Arc<AppState>>,
    who: Principal,
) -> ApiResult<Json<Vec<SeedPeerCluster>>> {
    who.check(Resource::Clusters, Access::Read)?;
    Ok(Json(
        clusters::list_seed_peer_clusters(&state.db.pool).await?,
    ))
}

async fn save_seed_peer_cluster(
    state: &AppState,
    id: Option<i64>,
    req: &SeedPeerClusterInput,
) -> ApiResult<SeedPeerCluster> {
    validate::name("name", &req.name)?;
    validate::text("bio", &req.bio, 1024)?;
    if req.config.load_limit == 0 {
        return Err(ApiError::invalid("config.load_limit must be at least 1"));
    }
    let id = clusters::save_seed_peer_cluster(
        &state.db.pool,
        id,
        &req.name,
        &req.bio,
        &req.config,
        &req.scheduler_cluster_ids,
    )
    .await
    .map_err(|e| save_error(e, &req.name, "seed-peer cluster"))?
    .ok_or(ApiError::NotFound("seed-peer cluster"))?;
    state.bump();
    clusters::get_seed_peer_cluster(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("seed-peer cluster"))
}

#[utoipa::path(post, path = "/api/v1/seed-peer-clusters", tag = "clusters",
    request_body = SeedPeerClusterInput, security(("token" = []), ("session" = [])),
    responses((status = 201, body = SeedPeerCluster), (status = 400, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_seed_peer_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<SeedPeerClusterInput>,
) -> ApiResult<(StatusCode, Json<SeedPeerCluster>)> {
    who.check(Resource::Clusters, Access::Write)?;
    let req = body.parse()?;
    let c = save_seed_peer_cluster(&state, None, &req).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/v1/seed-peer-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Seed-peer cluster id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = SeedPeerCluster), (status = 404, body = ErrorBody)))]
pub async fn get_seed_peer_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<SeedPeerCluster>> {
    who.check(Resource::Clusters, Access::Read)?;
    clusters::get_seed_peer_cluster(&state.db.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("seed-peer cluster"))
}

#[utoipa::path(put, path = "/api/v1/seed-peer-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Seed-peer cluster id")),
    request_body = SeedPeerClusterInput, security(("token" = []), ("session" = [])),
    responses((status = 200, body = SeedPeerCluster), (status = 404, body = ErrorBody)))]
pub async fn replace_seed_peer_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
    body: Body<SeedPeerClusterInput>,
) -> ApiResult<Json<SeedPeerCluster>> {
    who.check(Resource::Clusters, Access::Write)?;
    let req = body.parse()?;
    save_seed_peer_cluster(&state, Some(id), &req)
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/api/v1/seed-peer-clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Seed-peer cluster id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_seed_peer_cluster(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Clusters, Access::Write)?;
    if !clusters::delete_seed_peer_cluster(&state.db.pool, id).await? {
        return Err(ApiError::NotFound("seed-peer cluster"));
    }
    state.bump();
    Ok(StatusCode::NO_CONTENT)
}
