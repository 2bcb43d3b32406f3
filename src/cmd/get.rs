//! `pollen get`: downloads a URL through the local daemon, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pollen_core::ContentDigest;
use pollen_proto::daemon::daemon_client::DaemonClient;
use pollen_proto::daemon::{DownloadProgress, DownloadRequest, ExistingOutput, Header};
use tonic::transport::Channel;

/// `pollen get` flags.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// URL to download: http(s)://, s3://bucket/key, gs://bucket/key, azblob://container/key
    /// (the reading daemon's credentials), hf://owner/repo[@revision]/path (Hugging Face,
    /// checked against the sha256 the hub publishes), or file:///path (read only under a
    /// daemon's origin_file_roots). Peers get it from the swarm; only the reader needs access.
    pub url: String,
    /// File to write; written atomically, never left partial. `-` writes the content to
    /// stdout once all of it is verified (a consumer never sees an unverified byte). With
    /// --recursive, the directory the files go into (made if missing).
    #[arg(short = 'O', long = "output")]
    pub output: PathBuf,
    /// Download every object below URL (an s3://, gs:// or azblob:// prefix, an hf://
    /// repository or directory of it, a file:// directory) into the directory -O, keeping their layout. The local daemon lists them
    /// with its own credentials. Files already there with the same content are kept; a rerun
    /// skips what an interrupted run finished.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// With --recursive: download only paths (relative to URL) that match this glob;
    /// repeatable, `*` stays within a directory, `**` crosses them. [default: everything]
    #[arg(long, requires = "recursive")]
    pub include: Vec<String>,
    /// With --recursive: skip paths that match this glob (repeatable; wins over --include).
    #[arg(long, requires = "recursive")]
    pub exclude: Vec<String>,
    /// With --recursive: fail before downloading anything when more files than this match.
    #[arg(long, default_value_t = 10_000)]
    pub max_files: usize,
    /// With --recursive: how many files download at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
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
    /// Fail rather than read the origin: the content must come from peers or the cache
    /// (applies when this request starts the download, not when it joins one running).
    #[arg(long)]
    pub no_origin: bool,
    /// Give up after this long (e.g. 90s, 10m); the daemon stops the download if nobody
    /// else waits for it, keeping what it holds, so a rerun resumes. [default: no limit]
    #[arg(long, value_parser = pollen_core::duration::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Replace the output file if it exists (by default an existing file is left alone and
    /// the command fails before downloading).
    #[arg(long)]
    pub overwrite: bool,
    /// At the end, print what was fetched as one JSON object on stdout (output, task_id,
    /// bytes, seconds, peer_bytes, origin_bytes, held_bytes, from_cache).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
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

/// The `-H` headers, each checked.
pub(crate) fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<Header>> {
    headers.iter().map(|h| parse_header(h)).collect()
}

