//! Join tokens for schedulers and seeds (admins only): what a host shows, where there is no
//! mutual TLS, to register as a scheduler or claim to be a seed. The secret is in the answer
//! to the create call and nowhere else, ever.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::{validate, AppState};
use crate::auth::{secret, Access, Principal, Resource};
use crate::store::join_tokens::{self, JoinRole, JoinToken, NewJoinToken};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJoin {
    pub name: String,
    /// What a holder may claim to be: scheduler, seed, or both.
    pub roles: Vec<JoinRole>,
    /// Lifetime in days from now (1-3650); omit for a token that never expires.
    pub expires_in_days: Option<i64>,
}

/// A new join token and its secret, which is never shown again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedJoinToken {
    pub token: JoinToken,
    pub secret: String,
}

/// Every join token, revoked ones included.
#[utoipa::path(get, operation_id = "list_join_tokens", path = "/api/v1/join-tokens", tag = "join-tokens",
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [JoinToken]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
) -> ApiResult<Json<Vec<JoinToken>>> {
    // Admins only: whoever holds a token can become a seed or a scheduler.
    who.check(Resource::Clusters, Access::Write)?;
    Ok(Json(join_tokens::list(&state.db.pool).await?))
}

/// Create a join token; the response holds its secret, shown only this once.
#[utoipa::path(post, operation_id = "create_join_token", path = "/api/v1/join-tokens", tag = "join-tokens", request_body = NewJoin,
    security(("token" = []), ("session" = [])),
    responses((status = 201, body = CreatedJoinToken), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<NewJoin>,
) -> ApiResult<(StatusCode, Json<CreatedJoinToken>)> {
    who.check(Resource::Clusters, Access::Write)?;
    let req = body.parse()?;
    validate::name("name", &req.name)?;
    let mut roles = req.roles;
    roles.sort_by_key(|r| r.as_str());
    roles.dedup();
    if roles.is_empty() {
        return Err(ApiError::invalid(
            "roles must name at least one of scheduler, seed",
        ));
    }
    let expires_at = validate::expiry_in_days(req.expires_in_days)?;
    let (token, value) = mint(
        &state.db.pool,
        &req.name,
        &roles,
        Some(who.user_id),
        expires_at,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedJoinToken {
            token,
            secret: value,
        }),
    ))
}

/// Makes a token; returns it and its secret.
pub async fn mint(
    pool: &sqlx::AnyPool,
    name: &str,
    roles: &[JoinRole],
    created_by: Option<i64>,
    expires_at: Option<i64>,
) -> Result<(JoinToken, String), sqlx::Error> {
    let value = secret::generate(pollen_core::join::PREFIX);
    let token = join_tokens::create(
        pool,
        &NewJoinToken {
            name,
            roles,
            secret_hash: &pollen_core::join::hash(&value),
            hint: &secret::hint(&value),
            created_by,
            expires_at,
        },
    )
    .await?;
    Ok((token, value))
}

/// Revoke a join token at once: the manager refuses it from now on, and schedulers stop
/// accepting it at their next keepalive (a few seconds). Hosts already let in keep their
/// sessions until they reconnect.
#[utoipa::path(delete, operation_id = "revoke_join_token", path = "/api/v1/join-tokens/{id}", tag = "join-tokens",
    params(("id" = i64, Path, description = "Join token id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Clusters, Access::Write)?;
    if !join_tokens::revoke(&state.db.pool, id).await?
        && !join_tokens::exists(&state.db.pool, id).await?
    {
        return Err(ApiError::NotFound("join token"));
    }
    Ok(StatusCode::NO_CONTENT)
}
