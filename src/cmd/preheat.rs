//! `pollen preheat IMAGE`: resolves an image reference through the registry's distribution
//! API to its blobs (for every platform, or one) and has the local daemon fetch each into its
//! cache, so the pulls that follow find them in the swarm. Run it against a seed peer to warm
//! a whole cluster: blobs are tasks named by their digest, the same ones the registry mirror
//! serves.

use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use futures::StreamExt as _;
use pollen_oci::{Credentials, ImageReference, Platform, Registry};
use pollen_proto::daemon::{DownloadRequest, Header};

/// Blobs fetched at once.
const PARALLEL: usize = 4;

/// `pollen preheat` flags.
#[derive(Args, Debug)]
pub struct PreheatArgs {
    /// Image reference, e.g. `alpine:3.20`, `ghcr.io/org/app@sha256:…`.
    pub image: String,
    /// Only this platform of a multi-platform image (`os/arch[/variant]`) [default: all].
    #[arg(long)]
    pub platform: Option<Platform>,
    /// Registry user name (with --password).
    #[arg(long, env = "POLLEN_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Registry password or token (prefer the environment variable).
    #[arg(long, env = "POLLEN_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Talk to the registry over plain HTTP (always the case for localhost and 127.0.0.1).
    #[arg(long)]
    pub insecure: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

pub(crate) async fn run(args: PreheatArgs) -> anyhow::Result<ExitCode> {
    let reference = ImageReference::parse(&args.image)?;
    let credentials = match (args.username, args.password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => None,
        _ => bail!("give both --username and --password, or neither"),
    };
    let client = args.daemon.connect().await?;
    let insecure = args.insecure || reference.is_loopback_registry();
    let mut registry = Registry::for_reference(&reference, insecure, credentials)?;
    let resolved = pollen_oci::resolve(&mut registry, &reference, args.platform.as_ref())
        .await
        .with_context(|| format!("cannot resolve {reference}"))?;
    let platforms = if resolved.platforms.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = resolved.platforms.iter().map(|p| p.to_string()).collect();
        format!(" for {}", names.join(", "))
    };
    let total: u64 = resolved.blobs.iter().map(|b| b.size).sum();
    eprintln!(
        "{reference}: {} blobs, {total} bytes{platforms}",
        resolved.blobs.len()
    );
    let headers: Vec<Header> = registry
        .blob_headers()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    let jobs = resolved.blobs.iter().map(|blob| {
        let request = DownloadRequest {
            url: registry.blob_url(&reference.repository, &blob.digest),
            digest: blob.digest.to_string(),
            headers: headers.clone(),
            cache_only: true,
            ..Default::default()
        };
        let mut client = client.clone();
        async move {
            let mut stream = client
                .download(request)
                .await
                .map_err(|s| anyhow!("{}: {}", blob.digest, s.message()))?
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(m)) if m.done => return Ok::<_, anyhow::Error>((blob, m.from_cache)),
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("{}: the daemon stopped the download", blob.digest),
                    Err(s) => bail!("{}: {}", blob.digest, s.message()),
                }
            }
        }
    });
    let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
    let mut failed = 0;
    while let Some(r) = results.next().await {
        match r {
            Ok((blob, cached)) => println!(
                "{} {} bytes {}",
                blob.digest,
                blob.size,
                if cached { "already cached" } else { "cached" }
            ),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} blobs were not preheated",
            resolved.blobs.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
