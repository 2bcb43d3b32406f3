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
    /// URL to download: http(s)://, s3://bucket/key, gs://bucket/key, azblob://container/key
    /// (the reading daemon's credentials), or file:///path (read only under a daemon's
    /// origin_file_roots). Peers get it from the swarm; only the reader needs access.
    pub url: String,
    /// File to write; written atomically, never left partial. `-` writes the content to
    /// stdout once all of it is verified (a consumer never sees an unverified byte).
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

pub(crate) async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    };
    let started = std::time::Instant::now();
    let mut stream = client
        .download(request)
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    // Before the length is known there is nothing to measure: a spinner says what the
    // download waits for; then a bar, with what it is doing beside it.
    let waiting_style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar_style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(waiting_style);
        bar.set_message("asking the daemon");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut measuring = false;
    let interrupted = crate::signals::terminated();
    tokio::pin!(interrupted);
    let deadline = async {
        match args.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        // Dropping the stream (on Ctrl-C or at the timeout) tells the daemon; with nobody
        // else waiting for the task it stops, keeping what it holds.
        let next = tokio::select! {
            m = stream.message() => m,
            _ = &mut interrupted => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                drop(stream);
                eprintln!("interrupted; a rerun resumes");
                return Ok(ExitCode::from(130));
            }
            _ = &mut deadline => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                drop(stream);
                let after = args.timeout.unwrap_or_default();
                eprintln!("error: timed out after {after:?} (--timeout); a rerun resumes");
                return Ok(ExitCode::from(124));
            }
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => bail!("the daemon closed the download without finishing it"),
            Err(s) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                if connection_lost(&s) {
                    bail!("lost the connection to the pollen daemon (it stopped or restarted); a rerun resumes where this one left off");
                }
                bail!("{}", s.message());
            }
        };
        if let Some(b) = &bar {
            if msg.content_length == 0 {
                b.set_message(format!("{}…", msg.doing));
            } else {
                if !measuring {
                    b.set_style(bar_style.clone());
                    measuring = true;
                }
                b.set_length(msg.content_length);
                b.set_position(msg.completed_bytes);
                b.set_message(msg.doing.clone());
            }
        }
        if msg.done {
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
            return Ok(ExitCode::SUCCESS);
        }
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
struct Done {
    bytes: u64,
    seconds: f64,
    peer_bytes: u64,
    origin_bytes: u64,
    /// Held before this run (a resumed download), neither fetched from peers nor the origin.
    held_bytes: u64,
    from_cache: bool,
    task: String,
}

impl Done {
    fn of(msg: &pollen_proto::daemon::DownloadProgress, took: std::time::Duration) -> Self {
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
    fn line(&self, output: &std::path::Path) -> String {
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
