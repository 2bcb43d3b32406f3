//! `pollen certs dev`: a throwaway CA and certificates for trying mutual TLS on a test
//! cluster, and the flags that use them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// `pollen certs` subcommands.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Write a new CA and certificates for the manager, schedulers and daemons (valid 90
    /// days) for a test cluster. Not for production: issue those from your own PKI.
    Dev(DevArgs),
}

/// Where the certificates go and what they name.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory to write ca.pem, manager.pem, scheduler.pem, daemon.pem, seed.pem and their
    /// keys to (existing files are never overwritten).
    #[arg(long, default_value = "pollen-certs")]
    pub out: PathBuf,
    /// Extra host name or IP address the certificates are valid for (e.g. the scheduler's
    /// address); repeatable. localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
}

pub(crate) async fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    let CertsCommand::Dev(args) = cmd;
    let certs = pollen_tls::make_dev_certs(&args.out, &args.hosts)
        .with_context(|| format!("cannot write certificates to {}", args.out.display()))?;
    let (ca, m, s, d, seed) = (
        certs.ca_cert.display(),
        &certs.manager,
        &certs.scheduler,
        &certs.daemon,
        &certs.seed,
    );
    println!(
        "wrote a throwaway CA and certificates to {}",
        args.out.display()
    );
    println!(
        "manager:   pollen manager --tls-ca {ca} --tls-cert {} --tls-key {}",
        m.0.display(),
        m.1.display()
    );
    println!(
        "scheduler: pollen scheduler --tls-ca {ca} --tls-cert {} --tls-key {}",
        s.0.display(),
        s.1.display()
    );
    println!(
        "daemon:    pollen daemon --scheduler https://SCHEDULER:8002 (or --manager https://MANAGER:65003) --tls-ca {ca} --tls-cert {} --tls-key {}",
        d.0.display(),
        d.1.display()
    );
    println!(
        "seed:      pollen daemon --seed ... --tls-ca {ca} --tls-cert {} --tls-key {}   (only a certificate with the seed role may claim --seed)",
        seed.0.display(),
        seed.1.display()
    );
    Ok(ExitCode::SUCCESS)
}
