//! Request extractors: the authenticated caller, and JSON bodies whose errors read well.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::Principal;

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

/// A JSON body, read (within the body limit) but parsed only when the handler asks, after
/// it has checked the caller's rights: a refused caller learns nothing from a parse error.
pub struct Body<T> {
    bytes: Bytes,
    is_json: bool,
    _t: PhantomData<T>,
}

impl<T: DeserializeOwned> Body<T> {
    pub fn parse(&self) -> Result<T, ApiError> {
        if !self.is_json {
            return Err(ApiError::invalid(
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        serde_json::from_slice(&self.bytes)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

impl<S: Send + Sync, T> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        Ok(Self {
            bytes,
            is_json,
            _t: PhantomData,
        })
    }
}
