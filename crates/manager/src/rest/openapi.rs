//! The OpenAPI 3 document of `/api/v1`, generated from the handlers' annotations so it
//! cannot drift from the routes.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{account, audit, clusters, hosts, jobs, join_tokens, system, tokens, users};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A personal access token (pln_…)"))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                super::layers::SESSION_COOKIE,
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Pollen manager API", description = "Clusters, peers, users, tokens and jobs of a Pollen deployment."),
    modifiers(&Security),
    paths(
        system::healthz, system::metrics, serve,
        account::sign_in, account::sign_out, account::me, account::change_password,
        tokens::list, tokens::create, tokens::revoke,
        join_tokens::list, join_tokens::create, join_tokens::revoke,
        users::list, users::create, users::get, users::update, users::delete,
        clusters::list_scheduler_clusters, clusters::create_scheduler_cluster,
        clusters::get_scheduler_cluster, clusters::replace_scheduler_cluster,
        clusters::delete_scheduler_cluster,
        clusters::list_seed_peer_clusters, clusters::create_seed_peer_cluster,
        clusters::get_seed_peer_cluster, clusters::replace_seed_peer_cluster,
        clusters::delete_seed_peer_cluster,
        hosts::list_schedulers, hosts::get_scheduler, hosts::delete_scheduler,
        hosts::list_peers, hosts::get_peer, hosts::peer_tasks,
        jobs::create, jobs::list, jobs::get,
        audit::list,
    ),
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(get, operation_id = "openapi", path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object)))]
pub async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
