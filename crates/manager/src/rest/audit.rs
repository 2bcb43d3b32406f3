//! Reading the audit log (admins only).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;

use super::error::{ApiResult, ErrorBody};
use super::AppState;
use crate::auth::{Access, Principal, Resource};
use crate::store::audit::{self, AuditEntry};
use crate::store::Page;

/// Every write, newest first.
#[utoipa::path(get, operation_id = "list_audit_log", path = "/api/v1/audit-log", tag = "audit", params(Page),
    security(("token" = []), ("session" = [])),
    responses((status = 200, body = [AuditEntry]), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    who: Principal,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    who.check(Resource::Audit, Access::Read)?;
    Ok(Json(
        audit::list(&state.db.pool, page.limit(), page.offset()).await?,
    ))
}
