//! `pollen scheduler`: runs the gRPC scheduler until Ctrl-C or SIGTERM.
//!
//! Settings come from the defaults, then the TOML file given with `--config` (keys as in
//! `SchedulerConfig`: `seed_patience`, `task_ttl`, `[evaluator]`, `[evaluator.weights]`),
//! then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pollen_scheduler::{SchedulerConfig, SchedulerService};
use tokio_util::sync::CancellationToken;

/// Scheduler flags.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "POLLEN_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: SocketAddr,
    /// TOML config file (evaluator weights, candidate limit, timeouts); flags win over it.
    #[arg(long, env = "POLLEN_SCHEDULER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Candidate parents offered to one peer (K) [config default: 6].
    #[arg(long, alias = "max-parents", env = "POLLEN_CANDIDATE_LIMIT")]
    pub candidate_limit: Option<usize>,
    #[command(flatten)]
    pub tls: super::tls_args::TlsArgs,
    /// The manager's gRPC URL: register there, keep alive, and take the cluster's config.
    #[arg(long, env = "POLLEN_MANAGER")]
    pub manager: Option<String>,
    /// Scheduler cluster this scheduler serves [default: the manager's default cluster].
    #[arg(long, env = "POLLEN_SCHEDULER_CLUSTER_ID", default_value_t = 0)]
    pub cluster_id: i64,
    /// URL daemons dial to reach this scheduler [default: from --listen, which must then
    /// name an address rather than 0.0.0.0].
    #[arg(long, env = "POLLEN_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// File holding the join token this scheduler shows the manager (from the manager's
    /// `initial-join-token` or `POST /api/v1/join-tokens` with role `scheduler`); not needed
    /// under mutual TLS with the scheduler role in the certificate.
    #[arg(long, env = "POLLEN_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// File of the join tokens a daemon may show to claim to be a seed here, besides those
    /// the manager lists: one per line, the token or `sha256:HEX` of it (for a scheduler
    /// without a manager).
    #[arg(long, env = "POLLEN_SEED_JOIN_TOKENS")]
    pub seed_join_tokens: Option<PathBuf>,
    /// Let any plain-TCP daemon claim to be a seed without a join token (only where every
    /// host on the network is trusted) [config: open_join, default false].
    #[arg(long)]
    pub open_join: bool,
    /// Under mutual TLS, refuse daemons whose certificate does not name their host id
    /// (`pollen certs issue --host-id`) [config: require_host_certificates, default false].
    #[arg(long)]
    pub require_host_certificates: bool,
    /// Address of the metrics listener (`/metrics`, `/healthz`; port 0 picks one, logged at
    /// start) [default: none].
    #[arg(long, env = "POLLEN_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Time between keepalives to the manager.
    #[arg(long, env = "POLLEN_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = pollen_core::duration::parse_duration)]
    pub keepalive_interval: std::time::Duration,
}

impl SchedulerArgs {
    /// Defaults, then the config file, then the flags.
    pub fn resolve(&self) -> anyhow::Result<SchedulerConfig> {
        let mut cfg: SchedulerConfig = super::load_config(self.config.as_deref())?;
        if let Some(k) = self.candidate_limit {
            cfg.evaluator.candidate_limit = k;
        }
        cfg.tls = self.tls.apply(cfg.tls.take())?;
        cfg.open_join |= self.open_join;
        cfg.require_host_certificates |= self.require_host_certificates;
        if cfg.evaluator.candidate_limit == 0 {
            anyhow::bail!("the candidate limit must be at least 1");
        }
        Ok(cfg)
    }
}

pub(crate) async fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve()?;
    // Token files are read before the ready line, so a bad one stops the start.
    let seed_tokens = match &args.seed_join_tokens {
        Some(p) => Some(pollen_core::join::read_accepted(p)?),
        None => None,
    };
    let join_token = match &args.join_token_file {
        Some(p) => Some(pollen_core::join::JoinToken::read(p)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &cfg.tls {
        Some(t) => Some(
            pollen_tls::Material::load(t)
                .and_then(|m| m.server_config(&[b"h2"]))
                .context("cannot set up mutual TLS")?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let service = SchedulerService::new(cfg.clone());
    if let Some(addr) = args.metrics_listen {
        let svc = service.clone();
        let bound =
            super::metrics_listener::serve(addr, move || svc.metrics_text(), shutdown.clone())
                .await?;
        tracing::info!(addr = %bound, "metrics listening");
    }
    // The address stays the last word: scripts and the cluster helper read it from there.
    let how = if tls.is_some() { " (mutual TLS)" } else { "" };
    println!("scheduler{how} listening on {addr}");
    if let Some(hashes) = seed_tokens {
        tracing::info!(
            tokens = hashes.len(),
            "accepting the seed join tokens of {}",
            args.seed_join_tokens
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        );
        service.accept_seed_join_tokens(hashes);
    }
    if cfg.open_join {
        tracing::warn!("open_join: any plain-TCP daemon may claim to be a seed without a join token; only for networks whose hosts are all trusted");
    }
    if let Some(url) = &args.manager {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise = match &args.advertise_url {
            Some(u) => u.clone(),
            None if addr.ip().is_unspecified() => anyhow::bail!(
                "--manager needs --advertise-url when listening on {addr}: daemons must be told an address they can dial"
            ),
            None => format!("{scheme}://{addr}"),
        };
        let client_tls = match &cfg.tls {
            Some(t) => Some(
                pollen_tls::Material::load(t)
                    .map(|m| m.tonic_client())
                    .context("cannot set up mutual TLS to the manager")?,
            ),
            None => None,
        };
        let link = pollen_scheduler::ManagerLink {
            url: url.clone(),
            endpoint: pollen_tls::grpc_endpoint("manager", url, client_tls)?,
            info: pollen_proto::manager::SchedulerInfo {
                scheduler_cluster_id: args.cluster_id,
                hostname: pollen_core::host::hostname(),
                ip: addr.ip().to_string(),
                port: u32::from(addr.port()),
                url: advertise,
                idc: String::new(),
                location: String::new(),
            },
            keepalive_interval: args.keepalive_interval,
            join_token,
        };
        tokio::spawn(link.run(service.clone(), shutdown.clone()));
    }
    let token = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        token.cancel();
    });
    service
        .serve_with_tls(listener, tls, shutdown)
        .await
        .context("scheduler server failed")?;
    Ok(ExitCode::SUCCESS)
}
