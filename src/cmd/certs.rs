//! `pollen certs dev`: a throwaway CA and certificates for trying mutual TLS on a test
//! cluster, and the flags that use them; `pollen certs issue`: a certificate bound to one
//! host, from an existing CA.

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
    /// Issue a certificate bound to one host (`urn:pollen:host:ID`) with an existing CA (for
    /// example the dev CA): the daemon holding it takes that host id, and schedulers refuse
    /// any other connection speaking for that host.
    Issue(IssueArgs),
}

/// What certificate to issue, and with which CA.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The CA certificate (PEM).
    #[arg(long)]
    pub ca_cert: PathBuf,
    /// The CA's private key (PEM).
    #[arg(long)]
    pub ca_key: PathBuf,
    /// The host id the certificate is bound to (1 to 255 visible ASCII characters).
    #[arg(long)]
    pub host_id: String,
    /// What the host may be: `peer`, or `seed` (a seed peer) [default: peer].
    #[arg(long, default_value = "peer", value_parser = ["peer", "seed"])]
    pub role: String,
    /// Host name or IP address the certificate is valid for (its upload port's address);
    /// repeatable.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// Path prefix of the files written: PREFIX.pem and PREFIX.key [default: the host id].
    #[arg(long)]
    pub out: Option<PathBuf>,
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
    let args = match cmd {
        CertsCommand::Dev(args) => args,
        CertsCommand::Issue(args) => return issue(args),
    };
    let certs = pollen_tls::make_dev_certs(&args.out, &args.hosts)
        .context("cannot write the dev certificates")?;
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

fn issue(args: IssueArgs) -> anyhow::Result<ExitCode> {
    use pollen_tls::Role;
    let roles: &[Role] = if args.role == "seed" {
        &[Role::Peer, Role::Seed]
    } else {
        &[Role::Peer]
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.host_id));
    let (cert, key) = pollen_tls::issue_host_cert(
        &args.ca_cert,
        &args.ca_key,
        &pollen_tls::HostCert {
            host_id: &args.host_id,
            roles,
            names: &args.hosts,
        },
        &out,
    )
    .with_context(|| format!("cannot issue a certificate for host {}", args.host_id))?;
    println!(
        "host {}: pollen daemon{} --tls-ca {} --tls-cert {} --tls-key {}",
        args.host_id,
        if args.role == "seed" { " --seed" } else { "" },
        args.ca_cert.display(),
        cert.display(),
        key.display()
    );
    Ok(ExitCode::SUCCESS)
}
