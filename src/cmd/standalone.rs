//! `pollen standalone`: a manager, a scheduler and a seed daemon in one process, for one
//! machine or a small cluster. Other daemons join with `pollen daemon --manager URL`.
//!
//! The three parts are the same code as the separate roles, wired on loopback: the scheduler
//! registers with the manager's default cluster, and the seed daemon gets its placement from
//! the manager like any other daemon. The seed's local API socket and registry mirror are the
//! usual daemon defaults, so `pollen get` and `pollen init` work on this machine unchanged.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pollen_daemon::{Daemon, DaemonConfig};
use pollen_manager::{FirstAdmin, Manager, ManagerConfig};
use pollen_scheduler::{ManagerLink, SchedulerConfig, SchedulerService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Standalone flags.
#[derive(Args, Debug)]
pub struct StandaloneArgs {
    /// Address of the manager's REST API and console.
    #[arg(long, env = "POLLEN_MANAGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the manager's gRPC service (other daemons join with --manager).
    #[arg(
        long,
        env = "POLLEN_MANAGER_GRPC_LISTEN",
        default_value = "127.0.0.1:65003"
    )]
    pub grpc_listen: SocketAddr,
    /// Address of the scheduler.
    #[arg(
        long,
        env = "POLLEN_SCHEDULER_LISTEN",
        default_value = "127.0.0.1:8002"
    )]
    pub scheduler_listen: SocketAddr,
    /// Address of the seed daemon's upload server.
    #[arg(long, env = "POLLEN_UPLOAD_LISTEN", default_value = "127.0.0.1:4100")]
    pub upload_listen: SocketAddr,
    /// The seed daemon's local API socket (what `pollen get` uses).
    #[arg(
        long,
        env = "POLLEN_API_SOCKET",
        default_value = "/run/pollen/daemon.sock"
    )]
    pub api_socket: PathBuf,
    /// The seed daemon's registry mirror and proxy address, or `off`.
    #[arg(long, env = "POLLEN_PROXY_LISTEN", default_value = "127.0.0.1:4001")]
    pub proxy_listen: String,
    /// Directory for the manager's database and the seed's cache.
    #[arg(
        long,
        env = "POLLEN_DATA_DIR",
        default_value = "/var/lib/pollen/standalone"
    )]
    pub data_dir: PathBuf,
    /// Database URL [default: SQLite in DATA_DIR/manager].
    #[arg(long, env = "POLLEN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Password of the `admin` user created on an empty database (see `pollen manager`).
    #[arg(long, env = "POLLEN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Fails, before anything starts, when a port the seed daemon will bind is taken or another
/// daemon answers on the API socket: nothing of the manager or the scheduler is made first.
async fn check_free(args: &StandaloneArgs, proxy: Option<SocketAddr>) -> anyhow::Result<()> {
    for (addr, what) in [
        (Some(args.upload_listen), "seed's upload server"),
        (proxy, "seed's registry mirror and proxy"),
    ] {
        if let Some(addr) = addr.filter(|a| a.port() != 0) {
            drop(bind(addr, what).await?);
        }
    }
    if tokio::net::UnixStream::connect(&args.api_socket)
        .await
        .is_ok()
    {
        anyhow::bail!(
            "another pollen daemon answers on {}: stop it, or give this one another --api-socket",
            args.api_socket.display()
        );
    }
    Ok(())
}

/// Where the console is and how to sign in to it.
fn console_hint(rest: SocketAddr, first: &FirstAdmin, manager_dir: &std::path::Path) -> String {
    let password = match first {
        FirstAdmin::PasswordWrittenTo(path) => {
            format!("the password in {} (made now)", path.display())
        }
        FirstAdmin::FromGivenPassword => "the password given (POLLEN_ADMIN_PASSWORD)".into(),
        FirstAdmin::AlreadyUsers => {
            let file = manager_dir.join("initial-admin-password");
            if file.exists() {
                format!("your password (the first one is in {})", file.display())
            } else {
                "your password".into()
            }
        }
    };
    format!("console: http://{rest}/ (sign in as admin with {password})")
}

