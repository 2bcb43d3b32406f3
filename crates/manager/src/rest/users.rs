//! User accounts (admins only). The last active admin can be neither demoted, disabled nor
//! deleted, so the manager can never lock itself out.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::{validate, AppState};
use crate::auth::{password, Access, Principal, Resource, Role};
use crate::store::users::{self, User};
use crate::store::{is_unique_violation, sessions, Page};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub email: String,
    pub role: Role,
    pub password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub email: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    /// A new password (an admin's reset); ends the user's sessions.
    pub password: Option<String>,
}

async fn hash(pw: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|_| ApiError::invalid("cannot hash the password"))?
        .map_err(|e| ApiError::invalid(e.to_string()))
}

#[utoipa::path(get, operation_id = "list_users", path = "/api/v1/users", tag = "users", params(Page),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [User]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<User>>> {
    who.check(Resource::Users, Access::Read)?;
    Ok(Json(
        users::list(&state.db.pool, page.limit(), page.offset()).await?,
    ))
}

#[utoipa::path(post, operation_id = "create_user", path = "/api/v1/users", tag = "users", request_body = NewUser,
    security(("token" = []), ("session" = [])),
    responses((status = 201, body = User), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    who.check(Resource::Users, Access::Write)?;
    let req = body.parse()?;
    validate::name("name", &req.name)?;
    validate::text("email", &req.email, 254)?;
    let h = hash(req.password).await?;
    match users::create(&state.db.pool, &req.name, &req.email, req.role, &h).await {
        Ok(u) => Ok((StatusCode::CREATED, Json(u))),
        Err(e) if is_unique_violation(&e) => Err(ApiError::Conflict(format!(
            "a user named {:?} already exists",
            req.name
        ))),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(get, operation_id = "get_user", path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = User), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<Json<User>> {
    who.check(Resource::Users, Access::Read)?;
    users::get(&state.db.pool, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

/// Refuses a change that would leave no active admin.
async fn keep_an_admin(state: &AppState, target: &User, demoted: bool) -> ApiResult<()> {
    if demoted
        && target.role == Role::Admin
        && !target.disabled
        && users::active_admins(&state.db.pool).await? <= 1
    {
        return Err(ApiError::Conflict(
            "this is the last active admin; make another admin first".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(patch, operation_id = "update_user", path = "/api/v1/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = i64, Path, description = "User id")),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = User), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
    body: Body<UserPatch>,
) -> ApiResult<Json<User>> {
    who.check(Resource::Users, Access::Write)?;
    let req = body.parse()?;
    let target = users::get(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if let Some(e) = &req.email {
        validate::text("email", e, 254)?;
    }
    let demoted = req.role.is_some_and(|r| r != Role::Admin) || req.disabled == Some(true);
    keep_an_admin(&state, &target, demoted).await?;
    if let Some(pw) = req.password {
        let h = hash(pw).await?;
        users::set_password_hash(&state.db.pool, id, &h).await?;
        sessions::delete_for_user_except(&state.db.pool, id, None).await?;
    }
    if req.disabled == Some(true) {
        sessions::delete_for_user_except(&state.db.pool, id, None).await?;
    }
    users::update(
        &state.db.pool,
        id,
        req.email.as_deref(),
        req.role,
        req.disabled,
    )
    .await?
    .map(Json)
    .ok_or(ApiError::NotFound("user"))
}

#[utoipa::path(delete, operation_id = "delete_user", path = "/api/v1/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Deleted with its tokens and sessions"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Users, Access::Write)?;
    let target = users::get(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    keep_an_admin(&state, &target, true).await?;
    users::delete(&state.db.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
