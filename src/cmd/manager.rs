//! `pollen manager`: runs the control plane (REST API and console) until Ctrl-C or SIGTERM.
//!
//! Settings come from the defaults, then the TOML file given with `--config` (keys as in
//! `ManagerConfig`), then flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pollen_manager::{FirstAdmin, Manager, ManagerConfig};
use tokio_util::sync::CancellationToken;

/// Manager flags.
#[derive(Args, Debug)]
pub struct ManagerArgs {
    /// Address of the REST API and console (port 0 picks a free port; printed on stdout).
    #[arg(long, env = "POLLEN_MANAGER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the gRPC service for schedulers and daemons (port 0 picks a free port).
    #[arg(
        long,
        env = "POLLEN_MANAGER_GRPC_LISTEN",
        default_value = "0.0.0.0:65003"
    )]
    pub grpc_listen: SocketAddr,
    /// Database: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite file manager.db in --data-dir].
    #[arg(long, env = "POLLEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Directory for the SQLite file and the first admin's password
    /// [config default: /var/lib/pollen/manager].
    #[arg(long, env = "POLLEN_MANAGER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (session_ttl, keepalive_timeout, max_connections, …); flags win.
    #[arg(long, env = "POLLEN_MANAGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Password of the `admin` user created on an empty database. Prefer the environment
    /// variable (a flag shows in `ps`); without either, a random one is written to
    /// DATA_DIR/initial-admin-password.
    #[arg(long, env = "POLLEN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Mutual TLS on the gRPC port.
    #[command(flatten)]
    pub tls: super::tls_args::TlsArgs,
    /// Certificate chain (PEM) for HTTPS on the REST API and console port; with
    /// --rest-tls-key.
    #[arg(long, env = "POLLEN_MANAGER_REST_TLS_CERT", requires = "rest_tls_key")]
    pub rest_tls_cert: Option<PathBuf>,
    /// Private key (PEM) for HTTPS on the REST API and console port.
    #[arg(long, env = "POLLEN_MANAGER_REST_TLS_KEY", requires = "rest_tls_cert")]
    pub rest_tls_key: Option<PathBuf>,
}

impl ManagerArgs {
    pub fn resolve(&self) -> anyhow::Result<ManagerConfig> {
        let mut cfg: ManagerConfig = super::load_config(self.config.as_deref())?;
        if let Some(u) = &self.database_url {
            cfg.database_url = Some(u.clone());
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        cfg.tls = self.tls.apply(cfg.tls.take())?;
        if let (Some(cert), Some(key)) = (&self.rest_tls_cert, &self.rest_tls_key) {
            cfg.rest_tls = Some(pollen_manager::RestTls {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        Ok(cfg)
    }
}

pub(crate) async fn run(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve()?;
    let db = pollen_manager::db::redact(&cfg.database_url());
    let (manager, first) = Manager::open(cfg, args.admin_password.as_deref())
        .await
        .with_context(|| format!("cannot start the manager on {db}"))?;
    if let FirstAdmin::PasswordWrittenTo(path) = &first {
        println!(
            "created the user admin; its password is in {} (change it after signing in)",
            path.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let grpc = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.grpc_listen))?;
    // The REST address stays the last word: scripts and the cluster helper read it there.
    let how = if manager.grpc_tls() {
        " (mutual TLS)"
    } else {
        ""
    };
    let rest_how = if manager.rest_tls() { " (HTTPS)" } else { "" };
    println!(
        "manager ({db}) gRPC on {}{how} REST{rest_how} listening on {addr}",
        grpc.local_addr()?
    );
    if let Some(path) = manager.first_join_token() {
        println!(
            "created a join token for the first scheduler and seed in {} (--join-token-file; revoke it once others are issued)",
            path.display()
        );
    }
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        token.cancel();
    });
    manager.serve(listener, grpc, shutdown).await;
    Ok(ExitCode::SUCCESS)
}
