//! Personal access tokens: each user sees and manages only their own (an admin may list
//! and revoke anyone's, to clean up after someone leaves).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::{validate, AppState};
use crate::auth::{secret, Access, Principal, Resource};
use crate::store::tokens::{self, Token};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    /// What the token may touch: clusters, peers, jobs, users, account, audit.
    pub scopes: Vec<Resource>,
    /// Lifetime in days from now (1-3650); omit for a token that never expires.
    pub expires_in_days: Option<i64>,
}

/// A new token and its secret, which is never shown again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: Token,
    pub secret: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Another user's tokens (admins only).
    pub user_id: Option<i64>,
}

/// The caller's tokens.
#[utoipa::path(get, operation_id = "list_tokens", path = "/api/v1/tokens", tag = "tokens", params(TokenQuery),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [Token]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(q): Query<TokenQuery>,
) -> ApiResult<Json<Vec<Token>>> {
    who.check(Resource::Account, Access::Read)?;
    let user = match q.user_id {
        Some(id) if id != who.user_id => {
            who.check(Resource::Users, Access::Read)?;
            id
        }
        _ => who.user_id,
    };
    Ok(Json(tokens::list_for_user(&state.db.pool, user).await?))
}

/// Create a token for the caller; the response holds its secret, shown only this once.
#[utoipa::path(post, operation_id = "create_token", path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    security(("token" = []), ("session" = [])),
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    who.check(Resource::Account, Access::Write)?;
    let req = body.parse()?;
    validate::name("name", &req.name)?;
    if req.scopes.is_empty() {
        return Err(ApiError::invalid("scopes must name at least one resource"));
    }
    let expires_at = validate::expiry_in_days(req.expires_in_days)?;
    let mut scopes = req.scopes;
    scopes.sort_by_key(|s| s.as_str());
    scopes.dedup();
    who.may_grant(&scopes)?;
    let value = secret::generate(secret::TOKEN_PREFIX);
    let token = tokens::create(
        &state.db.pool,
        who.user_id,
        &req.name,
        &secret::digest(&value),
        &secret::hint(&value),
        &scopes,
        expires_at,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            secret: value,
        }),
    ))
}

/// Revoke a token at once. Another user's token is "not found" unless the caller is an admin.
#[utoipa::path(delete, operation_id = "revoke_token", path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Account, Access::Write)?;
    let token = tokens::get(&state.db.pool, id)
        .await?
        .ok_or(ApiError::NotFound("token"))?;
    if token.user_id != who.user_id && who.check(Resource::Users, Access::Write).is_err() {
        return Err(ApiError::NotFound("token"));
    }
    tokens::revoke(&state.db.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
