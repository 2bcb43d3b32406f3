//! The REST API under `/api/v1`, plus `/healthz`, `/metrics` and the console's files.
//!
//! Handlers are grouped by resource, one module each; every one of them checks what the
//! caller may do with [`crate::auth::Principal::check`] before touching the database.

pub mod account;
pub mod audit;
pub mod clusters;
pub mod console;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod job_view;
pub mod jobs;
pub mod join_tokens;
pub mod layers;
pub mod openapi;
pub mod system;
pub mod tokens;
pub mod users;
pub mod validate;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::config::ManagerConfig;
use crate::db::Db;
use crate::metrics::Metrics;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler shares.
pub struct AppState {
    pub db: Db,
    pub cfg: ManagerConfig,
    pub metrics: Arc<Metrics>,
    /// Bumped when clusters or schedulers change, so connected schedulers and daemons get
    /// fresh placement and config.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// The newest session number of each connected daemon (by host id), so a session that
    /// ends after its daemon reconnected does not mark it inactive.
    pub daemon_sessions: std::sync::Mutex<(u64, std::collections::HashMap<String, u64>)>,
    /// Connected daemons and the commands in flight to them.
    pub hub: crate::hub::Hub,
    /// Wakes the job runner when a job is created.
    pub jobs_added: tokio::sync::Notify,
    /// Failed sign-ins and bad tokens per client address.
    pub throttle: crate::auth::throttle::Throttle,
    /// Seals job secrets before they are stored.
    pub secrets: crate::auth::sealed::SecretBox,
}

impl AppState {
    pub fn bump(&self) {
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Records a new session of `host_id`; returns its number.
    pub fn open_daemon_session(&self, host_id: &str) -> u64 {
        let mut s = self
            .daemon_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        let n = s.0;
        s.1.insert(host_id.to_string(), n);
        n
    }

    /// Ends session `n` of `host_id`; true when it was the daemon's newest (it is gone).
    pub fn close_daemon_session(&self, host_id: &str, n: u64) -> bool {
        let mut s = self
            .daemon_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if s.1.get(host_id) == Some(&n) {
            s.1.remove(host_id);
            true
        } else {
            false
        }
    }
}

/// All routes.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/api/v1/sessions", post(account::sign_in))
        .route("/api/v1/sessions/current", delete(account::sign_out))
        .route("/api/v1/me", get(account::me))
        .route("/api/v1/me/password", put(account::change_password))
        .route("/api/v1/tokens", get(tokens::list).post(tokens::create))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route(
            "/api/v1/join-tokens",
            get(join_tokens::list).post(join_tokens::create),
        )
        .route("/api/v1/join-tokens/{id}", delete(join_tokens::revoke))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route(
            "/api/v1/users/{id}",
            get(users::get).patch(users::update).delete(users::delete),
        )
        .route(
            "/api/v1/scheduler-clusters",
            get(clusters::list_scheduler_clusters).post(clusters::create_scheduler_cluster),
        )
        .route(
            "/api/v1/scheduler-clusters/{id}",
            get(clusters::get_scheduler_cluster)
                .put(clusters::replace_scheduler_cluster)
                .delete(clusters::delete_scheduler_cluster),
        )
        .route(
            "/api/v1/seed-peer-clusters",
            get(clusters::list_seed_peer_clusters).post(clusters::create_seed_peer_cluster),
        )
        .route(
            "/api/v1/seed-peer-clusters/{id}",
            get(clusters::get_seed_peer_cluster)
                .put(clusters::replace_seed_peer_cluster)
                .delete(clusters::delete_seed_peer_cluster),
        )
        .route("/api/v1/schedulers", get(hosts::list_schedulers))
        .route(
            "/api/v1/schedulers/{id}",
            get(hosts::get_scheduler).delete(hosts::delete_scheduler),
        )
        .route("/api/v1/peers", get(hosts::list_peers))
        .route("/api/v1/peers/{id}", get(hosts::get_peer))
        .route("/api/v1/peers/{id}/tasks", get(hosts::peer_tasks))
        .route("/api/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/audit-log", get(audit::list))
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            layers::audit,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            layers::authenticate,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            layers::count,
        ));
    // The console's files need no credential: what it shows comes from the API.
    let console = Router::new()
        .route("/", get(console::to_console))
        .route("/console", get(console::to_console))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::file));
    api.merge(console)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
