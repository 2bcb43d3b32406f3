//! `pollen get`: downloads a URL through the local daemon, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pollen_core::ContentDigest;
use pollen_proto::daemon::{DownloadRequest, Header};

/// `pollen get` flags.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// URL to download (http or https).
    pub url: String,
    /// File to write; written atomically, never left partial.
    #[arg(short = 'O', long = "output")]
    pub output: PathBuf,
    /// Expected content digest, `sha256:<hex>`; the download fails if the content differs.
    #[arg(long)]
    pub digest: Option<String>,
    /// Request header for the origin, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Tag: downloads of the same URL with different tags are different tasks.
    #[arg(long, default_value = "")]
    pub tag: String,
    /// Application name: like a tag, separates otherwise equal downloads.
    #[arg(long, default_value = "")]
    pub application: String,
    /// Query parameter that does not change the content (e.g. a signature); repeatable.
    #[arg(long = "filter-query")]
    pub filter_query: Vec<String>,
    /// Unix socket of the local daemon.
    #[arg(
        long,
        env = "POLLEN_API_SOCKET",
        default_value = "/run/pollen/daemon.sock"
    )]
    pub api_socket: PathBuf,
}

/// A client of the local daemon, or an error that says how to start one.
pub(crate) async fn connect_daemon(
    socket: &std::path::Path,
) -> anyhow::Result<pollen_proto::daemon::daemon_client::DaemonClient<tonic::transport::Channel>> {
    pollen_daemon::api::client::connect(socket).await.map_err(|e| {
        if e.denied {
            return anyhow!(
                "you may not use the pollen daemon at {} (permission denied): its socket is for root and the members of the daemon's api_group (default `pollen`); ask an administrator to add you to that group",
                e.path.display()
            );
        }
        anyhow!(
            "no pollen daemon is running at {} ({}); start one with `pollen daemon --scheduler http://SCHEDULER:8002`, or pass --api-socket",
            e.path.display(),
            e.reason
        )
    })
}

fn parse_header(h: &str) -> anyhow::Result<Header> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| anyhow!("invalid header {h:?}: expected 'Name: value'"))?;
    if name.trim().is_empty() {
        bail!("invalid header {h:?}: the name is empty");
    }
    Ok(Header {
        name: name.trim().to_string(),
        value: value.trim().to_string(),
    })
}

pub(crate) async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(d) = &args.digest {
        d.parse::<ContentDigest>()?;
    }
    let output = if args.output.is_absolute() {
        args.output.clone()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(&args.output)
    };
    let parent = output
        .parent()
        .ok_or_else(|| anyhow!("invalid output path {}", output.display()))?;
    if !parent.is_dir() {
        bail!("output directory {} does not exist", parent.display());
    }
    let mut client = connect_daemon(&args.api_socket).await?;
    let request = DownloadRequest {
        url: args.url.clone(),
        output_path: output.to_string_lossy().into_owned(),
        digest: args.digest.clone().unwrap_or_default(),
        headers,
        tag: args.tag,
        application: args.application,
        filtered_query: args.filter_query,
        cache_only: false,
    };
    let mut stream = client
        .download(request)
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the daemon closed the download without finishing it"),
            Err(s) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                bail!("{}", s.message());
            }
        };
        if let Some(b) = &bar {
            b.set_length(msg.content_length);
            b.set_position(msg.completed_bytes);
        }
        if msg.done {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            eprintln!(
                "saved {} ({} bytes, task {}{})",
                output.display(),
                msg.content_length,
                &msg.task_id[..msg.task_id.len().min(12)],
                if msg.from_cache {
                    ", from local cache"
                } else {
                    ""
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
}
