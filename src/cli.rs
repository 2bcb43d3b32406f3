//! Argument parsing and dispatch. Every flag has `--help` text and a `POLLEN_*` variable.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;

/// Pollen: peer-to-peer distribution of container images, large files and AI models.
#[derive(Parser, Debug)]
#[command(name = "pollen", version, about, long_about = None)]
pub struct Cli {
    /// Log more (debug level); errors print their whole cause chain, one cause a line (POLLEN_BACKTRACE=1 adds a backtrace).
    #[arg(short, long, global = true, env = "POLLEN_VERBOSE")]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The roles and commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the manager: clusters, users and tokens, jobs, REST API and console.
    Manager(cmd::manager::ManagerArgs),
    /// Run a manager, a scheduler and a seed daemon in one process, for one machine.
    Standalone(cmd::standalone::StandaloneArgs),
    /// Run the scheduler (gRPC), which tells every peer where to download from.
    Scheduler(cmd::scheduler::SchedulerArgs),
    /// Run a peer daemon (`--seed` for a seed peer).
    Daemon(Box<cmd::daemon::DaemonArgs>),
    /// Download a URL through the local daemon.
    Get(cmd::get::GetArgs),
    /// Show the local daemon: its scheduler link, cache, traffic and recent tasks.
    Status(cmd::status::StatusArgs),
    /// The local daemon's cache by task: ls, stat, rm.
    #[command(subcommand)]
    Cache(cmd::cache::CacheCommand),
    /// Start an origin, a scheduler, a seed and N peers on this machine and distribute a file.
    Demo(cmd::demo::DemoArgs),
    /// Fetch an image's blobs (by reference) into the local daemon's cache ahead of pulls.
    Preheat(cmd::preheat::PreheatArgs),
    /// Point a container runtime (containerd, docker, crio, podman) at the local mirror.
    Init(cmd::init::InitArgs),
    /// The HTTPS proxy's certificate authority.
    #[command(subcommand)]
    Ca(cmd::ca::CaCommand),
    /// Certificates for mutual TLS between roles.
    #[command(subcommand)]
    Certs(cmd::certs::CertsCommand),
}

fn init_tracing(default: &str, verbose: bool) {
    let filter = if verbose {
        tracing_subscriber::EnvFilter::new("debug,h2=info,hyper=info,tower=info")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("POLLEN_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Runs the command line and maps the outcome to an exit code, printing one clear line on error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Manager(_)
        | Command::Standalone(_)
        | Command::Scheduler(_)
        | Command::Daemon(_) => "info",
        Command::Get(_)
        | Command::Status(_)
        | Command::Cache(_)
        | Command::Demo(_)
        | Command::Init(_)
        | Command::Preheat(_)
        | Command::Ca(_)
        | Command::Certs(_) => "warn",
    };
    init_tracing(default_log, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Manager(a) => cmd::manager::run(a).await,
            Command::Standalone(a) => cmd::standalone::run(a).await,
            Command::Scheduler(a) => cmd::scheduler::run(a).await,
            Command::Daemon(a) => cmd::daemon::run(*a).await,
            Command::Get(a) if a.recursive => cmd::get_dir::run(a).await,
            Command::Get(a) => cmd::get::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Cache(c) => cmd::cache::run(c).await,
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::Init(a) => cmd::init::run(a).await,
            Command::Preheat(a) => cmd::preheat::run(a).await,
            Command::Ca(c) => cmd::ca::run(c).await,
            Command::Certs(c) => cmd::certs::run(c).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", error_report(&e, cli.verbose));
            // A backtrace only when asked for by name: RUST_BACKTRACE is often set for other
            // programs, and a 404 is no place for thirty frames.
            if std::env::var_os("POLLEN_BACKTRACE").is_some_and(|v| v == "1") {
                eprintln!("{}", e.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}

/// How an error is shown: one line with its causes joined, or with `verbose` one cause per
/// line. Never a backtrace (see `POLLEN_BACKTRACE`).
fn error_report(e: &anyhow::Error, verbose: bool) -> String {
    if !verbose {
        return format!("error: {e:#}");
    }
    let mut out = format!("error: {e}");
    for cause in e.chain().skip(1) {
        out.push_str(&format!("\n  caused by: {cause}"));
    }
    out
}

#[cfg(test)]
mod error_report_tests {
    #[test]
    fn errors_show_their_causes_and_no_backtrace() {
        let e = anyhow::anyhow!("404 Not Found").context("origin failed");
        assert_eq!(
            super::error_report(&e, false),
            "error: origin failed: 404 Not Found"
        );
        assert_eq!(
            super::error_report(&e, true),
            "error: origin failed\n  caused by: 404 Not Found"
        );
    }
}
