//! `pollen get --recursive`: every object below a URL (a bucket prefix, a directory) into a
//! local directory, several at once, their layout kept.
//!
//! The local daemon lists the URL with its own origins; each listed object is then one
//! ordinary download (its own task, so peers share the set file by file), written atomically
//! by the daemon like any `pollen get`. Paths come from the origin and are checked before
//! any directory is made: nothing lands outside the destination. An output that already holds
//! an object's verified content is left as it is, so a rerun after an interruption fetches
//! only what is missing.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use futures::StreamExt as _;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};
use pollen_proto::daemon::{
    DownloadProgress, DownloadRequest, ExistingOutput, ListRequest, ListedObject,
};

use super::get::{follow, until_stopped, Done, GetArgs, Stopped};

/// Objects a listing may return; a larger prefix is refused rather than half-downloaded.
const LIST_LIMIT: u32 = 100_000;

/// Which listed paths a run downloads: `--include` (none: all) minus `--exclude`.
struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    fn new(include: &[String], exclude: &[String]) -> anyhow::Result<Self> {
        let set = |patterns: &[String], flag: &str| -> anyhow::Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("invalid {flag} pattern {p:?}"))?;
                b.add(glob);
            }
            b.build()
                .with_context(|| format!("invalid {flag} patterns"))
        };
        Ok(Self {
            include: (!include.is_empty())
                .then(|| set(include, "--include"))
                .transpose()?,
            exclude: set(exclude, "--exclude")?,
        })
    }

    fn wants(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(path)) && !self.exclude.is_match(path)
    }
}

/// One file to download.
#[derive(Clone, Debug)]
struct Planned {
    url: String,
    /// The digest the origin published, or empty.
    digest: String,
    /// Relative to the destination, checked.
    path: String,
    size: u64,
}

