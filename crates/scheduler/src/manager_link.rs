//! The scheduler's link to the manager: register at start, keep alive every few seconds,
//! and apply the cluster config that every answer carries.
//!
//! The manager is never needed to schedule: until it answers, and whenever it cannot be
//! reached, the scheduler keeps the config it last applied (at first, its own file's).

use std::time::Duration;

use pollen_proto::manager::manager_client::ManagerClient;
use pollen_proto::manager::{SchedulerClusterConfig, SchedulerInfo, SchedulerKeepalive};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use crate::{EvaluatorConfig, SchedulerService};

/// Where the manager is and what to tell it.
#[derive(Clone, Debug)]
pub struct ManagerLink {
    /// The manager's gRPC URL (for logs).
    pub url: String,
    /// The manager's endpoint, TLS applied ([`pollen_tls::grpc_endpoint`]).
    pub endpoint: Endpoint,
    /// This scheduler's registration (cluster id 0: the default cluster).
    pub info: SchedulerInfo,
    /// Time between keepalives.
    pub keepalive_interval: Duration,
    /// The join token shown to the manager (not needed under mutual TLS with the scheduler
    /// role in this scheduler's certificate).
    pub join_token: Option<pollen_core::join::JoinToken>,
}

/// The evaluator config `base` with the manager's overrides applied.
pub fn apply(base: &EvaluatorConfig, c: &SchedulerClusterConfig) -> EvaluatorConfig {
    let mut e = base.clone();
    if c.candidate_parent_limit > 0 {
        e.candidate_limit = c.candidate_parent_limit as usize;
    }
    for (name, w) in &c.weights {
        if !(w.is_finite() && *w >= 0.0 && e.weights.set(name, *w)) {
            warn!(%name, weight = w, "ignoring an unknown or invalid weight from the manager");
        }
    }
    e
}

impl ManagerLink {
    /// Registers and keeps alive until `shutdown`, applying config changes to `service`.
    pub async fn run(self, service: SchedulerService, shutdown: CancellationToken) {
        let base = service.evaluator();
        let endpoint = self
            .endpoint
            .clone()
            .connect_timeout(Duration::from_secs(5));
        let mut client = ManagerClient::new(endpoint.connect_lazy());
        let mut applied: Option<SchedulerClusterConfig> = None;
        let mut backoff = pollen_core::reconnect::Reconnect::default();
        'register: loop {
            let state = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client.register_scheduler(self.request(self.info.clone())) => r,
            };
            let id = match state {
                Ok(s) => {
                    let s = s.into_inner();
                    info!(manager = %self.url, id = s.scheduler_id, cluster = s.scheduler_cluster_id, "registered with the manager");
                    self.apply_join_tokens(&service, s.seed_join_token_hashes);
                    self.apply_if_changed(&service, &base, s.config, &mut applied);
                    backoff.reset();
                    s.scheduler_id
                }
                Err(e) => {
                    warn!(manager = %self.url, error = %e.message(), "cannot register with the manager; retrying");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.keepalive_interval) => {}
                }
                let r = client
                    .keepalive_scheduler(self.request(SchedulerKeepalive { scheduler_id: id }))
                    .await;
                match r {
                    Ok(s) => {
                        let s = s.into_inner();
                        self.apply_join_tokens(&service, s.seed_join_token_hashes);
                        self.apply_if_changed(&service, &base, s.config, &mut applied);
                    }
                    Err(e) if e.code() == tonic::Code::NotFound => {
                        warn!(manager = %self.url, "the manager forgot this scheduler; registering again");
                        continue 'register;
                    }
                    Err(e) => {
                        warn!(manager = %self.url, error = %e.message(), "keepalive failed; keeping the last config");
                    }
                }
            }
        }
    }

    /// `msg` with this scheduler's join token attached.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        pollen_tls::with_join_token(msg, self.join_token.as_ref())
    }

    fn apply_join_tokens(&self, service: &SchedulerService, hashes: Vec<String>) {
        let n = hashes.len();
        if service.set_manager_seed_join_tokens(hashes.into_iter().collect()) {
            info!(tokens = n, "seed join tokens from the manager changed");
        }
    }

    fn apply_if_changed(
        &self,
        service: &SchedulerService,
        base: &EvaluatorConfig,
        config: Option<SchedulerClusterConfig>,
        applied: &mut Option<SchedulerClusterConfig>,
    ) {
        let Some(c) = config else { return };
        if applied.as_ref() == Some(&c) {
            return;
        }
        let e = apply(base, &c);
        info!(candidate_limit = e.candidate_limit, weights = ?e.weights, "applying the cluster config from the manager");
        service.set_evaluator(e);
        *applied = Some(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managers_config_overrides_only_what_it_names() {
        let base = EvaluatorConfig::default();
        let c = SchedulerClusterConfig {
            candidate_parent_limit: 3,
            weights: [("idc".to_string(), 0.9), ("bogus".to_string(), 1.0)]
                .into_iter()
                .collect(),
        };
        let e = apply(&base, &c);
        assert_eq!(e.candidate_limit, 3);
        assert_eq!(e.weights.idc, 0.9);
        assert_eq!(e.weights.load, base.weights.load);
        let e = apply(&base, &SchedulerClusterConfig::default());
        assert_eq!(e, base, "an empty config changes nothing");
    }
}