/// `pollen get` of one URL (`--recursive` runs `get_dir`).
pub(crate) async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let headers = parse_headers(&args.headers)?;
    if let Some(d) = &args.digest {
        d.parse::<ContentDigest>()?;
    }
    // `-O -`: the daemon writes into a directory of the caller's own, then the content goes
    // to stdout and the directory away.
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && args.json {
        bail!("-O - and --json both write to stdout; drop one");
    }
    let staging = if to_stdout {
        Some(
            tempfile::Builder::new()
                .prefix("pollen-get-")
                .tempdir()
                .context("cannot make a temporary directory for -O -")?,
        )
    } else {
        None
    };
    let output = if let Some(dir) = &staging {
        dir.path().join("content")
    } else if args.output.is_absolute() {
        args.output.clone()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(&args.output)
    };
    let parent = output
        .parent()
        .ok_or_else(|| anyhow!("invalid output path {}", output.display()))?;
    if parent.exists() && !parent.is_dir() {
        bail!(
            "cannot write {}: {} is a file, not a directory",
            output.display(),
            parent.display()
        );
    }
    if !parent.is_dir() {
        bail!("output directory {} does not exist", parent.display());
    }
    if !args.overwrite && std::fs::symlink_metadata(&output).is_ok() {
        bail!(
            "{} already exists; pass --overwrite to replace it",
            output.display()
        );
    }
    let mut client = args.daemon.connect().await?;
    let request = DownloadRequest {
        url: args.url.clone(),
        output_path: output.to_string_lossy().into_owned(),
        digest: args.digest.clone().unwrap_or_default(),
        headers,
        tag: args.tag,
        application: args.application,
        filtered_query: args.filter_query,
        cache_only: false,
        no_origin: args.no_origin,
        existing_output: ExistingOutput::Replace.into(),
    };
    let started = std::time::Instant::now();
    // Before the length is known there is nothing to measure: a spinner says what the
    // download waits for; then a bar, with what it is doing beside it.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(waiting_style());
        bar.set_message("asking the daemon");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut measuring = false;
    let progress = |msg: &DownloadProgress| {
        if let Some(b) = &bar {
            show(b, msg, &mut measuring);
        }
    };
    let finished = until_stopped(args.timeout, follow(&mut client, request, progress)).await;
    let msg = match finished {
        Stopped::Finished(Ok(msg)) => msg,
        other => {
            if let Some(b) = &bar {
                b.abandon();
            }
            return match other {
                Stopped::Finished(Err(e)) => Err(e),
                stopped => Ok(stopped.exit_code()),
            };
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let done = Done::of(&msg, started.elapsed());
    if to_stdout {
        let mut file = std::fs::File::open(&output)
            .with_context(|| format!("cannot read {}", output.display()))?;
        let mut out = std::io::stdout().lock();
        std::io::copy(&mut file, &mut out).context("cannot write to stdout")?;
        std::io::Write::flush(&mut out).context("cannot write to stdout")?;
        eprintln!("{}", done.line(std::path::Path::new("to stdout")));
        drop(staging);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{}", done.line(&output));
    if args.json {
        println!("{}", done.json(&output, &msg.task_id));
    }
    Ok(ExitCode::SUCCESS)
}

/// The spinner shown before a download's length is known.
pub(crate) fn waiting_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// The bar shown once the length is known.
pub(crate) fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Shows `msg` on `bar`: what the download waits for until its length is known, then how far
/// it got.
pub(crate) fn show(bar: &ProgressBar, msg: &DownloadProgress, measuring: &mut bool) {
    if msg.content_length == 0 {
        bar.set_message(format!("{}…", msg.doing));
        return;
    }
    if !*measuring {
        bar.set_style(bar_style());
        *measuring = true;
    }
    bar.set_length(msg.content_length);
    bar.set_position(msg.completed_bytes);
    bar.set_message(msg.doing.clone());
}

/// Asks the daemon for `request` and follows its progress to the end, calling `progress` on
/// every update: the last message (`done`), or the error the daemon or the connection gave.
/// Dropping the future (Ctrl-C, a timeout) drops the stream, which tells the daemon; with
/// nobody else waiting for the task it stops, keeping what it holds.
pub(crate) async fn follow(
    client: &mut DaemonClient<Channel>,
    request: DownloadRequest,
    mut progress: impl FnMut(&DownloadProgress),
) -> anyhow::Result<DownloadProgress> {
    let mut stream = client
        .download(request)
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the daemon closed the download without finishing it"),
            Err(s) if connection_lost(&s) => bail!("lost the connection to the pollen daemon (it stopped or restarted); a rerun resumes where this one left off"),
            Err(s) => bail!("{}", s.message()),
        };
        progress(&msg);
        if msg.done {
            return Ok(msg);
        }
    }
}

/// How a command that waits on downloads ended.
pub(crate) enum Stopped<T> {
    /// The work ended by itself.
    Finished(T),
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// `--timeout` passed.
    TimedOut(std::time::Duration),
}

impl<T> Stopped<T> {
    /// The exit of a command stopped before its work finished, saying why on stderr: 130 on
    /// Ctrl-C, 124 at the timeout.
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Stopped::Finished(_) => ExitCode::SUCCESS,
            Stopped::Interrupted => {
                eprintln!("interrupted; a rerun resumes");
                ExitCode::from(130)
            }
            Stopped::TimedOut(after) => {
                eprintln!("error: timed out after {after:?} (--timeout); a rerun resumes");
                ExitCode::from(124)
            }
        }
    }
}

/// Runs `work` until it ends, Ctrl-C or SIGTERM arrives, or `timeout` passes; `work` is
/// dropped in the last two cases.
pub(crate) async fn until_stopped<T>(
    timeout: Option<std::time::Duration>,
    work: impl std::future::Future<Output = T>,
) -> Stopped<T> {
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => Stopped::Finished(r),
        _ = crate::signals::terminated() => Stopped::Interrupted,
        _ = deadline => Stopped::TimedOut(timeout.unwrap_or_default()),
    }
}

