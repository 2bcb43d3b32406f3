//! Signing in and out of the console, and the caller's own account.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::Body;
use super::layers::{session_cookie, SESSION_COOKIE};
use super::AppState;
use crate::auth::permission::Credential;
use crate::auth::{password, secret, Access, Principal, Resource};
use crate::store::users::User;
use crate::store::{sessions, users};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// A hash to verify against when the user does not exist, so that an unknown name costs
/// as much time as a wrong password and names cannot be probed.
static DECOY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| password::hash("decoy-password-never-used").unwrap_or_default());

/// `; Secure` when the port speaks HTTPS: the browser then never sends the cookie in clear.
fn secure(state: &AppState) -> &'static str {
    if state.cfg.rest_tls.is_some() {
        "; Secure"
    } else {
        ""
    }
}

/// Sign in with a name and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/sessions", tag = "account", request_body = SignIn,
    responses((status = 201, description = "Signed in; the session cookie is set", body = User),
              (status = 401, description = "Wrong name or password", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    body: Body<SignIn>,
) -> ApiResult<Response> {
    let req = body.parse()?;
    let found = users::by_name_with_hash(&state.db.pool, &req.name).await?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), h),
        None => (None, DECOY_HASH.clone()),
    };
    let pw = req.password;
    let ok = tokio::task::spawn_blocking(move || password::verify(&pw, &hash))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => return Err(ApiError::BadSignIn),
    };
    let cookie = secret::generate("");
    let ttl = state.cfg.session_ttl.as_secs() as i64;
    let session_id =
        sessions::create(&state.db.pool, user.id, &secret::digest(&cookie), ttl).await?;
    let set = format!(
        "{SESSION_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/; Max-Age={ttl}{}",
        secure(&state)
    );
    // The audit log records who signed in.
    let who = Principal {
        user_id: user.id,
        name: user.name.clone(),
        role: user.role,
        credential: Credential::Session { session_id },
    };
    let mut resp = (StatusCode::CREATED, [(header::SET_COOKIE, set)], Json(user)).into_response();
    resp.extensions_mut().insert(who);
    Ok(resp)
}

/// Sign out: ends the current session and clears its cookie.
#[utoipa::path(delete, path = "/api/v1/sessions/current", tag = "account",
    responses((status = 204, description = "Signed out")))]
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(cookie) = session_cookie(&headers) {
        if let Some(s) = sessions::authenticate(&state.db.pool, &secret::digest(cookie)).await? {
            sessions::delete(&state.db.pool, s.session_id).await?;
        }
    }
    let clear = format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        secure(&state)
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("token" = []), ("session" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<Arc<AppState>>, who: Principal) -> ApiResult<Json<User>> {
    who.check(Resource::Account, Access::Read)?;
    users::get(&state.db.pool, who.user_id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("user"))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    pub new_password: String,
}

/// Change the caller's password; ends every other session.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "account", request_body = ChangePassword,
    security(("token" = []), ("session" = [])),
    responses((status = 204, description = "Changed"), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    who: Principal,
    body: Body<ChangePassword>,
) -> ApiResult<StatusCode> {
    who.check(Resource::Account, Access::Write)?;
    let req = body.parse()?;
    let hash = users::password_hash(&state.db.pool, who.user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let current = req.current_password;
    let new = req.new_password;
    let (ok, new_hash) = tokio::task::spawn_blocking(move || {
        (password::verify(&current, &hash), password::hash(&new))
    })
    .await
    .map_err(|_| ApiError::invalid("cannot hash the password"))?;
    if !ok {
        return Err(ApiError::ForbiddenWhy("the current password is wrong"));
    }
    let new_hash = new_hash.map_err(|e| ApiError::invalid(e.to_string()))?;
    users::set_password_hash(&state.db.pool, who.user_id, &new_hash).await?;
    let keep = match who.credential {
        Credential::Session { session_id } => Some(session_id),
        Credential::Token { .. } => None,
    };
    sessions::delete_for_user_except(&state.db.pool, who.user_id, keep).await?;
    Ok(StatusCode::NO_CONTENT)
}