/// The files a listing asks for under `filter`, and the listed paths refused because they
/// would land outside the destination (or twice on one path).
fn plan(objects: Vec<ListedObject>, filter: &Filter) -> (Vec<Planned>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    for o in objects {
        if !pollen_source::safe_relative_path(&o.path) {
            refused.push(format!(
                "{:?}: the origin named a path that is not below the destination; skipped",
                o.path
            ));
            continue;
        }
        if !filter.wants(&o.path) {
            continue;
        }
        if !seen.insert(o.path.clone()) {
            refused.push(format!("{:?}: listed twice; skipped", o.path));
            continue;
        }
        files.push(Planned {
            url: o.url,
            digest: o.digest,
            path: o.path,
            size: o.size,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (files, refused)
}

/// What became of one file.
struct Fetched {
    path: String,
    outcome: anyhow::Result<(DownloadProgress, Done)>,
}

/// The bars of a run on a terminal: one for the whole set, one per file in flight.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Bars {
    fn new(files: usize, bytes: u64) -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(bytes));
        total.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_message(format!("0/{files} files"));
        total.enable_steady_tick(std::time::Duration::from_millis(200));
        Some(Self { multi, total })
    }

    fn file(&self, p: &Planned) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(p.size));
        bar.set_style(
            ProgressStyle::with_template("  {bytes:>10}/{total_bytes:<10} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(p.path.clone());
        bar
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

/// Prints a line above the bars, or on stderr without them.
fn say(bars: Option<&Bars>, line: &str) {
    match bars {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}

pub(crate) async fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let headers = super::get::parse_headers(&args.headers)?;
    if args.digest.is_some() {
        bail!("--digest names one file's content; it does not apply to --recursive");
    }
    if args.output.as_os_str() == "-" {
        bail!("--recursive writes files into a directory; -O - cannot take them");
    }
    let dir = if args.output.is_absolute() {
        args.output.clone()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(&args.output)
    };
    if dir.exists() && !dir.is_dir() {
        bail!(
            "{} is a file; --recursive writes into a directory",
            dir.display()
        );
    }
    let filter = Filter::new(&args.include, &args.exclude)?;
    let mut client = args.daemon.connect().await?;
    let listing = client
        .list(ListRequest {
            url: args.url.clone(),
            max_objects: LIST_LIMIT,
        })
        .await
        .map_err(|s| anyhow!("cannot list {}: {}", args.url, s.message()))?
        .into_inner();
    if listing.truncated {
        bail!(
            "{} holds more than {LIST_LIMIT} objects; list a narrower prefix",
            args.url
        );
    }
    let listed = listing.objects.len();
    let (files, refused) = plan(listing.objects, &filter);
    for r in &refused {
        eprintln!("warning: {r}");
    }
    if files.is_empty() {
        bail!(
            "nothing to download: {} lists {listed} objects, none of them {}",
            args.url,
            if args.include.is_empty() && args.exclude.is_empty() {
                "usable"
            } else {
                "matching --include/--exclude"
            }
        );
    }
    if files.len() > args.max_files {
        bail!(
            "{} files match below {}, more than --max-files {}; narrow them with --include/--exclude or raise --max-files",
            files.len(),
            args.url,
            args.max_files
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let bars = Bars::new(files.len(), total_bytes);
    let existing = if args.overwrite {
        ExistingOutput::KeepSameOrReplace
    } else {
        ExistingOutput::KeepSame
    };
    let template = DownloadRequest {
        url: String::new(),
        output_path: String::new(),
        digest: String::new(),
        headers,
        tag: args.tag.clone(),
        application: args.application.clone(),
        filtered_query: args.filter_query.clone(),
        cache_only: false,
        no_origin: args.no_origin,
        existing_output: existing.into(),
    };
    let started = Instant::now();
    let count = files.len();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let work = futures::stream::iter(files)
        .map(|f| {
            let mut client = client.clone();
            let request = DownloadRequest {
                url: f.url.clone(),
                digest: f.digest.clone(),
                output_path: dir.join(&f.path).to_string_lossy().into_owned(),
                ..template.clone()
            };
            let (dir, bars, finished) = (&dir, bars.as_ref(), &finished);
            async move {
                let bar = bars.map(|b| b.file(&f));
                let mut seen = 0u64;
                let outcome = async {
                    if let Some(parent) = dir.join(&f.path).parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("cannot make {}", parent.display()))?;
                    }
                    let begun = Instant::now();
                    let msg = follow(&mut client, request, |m| {
                        if let (Some(bar), Some(bars)) = (&bar, bars) {
                            bar.set_length(m.content_length.max(f.size));
                            bar.set_position(m.completed_bytes);
                            bars.total.inc(m.completed_bytes.saturating_sub(seen));
                            seen = seen.max(m.completed_bytes);
                        }
                    })
                    .await?;
                    let done = Done::of(&msg, begun.elapsed());
                    Ok((msg, done))
                }
                .await;
                if let (Some(bar), Some(bars)) = (bar, bars) {
                    bars.multi.remove(&bar);
                    // A file whose listed size was off still counts once, whole.
                    bars.total.inc(f.size.saturating_sub(seen));
                }
                let fetched = Fetched {
                    path: f.path,
                    outcome,
                };
                say(bars, &file_line(dir, &fetched));
                let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if let Some(b) = bars {
                    b.total.set_message(format!("{n}/{count} files"));
                }
                fetched
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .collect::<Vec<_>>();
    let results = match until_stopped(args.timeout, work).await {
        Stopped::Finished(r) => r,
        stopped => {
            if let Some(b) = &bars {
                b.total.abandon();
            }
            return Ok(stopped.exit_code());
        }
    };
    if let Some(b) = &bars {
        b.total.finish_and_clear();
    }
    let summary = Summary::of(&results, started.elapsed().as_secs_f64());
    eprintln!("{}", summary.line(&dir, count));
    if args.json {
        println!("{}", summary.json(&dir, &results));
    }
    let failed: Vec<_> = results
        .iter()
        .filter_map(|f| f.outcome.as_ref().err().map(|e| (&f.path, e)))
        .collect();
    if failed.is_empty() && refused.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut why = format!(
        "{} of {} files were not downloaded",
        failed.len() + refused.len(),
        count + refused.len()
    );
    for (path, e) in failed {
        why.push_str(&format!("\n  {path}: {e:#}"));
    }
    for r in &refused {
        why.push_str(&format!("\n  {r}"));
    }
    why.push_str("\na rerun fetches only what is missing");
    Err(anyhow!(why))
}

/// The line printed when one file is done.
fn file_line(dir: &Path, f: &Fetched) -> String {
    let out = dir.join(&f.path);
    match &f.outcome {
        Ok((msg, _)) if msg.output_kept => {
            format!("kept {}: it already holds this content", out.display())
        }
        Ok((_, done)) => done.line(&out),
        Err(e) => format!("failed {}: {e:#}", out.display()),
    }
}

/// Totals over a run.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    saved: usize,
    kept: usize,
    failed: usize,
    bytes: u64,
    peer_bytes: u64,
    origin_bytes: u64,
    held_bytes: u64,
    seconds: f64,
}

impl Summary {
    fn of(results: &[Fetched], seconds: f64) -> Self {
        let mut s = Summary {
            seconds,
            ..Summary::default()
        };
        for f in results {
            match &f.outcome {
                Err(_) => s.failed += 1,
                Ok((msg, _)) if msg.output_kept => s.kept += 1,
                Ok((_, d)) => {
                    s.saved += 1;
                    s.bytes += d.bytes;
                    s.peer_bytes += d.peer_bytes;
                    s.origin_bytes += d.origin_bytes;
                    s.held_bytes += d.held_bytes;
                }
            }
        }
        s
    }

    /// `saved 12 of 14 files into DIR: 1.2 GiB in 3.4 s: … from peers, … from the origin, …
    /// already held; 2 kept as they were`.
    fn line(&self, dir: &Path, count: usize) -> String {
        if self.kept == count && count > 0 {
            return format!(
                "nothing to fetch: the {count} files in {} already hold their content",
                dir.display()
            );
        }
        let mut line = format!(
            "saved {} of {count} files into {}: {} in {:.1} s: {} from peers, {} from the origin, {} already held",
            self.saved,
            dir.display(),
            HumanBytes(self.bytes),
            self.seconds,
            HumanBytes(self.peer_bytes),
            HumanBytes(self.origin_bytes),
            HumanBytes(self.held_bytes),
        );
        if self.kept > 0 {
            line.push_str(&format!(
                "; {} already there with the same content, kept",
                self.kept
            ));
        }
        if self.failed > 0 {
            line.push_str(&format!("; {} failed", self.failed));
        }
        line
    }

    fn json(&self, dir: &Path, results: &[Fetched]) -> serde_json::Value {
        let files: Vec<_> = results
            .iter()
            .map(|f| match &f.outcome {
                Ok((msg, d)) => serde_json::json!({
                    "path": f.path,
                    "task_id": msg.task_id,
                    "bytes": d.bytes,
                    "peer_bytes": d.peer_bytes,
                    "origin_bytes": d.origin_bytes,
                    "held_bytes": d.held_bytes,
                    "from_cache": d.from_cache,
                    "kept": msg.output_kept,
                }),
                Err(e) => serde_json::json!({"path": f.path, "error": format!("{e:#}")}),
            })
            .collect();
        serde_json::json!({
            "output": dir.display().to_string(),
            "saved": self.saved,
            "kept": self.kept,
            "failed": self.failed,
            "bytes": self.bytes,
            "peer_bytes": self.peer_bytes,
            "origin_bytes": self.origin_bytes,
            "held_bytes": self.held_bytes,
            "seconds": self.seconds,
            "files": files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(path: &str) -> ListedObject {
        ListedObject {
            url: format!("s3://b/p/{path}"),
            path: path.into(),
            size: 1,
            version: String::new(),
            digest: String::new(),
        }
    }

    #[test]
    fn a_run_that_fetches_nothing_says_so() {
        let dir = Path::new("/data/m");
        let all_kept = Summary {
            kept: 3,
            ..Summary::default()
        };
        assert_eq!(
            all_kept.line(dir, 3),
            "nothing to fetch: the 3 files in /data/m already hold their content"
        );
        let some = Summary {
            saved: 1,
            kept: 2,
            bytes: 10,
            ..Summary::default()
        };
        let line = some.line(dir, 3);
        assert!(
            line.starts_with("saved 1 of 3 files into /data/m"),
            "{line}"
        );
        assert!(
            line.ends_with("; 2 already there with the same content, kept"),
            "{line}"
        );
    }

    #[test]
    fn globs_pick_paths_and_star_stays_in_its_directory() {
        let f = Filter::new(
            &["*.json".into(), "weights/**".into()],
            &["**/*.tmp".into()],
        )
        .expect("filter");
        for (path, want) in [
            ("config.json", true),
            ("sub/config.json", false),
            ("weights/a/b.safetensors", true),
            ("weights/a/b.tmp", false),
            ("README.md", false),
        ] {
            assert_eq!(f.wants(path), want, "{path}");
        }
        assert!(Filter::new(&[], &[]).expect("none").wants("any/thing"));
        let bad = Filter::new(&["a[".into()], &[]).err().expect("an error");
        assert!(format!("{bad:#}").contains("--include"), "{bad:#}");
    }

    #[test]
    fn paths_that_leave_the_destination_are_refused_not_written() {
        let all = Filter::new(&[], &[]).expect("filter");
        let (files, refused) = plan(
            vec![
                listed("b/2"),
                listed("../../etc/cron.d/x"),
                listed("a/1"),
                listed("/abs"),
                listed("a/1"),
            ],
            &all,
        );
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/1", "b/2"]);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].contains("../../etc/cron.d/x"));
    }
}
