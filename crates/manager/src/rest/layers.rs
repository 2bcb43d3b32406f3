//! What wraps every API route: who is calling, a request counter, and the audit record of
//! every write.
//!
//! Order (outermost first): metrics → authenticate → audit → handler. Authentication only
//! identifies the caller; each handler decides what that caller may do.

use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::auth::permission::Credential;
use crate::auth::{secret, Principal};
use crate::store::{audit, sessions, tokens};

/// Name of the console's session cookie.
pub const SESSION_COOKIE: &str = "pollen_session";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// Resolves the caller from a bearer token or a session cookie. A token that is presented
/// but not valid is an error; no credential at all is simply an anonymous request.
async fn resolve(state: &AppState, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let text = auth.to_str().map_err(|_| ApiError::BadToken)?;
        let Some(token) = text.strip_prefix("Bearer ") else {
            return Err(ApiError::invalid(
                "the Authorization header must be `Bearer <access token>`",
            ));
        };
        let found = tokens::authenticate(&state.db.pool, &secret::digest(token.trim())).await?;
        let Some((t, name, role)) = found else {
            return Err(ApiError::BadToken);
        };
        return Ok(Some(Principal {
            user_id: t.user_id,
            name,
            role,
            credential: Credential::Token {
                token_id: t.id,
                scopes: t.scopes,
            },
        }));
    }
    if let Some(cookie) = session_cookie(headers) {
        if let Some(s) = sessions::authenticate(&state.db.pool, &secret::digest(cookie)).await? {
            return Ok(Some(Principal {
                user_id: s.user_id,
                name: s.name,
                role: s.role,
                credential: Credential::Session {
                    session_id: s.session_id,
                },
            }));
        }
    }
    Ok(None)
}

pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let credentialed = req.headers().contains_key(header::AUTHORIZATION)
        || session_cookie(req.headers()).is_some()
        || (req.method() == Method::POST && req.uri().path() == "/api/v1/sessions");
    if let Some(ip) = client.filter(|_| credentialed) {
        if let Some(wait) = state.throttle.wait(ip, Instant::now()) {
            return ApiError::Throttled(wait.as_secs().max(1)).into_response();
        }
    }
    let resp = match resolve(&state, req.headers()).await {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(e) => e.into_response(),
    };
    if let Some(ip) = client.filter(|_| resp.status() == StatusCode::UNAUTHORIZED) {
        tracing::info!(client = %ip, "failed sign-in or bad credential");
        state.throttle.failed(ip, Instant::now());
    }
    resp
}

/// Records every write (anything but GET and HEAD) once it has been answered.
pub async fn audit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let target = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| target.clone());
    let who = req.extensions().get::<Principal>().cloned();
    let resp = next.run(req).await;
    // A sign-in names its user on the response.
    let who = who.or_else(|| resp.extensions().get::<Principal>().cloned());
    let entry = audit::NewEntry {
        user_id: who.as_ref().map(|p| p.user_id),
        user_name: who.as_ref().map(|p| p.name.as_str()).unwrap_or(""),
        method: &method,
        route: &route,
        target: &target,
        status: resp.status().as_u16(),
    };
    if let Err(e) = audit::record(&state.db.pool, entry).await {
        tracing::error!(error = %e, %method, %target, "cannot write the audit log");
    }
    resp
}

/// Counts requests by method, route template and status.
pub async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    state
        .metrics
        .request(&method, &route, resp.status().as_u16());
    resp
}