pub(crate) async fn run(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let proxy_listen = match args.proxy_listen.as_str() {
        "off" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .with_context(|| format!("--proxy-listen {a:?} is not an address or `off`"))?,
        ),
    };
    // Every address and the socket first: a taken one fails the start before the manager
    // makes its database or the scheduler listens.
    check_free(&args, proxy_listen).await?;
    let rest = bind(args.listen, "manager").await?;
    let grpc = bind(args.grpc_listen, "manager's gRPC").await?;
    let sched = bind(args.scheduler_listen, "scheduler").await?;

    let cfg = ManagerConfig {
        database_url: args.database_url.clone(),
        data_dir: args.data_dir.join("manager"),
        ..Default::default()
    };
    let (manager, first) = Manager::open(cfg, args.admin_password.as_deref())
        .await
        .context("cannot start the manager")?;
    // The scheduler and seed inside show a token of their own, made anew at each start.
    let own_token = manager
        .replace_join_token(
            "standalone",
            &[
                pollen_manager::JoinRole::Scheduler,
                pollen_manager::JoinRole::Seed,
            ],
        )
        .await
        .context("cannot make the standalone join token")?;
    let own_token = pollen_core::join::JoinToken::parse(&own_token)?;
    let first_join_token = manager.first_join_token().map(|p| p.to_path_buf());
    let rest_addr = rest.local_addr()?;
    let grpc_url = format!("http://{}", grpc.local_addr()?);
    let manager_task = tokio::spawn(manager.serve(rest, grpc, shutdown.clone()));

    let sched_addr = sched.local_addr()?;
    let scheduler = SchedulerService::new(SchedulerConfig::default());
    let link = ManagerLink {
        url: grpc_url.clone(),
        endpoint: pollen_tls::grpc_endpoint("manager", &grpc_url, None)?,
        info: pollen_proto::manager::SchedulerInfo {
            scheduler_cluster_id: 0,
            hostname: "standalone".into(),
            ip: sched_addr.ip().to_string(),
            port: u32::from(sched_addr.port()),
            url: format!("http://{sched_addr}"),
            idc: String::new(),
            location: String::new(),
        },
        keepalive_interval: Duration::from_secs(5),
        join_token: Some(own_token.clone()),
    };
    tokio::spawn(link.run(scheduler.clone(), shutdown.clone()));
    let sched_task = tokio::spawn(scheduler.serve(sched, shutdown.clone()));

    let mut daemon = DaemonConfig {
        manager: Some(grpc_url.clone()),
        // Used until the manager's first placement arrives.
        scheduler: Some(format!("http://{sched_addr}")),
        seed: true,
        data_dir: args.data_dir.join("seed"),
        join_token: Some(own_token),
        upload_listen: args.upload_listen,
        api_socket: args.api_socket.clone(),
        // With every port on loopback no other host can order a download, so the seed may
        // read loopback origins as the local user could; once one listens wider, it refuses
        // them like any seed peer.
        origin_allow: if [args.grpc_listen, args.scheduler_listen, args.upload_listen]
            .iter()
            .all(|a| a.ip().is_loopback())
        {
            vec!["127.0.0.0/8".into(), "::1/128".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    daemon.proxy.listen = proxy_listen;
    let seed = Daemon::start(daemon)
        .await
        .context("cannot start the seed daemon")?;
    let proxy = seed
        .proxy_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    println!(
        "standalone ready grpc={grpc_url} scheduler=http://{sched_addr} upload={} proxy={proxy} socket={} manager=http://{rest_addr}",
        seed.upload_addr,
        seed.api_socket.display(),
    );
    println!(
        "{}",
        console_hint(rest_addr, &first, &args.data_dir.join("manager"))
    );
    if let Some(path) = first_join_token {
        println!(
            "created a join token for other schedulers and seeds in {} (--join-token-file)",
            path.display()
        );
    }
    crate::signals::terminated().await;
    seed.shutdown().await;
    shutdown.cancel();
    let _ = sched_task.await;
    let _ = manager_task.await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_hint_says_where_to_sign_in_and_with_what() {
        let rest: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let dir = tempfile::tempdir().expect("tmp");
        let made = console_hint(
            rest,
            &FirstAdmin::PasswordWrittenTo(dir.path().join("initial-admin-password")),
            dir.path(),
        );
        assert!(
            made.starts_with(
                "console: http://127.0.0.1:8080/ (sign in as admin with the password in "
            ),
            "{made}"
        );
        assert!(made.contains("initial-admin-password (made now)"), "{made}");
        let given = console_hint(rest, &FirstAdmin::FromGivenPassword, dir.path());
        assert!(given.contains("POLLEN_ADMIN_PASSWORD"), "{given}");
        assert!(console_hint(rest, &FirstAdmin::AlreadyUsers, dir.path())
            .ends_with("with your password)"));
        std::fs::write(dir.path().join("initial-admin-password"), "x").expect("file");
        let later = console_hint(rest, &FirstAdmin::AlreadyUsers, dir.path());
        assert!(later.contains("the first one is in "), "{later}");
    }
}
