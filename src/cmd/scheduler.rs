//! `pollen scheduler`: runs the gRPC scheduler until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use pollen_scheduler::{EvaluatorConfig, SchedulerConfig, SchedulerService};
use tokio_util::sync::CancellationToken;

/// Scheduler flags.
#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, env = "POLLEN_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: SocketAddr,
    /// Most parents offered to one peer.
    #[arg(long, env = "POLLEN_MAX_PARENTS", default_value_t = 6)]
    pub max_parents: usize,
}

pub(crate) async fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("scheduler listening on {addr}");
    let shutdown = CancellationToken::new();
    let service = SchedulerService::new(SchedulerConfig {
        evaluator: EvaluatorConfig {
            max_parents: args.max_parents,
        },
        ..Default::default()
    });
    let token = shutdown.clone();
    tokio::spawn(async move {
        crate::signals::terminated().await;
        token.cancel();
    });
    service
        .serve(listener, shutdown)
        .await
        .context("scheduler server failed")?;
    Ok(ExitCode::SUCCESS)
}
