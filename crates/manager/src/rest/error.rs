//! How the REST API says no: a status and a JSON `{"error": "…"}` a person can act on.
//! Database faults are logged and answered with a generic message, never the SQL.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::permission::Denied;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("sign in or send an access token (Authorization: Bearer pln_…)")]
    Unauthenticated,
    #[error("the access token is unknown, expired or revoked")]
    BadToken,
    #[error("wrong user name or password")]
    BadSignIn,
    #[error(transparent)]
    Forbidden(#[from] Denied),
    #[error("{0}")]
    ForbiddenWhy(&'static str),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("too many failed sign-ins or bad tokens from this address; try again in {0} s")]
    Throttled(u64),
    #[error("the database is unavailable; try again")]
    Database(#[from] sqlx::Error),
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated | Self::BadToken | Self::BadSignIn => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::ForbiddenWhy(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) | Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Database(e) = &self {
            tracing::error!(error = %e, "database error answering a request");
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut resp = (self.status(), Json(body)).into_response();
        if let Self::Throttled(secs) = self {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_fault_keeps_its_cause_but_answers_without_it() {
        let e = ApiError::from(sqlx::Error::Protocol("SELECT secret FROM users".into()));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            std::error::Error::source(&e).is_some_and(|s| s.is::<sqlx::Error>()),
            "the driver's error is the source: {e:?}"
        );
        // The client is told to retry, never shown the SQL.
        assert!(!e.to_string().contains("SELECT"), "{e}");
    }
}
