//! `pollen ca export`: prints the certificate of the CA the daemon's HTTPS proxy signs
//! intercepted hosts with, for the node to trust (e.g. into
//! /usr/local/share/ca-certificates/pollen.crt, then `update-ca-certificates`). The CA is
//! generated here if the daemon has not made it yet, in the same place it would.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use pollen_daemon::DaemonConfig;

/// `pollen ca` subcommands.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the proxy CA's certificate (PEM) on stdout.
    Export(ExportArgs),
}

/// Which daemon's CA.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The daemon's TOML config file (for `data_dir` and `proxy.ca_cert`).
    #[arg(long, env = "POLLEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The daemon's data directory [default: /var/lib/pollen/daemon].
    #[arg(long, env = "POLLEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

pub(crate) async fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    let CaCommand::Export(args) = cmd;
    let mut cfg: DaemonConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?
        }
        None => DaemonConfig::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    let (cert, _key) = pollen_daemon::proxy_ca(&cfg).context("cannot load the proxy CA")?;
    print!("{cert}");
    Ok(ExitCode::SUCCESS)
}
