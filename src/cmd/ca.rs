//! `pollen ca export`: prints the certificate of the CA the daemon's HTTPS proxy signs
//! intercepted hosts with, for the node to trust (e.g. into
//! /usr/local/share/ca-certificates/pollen.crt, then `update-ca-certificates`). It never
//! makes a CA: one exported before the daemon made its own (or from the wrong data
//! directory) would be a CA the proxy never signs with.

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
    let Some((_, cert)) = pollen_daemon::proxy_ca_cert(&cfg).context("cannot load the proxy CA")?
    else {
        anyhow::bail!(
            "no proxy CA under {} yet: the daemon makes it on its first start with this data directory; start it, or point --data-dir (or --config) at the daemon's own",
            cfg.data_dir.join("proxy").display()
        );
    };
    print!("{cert}");
    Ok(ExitCode::SUCCESS)
}