/// Whether `s` is the transport failing (the daemon went away) rather than the daemon's own
/// answer: those come with a code of their own and a message that says what happened.
fn connection_lost(s: &tonic::Status) -> bool {
    let m = s.message();
    matches!(s.code(), tonic::Code::Unknown | tonic::Code::Internal)
        && (m.contains("h2 protocol error") || m.contains("transport error"))
        || s.code() == tonic::Code::Unavailable && m.contains("transport error")
}

/// What a finished download fetched from where, and how long it took.
#[derive(Debug, PartialEq)]
pub(crate) struct Done {
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) peer_bytes: u64,
    pub(crate) origin_bytes: u64,
    /// Held before this run (a resumed download), neither fetched from peers nor the origin.
    pub(crate) held_bytes: u64,
    pub(crate) from_cache: bool,
    pub(crate) task: String,
}

impl Done {
    pub(crate) fn of(
        msg: &pollen_proto::daemon::DownloadProgress,
        took: std::time::Duration,
    ) -> Self {
        let fetched = msg.peer_bytes.saturating_add(msg.origin_bytes);
        Self {
            bytes: msg.content_length,
            seconds: took.as_secs_f64(),
            peer_bytes: msg.peer_bytes,
            origin_bytes: msg.origin_bytes,
            held_bytes: if msg.from_cache {
                msg.content_length
            } else {
                msg.content_length.saturating_sub(fetched)
            },
            from_cache: msg.from_cache,
            task: msg.task_id.chars().take(12).collect(),
        }
    }

    /// `saved OUT: 3.0 MiB in 1.2 s (2.5 MiB/s): 2.0 MiB from peers, 1.0 MiB from the origin`.
    pub(crate) fn line(&self, output: &std::path::Path) -> String {
        use indicatif::HumanBytes as H;
        let head = format!("saved {}: {}", output.display(), H(self.bytes));
        if self.from_cache {
            return format!(
                "{head} from the local cache in {:.1} s (task {})",
                self.seconds, self.task
            );
        }
        let speed = if self.seconds > 0.0 {
            ((self.peer_bytes + self.origin_bytes) as f64 / self.seconds) as u64
        } else {
            0
        };
        let mut parts = vec![
            format!("{} from peers", H(self.peer_bytes)),
            format!("{} from the origin", H(self.origin_bytes)),
        ];
        if self.held_bytes > 0 {
            parts.push(format!("{} already held", H(self.held_bytes)));
        }
        format!(
            "{head} in {:.1} s ({}/s): {} (task {})",
            self.seconds,
            H(speed),
            parts.join(", "),
            self.task
        )
    }

    fn json(&self, output: &std::path::Path, task_id: &str) -> serde_json::Value {
        serde_json::json!({
            "output": output.display().to_string(),
            "task_id": task_id,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "peer_bytes": self.peer_bytes,
            "origin_bytes": self.origin_bytes,
            "held_bytes": self.held_bytes,
            "from_cache": self.from_cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_proto::daemon::DownloadProgress;

    fn done(peer: u64, origin: u64, cached: bool) -> Done {
        Done::of(
            &DownloadProgress {
                task_id: "ab".repeat(32),
                content_length: 3 << 20,
                completed_bytes: 3 << 20,
                done: true,
                from_cache: cached,
                peer_bytes: peer,
                origin_bytes: origin,
                doing: String::new(),
                output_kept: false,
            },
            std::time::Duration::from_millis(1500),
        )
    }

    #[test]
    fn the_final_line_says_how_much_came_from_where_how_fast() {
        let out = std::path::Path::new("/tmp/model.bin");
        assert_eq!(
            done(2 << 20, 1 << 20, false).line(out),
            "saved /tmp/model.bin: 3.00 MiB in 1.5 s (2.00 MiB/s): 2.00 MiB from peers, 1.00 MiB from the origin (task abababababab)"
        );
        assert_eq!(
            done(0, 0, true).line(out),
            "saved /tmp/model.bin: 3.00 MiB from the local cache in 1.5 s (task abababababab)"
        );
        let resumed = done(1 << 20, 0, false);
        assert_eq!(resumed.held_bytes, 2 << 20);
        assert!(
            resumed.line(out).ends_with("1.00 MiB from peers, 0 B from the origin, 2.00 MiB already held (task abababababab)"),
            "{}",
            resumed.line(out)
        );
        let j = resumed.json(out, &"ab".repeat(32));
        assert_eq!(j["peer_bytes"], 1 << 20);
        assert_eq!(j["held_bytes"], 2 << 20);
        assert_eq!(j["from_cache"], false);
    }
}
