//! `pollen cache`: the local daemon's cache by task (what `dfcache` does): list it, show one
//! task, remove one, import a file into it, export one to a file. A task is named by its id
//! (or a unique prefix of it) or by the URL it was downloaded from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use indicatif::HumanBytes as H;
use pollen_proto::daemon::{
    ExistingOutput, ExportRequest, ImportRequest, RemoveRequest, StatRequest, StatResponse,
    TaskStat,
};

/// `pollen cache` commands.
#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List the tasks in the cache, most recently used first.
    Ls(LsArgs),
    /// Show one task: its id, URL, size, how much of it is held.
    Stat(TaskArgs),
    /// Remove one task from the cache; the scheduler learns at once that this host no
    /// longer holds it.
    Rm(TaskArgs),
    /// Copy a local file into the cache, read with your rights. The task is the file's
    /// content: its id is its sha256, and it serves every download that names that digest
    /// (`pollen get --digest`, an image layer, a Hugging Face LFS file), on this host and, from
    /// a seed, to the fleet; never a download of a URL without one. Prints the task id.
    Import(ImportArgs),
    /// Write a task held complete in the cache to a file, with your rights. Fetches nothing
    /// (`pollen get` does).
    Export(ExportArgs),
}

/// `pollen cache import` flags.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import.
    pub file: PathBuf,
    /// The origin the file is a copy of, recorded as the task's URL (shown by `pollen cache
    /// ls`; what a seed would read if no host held the content). Default: file://FILE.
    #[arg(long)]
    pub url: Option<String>,
    /// The digest the file must have, `sha256:<hex>`; the import fails if it differs.
    #[arg(long)]
    pub digest: Option<String>,
    /// Print the result as one JSON object instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

/// `pollen cache export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The task: its id (or a unique prefix of at least 6 hex digits), or the URL it was
    /// downloaded from.
    pub task: String,
    /// Where to write the content.
    #[arg(short = 'O', long = "output")]
    pub output: PathBuf,
    /// Replace an existing output (refused by default).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

/// `path` made absolute against the current directory.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(path))
}

/// `pollen cache ls` flags.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print the tasks as one JSON array instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

/// The task a `pollen cache` command acts on.
#[derive(Args, Debug)]
pub struct TaskArgs {
    /// The task: its id (64 hex digits, or a unique prefix of at least 6), or the URL it was
    /// downloaded from.
    pub task: String,
    /// Print the task as one JSON object instead (stat).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

pub(crate) async fn run(cmd: CacheCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CacheCommand::Ls(a) => {
            let stat = stat(&a.daemon).await?;
            let mut tasks: Vec<&TaskStat> = stat.tasks.iter().collect();
            tasks.sort_by(|a, b| {
                b.last_access
                    .cmp(&a.last_access)
                    .then(a.task_id.cmp(&b.task_id))
            });
            if a.json {
                let all: Vec<_> = tasks.iter().map(|t| json(t)).collect();
                println!("{}", serde_json::Value::Array(all));
            } else if tasks.is_empty() {
                println!("the cache holds no task");
            } else {
                println!("{:<12}  {:>10}  {:>5}  URL", "TASK", "SIZE", "HELD");
                for t in tasks {
                    println!(
                        "{:<12}  {:>10}  {:>4}%  {}{}",
                        &t.task_id[..12.min(t.task_id.len())],
                        H(t.content_length).to_string(),
                        held_percent(t),
                        t.url,
                        if t.private { " (private)" } else { "" }
                    );
                }
            }
        }
        CacheCommand::Stat(a) => {
            let stat = stat(&a.daemon).await?;
            let t = find(&stat, &a.task)?;
            if a.json {
                println!("{}", json(t));
            } else {
                println!("task      {}", t.task_id);
                println!("url       {}", t.url);
                println!(
                    "size      {} ({} bytes)",
                    H(t.content_length),
                    t.content_length
                );
                println!(
                    "held      {} of {} pieces, {}{}",
                    t.pieces_present,
                    t.piece_count,
                    H(t.held_bytes),
                    if t.complete { ", complete" } else { "" }
                );
                println!("private   {}", t.private);
                println!("last used {} (unix seconds)", t.last_access);
            }
        }
        CacheCommand::Rm(a) => {
            let stat = stat(&a.daemon).await?;
            let t = find(&stat, &a.task)?;
            let mut client = a.daemon.connect().await?;
            let removed = client
                .remove(RemoveRequest {
                    task_id: t.task_id.clone(),
                })
                .await
                .map_err(|s| anyhow!("cannot remove {}: {}", t.task_id, s.message()))?
                .into_inner()
                .removed;
            if !removed {
                bail!("task {} left the cache meanwhile", t.task_id);
            }
            eprintln!("removed {} ({}, {})", t.task_id, t.url, H(t.held_bytes));
        }
        CacheCommand::Import(a) => import(a).await?,
        CacheCommand::Export(a) => export(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(a: ImportArgs) -> anyhow::Result<()> {
    if let Some(d) = &a.digest {
        d.parse::<pollen_core::ContentDigest>()
            .with_context(|| format!("--digest {d:?}"))?;
    }
    let file = absolute(&a.file)?;
    let mut client = a.daemon.connect().await?;
    let done = client
        .import(ImportRequest {
            path: file.to_string_lossy().into_owned(),
            url: a.url.unwrap_or_default(),
            digest: a.digest.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow!("cannot import {}: {}", file.display(), s.message()))?
        .into_inner();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "task_id": done.task_id,
                "digest": format!("sha256:{}", done.task_id),
                "content_length": done.content_length,
                "already_held": done.already_held,
            })
        );
        return Ok(());
    }
    println!("{}", done.task_id);
    eprintln!(
        "{} {} ({}) as task {}",
        if done.already_held {
            "the cache already held"
        } else {
            "imported"
        },
        file.display(),
        H(done.content_length),
        &done.task_id[..12.min(done.task_id.len())]
    );
    Ok(())
}

async fn export(a: ExportArgs) -> anyhow::Result<()> {
    if a.output.as_os_str() == "-" {
        bail!("pollen cache export writes to a file; `pollen get URL -O -` writes to stdout");
    }
    let output = absolute(&a.output)?;
    if !a.overwrite && std::fs::symlink_metadata(&output).is_ok() {
        bail!(
            "{} already exists; pass --overwrite to replace it",
            output.display()
        );
    }
    let stat = stat(&a.daemon).await?;
    let t = find(&stat, &a.task)?;
    if !t.complete {
        bail!(
            "task {} is not complete in the cache ({} of {} pieces); `pollen get {}` fetches it",
            t.task_id,
            t.pieces_present,
            t.piece_count,
            t.url
        );
    }
    let mut client = a.daemon.connect().await?;
    let done = client
        .export(ExportRequest {
            task_id: t.task_id.clone(),
            output_path: output.to_string_lossy().into_owned(),
            existing_output: ExistingOutput::Replace.into(),
        })
        .await
        .map_err(|s| anyhow!("cannot export {}: {}", t.task_id, s.message()))?
        .into_inner();
    eprintln!(
        "saved {} ({}) from task {}",
        output.display(),
        H(done.content_length),
        &t.task_id[..12.min(t.task_id.len())]
    );
    Ok(())
}

async fn stat(daemon: &super::daemon_client::DaemonSocket) -> anyhow::Result<StatResponse> {
    let mut client = daemon.connect().await?;
    Ok(client
        .stat(StatRequest {})
        .await
        .map_err(|s| anyhow!("the daemon did not answer: {}", s.message()))?
        .into_inner())
}

/// How much of the task is held, in percent (a complete empty file is all there).
fn held_percent(t: &TaskStat) -> u64 {
    if t.complete {
        return 100;
    }
    if t.piece_count == 0 {
        return 0;
    }
    u64::from(t.pieces_present) * 100 / u64::from(t.piece_count)
}

fn json(t: &TaskStat) -> serde_json::Value {
    serde_json::json!({
        "task_id": t.task_id,
        "url": t.url,
        "content_length": t.content_length,
        "held_bytes": t.held_bytes,
        "piece_count": t.piece_count,
        "pieces_present": t.pieces_present,
        "complete": t.complete,
        "private": t.private,
        "last_access": t.last_access,
    })
}

/// The task `name` names: an id (`sha256:` before it allowed), a unique id prefix (6 hex
/// digits or more), or a URL (the
/// task of that URL without tag or application, or the one task downloaded from it).
fn find<'a>(stat: &'a StatResponse, name: &str) -> anyhow::Result<&'a TaskStat> {
    let name = name.trim();
    // An imported file's id is its digest, which users may write as one.
    let name = name.strip_prefix("sha256:").unwrap_or(name);
    let hex = name.len() >= 6 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let matches: Vec<&TaskStat> = if hex {
        let lower = name.to_ascii_lowercase();
        stat.tasks
            .iter()
            .filter(|t| t.task_id.starts_with(&lower))
            .collect()
    } else {
        let id = pollen_core::TaskKey::of_url(name)
            .task_id()
            .map_err(|e| {
                anyhow!("{name:?} is neither a task id nor a URL a task is named by: {e}")
            })?
            .hex();
        let bare = name.split(['?', '#']).next().unwrap_or(name);
        let by_id: Vec<&TaskStat> = stat.tasks.iter().filter(|t| t.task_id == id).collect();
        if by_id.is_empty() {
            stat.tasks.iter().filter(|t| t.url == bare).collect()
        } else {
            by_id
        }
    };
    match matches[..] {
        [one] => Ok(one),
        [] => bail!("no task in the cache is {name}; `pollen cache ls` lists them"),
        _ => bail!(
            "{} tasks in the cache match {name} ({}); name one by its id",
            matches.len(),
            matches
                .iter()
                .map(|t| &t.task_id[..12.min(t.task_id.len())])
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, url: &str) -> TaskStat {
        TaskStat {
            task_id: id.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_empty_task_is_all_held() {
        let empty = TaskStat {
            complete: true,
            ..Default::default()
        };
        assert_eq!(held_percent(&empty), 100);
        let half = TaskStat {
            piece_count: 4,
            pieces_present: 2,
            ..Default::default()
        };
        assert_eq!(held_percent(&half), 50);
    }

    #[test]
    fn a_task_is_found_by_id_prefix_or_url_and_ambiguity_is_refused() {
        let by_url = pollen_core::TaskKey::of_url("http://o/a.bin")
            .task_id()
            .expect("id")
            .hex();
        let stat = StatResponse {
            tasks: vec![
                task(&by_url, "http://o/a.bin"),
                task(&"ab".repeat(32), "hf://org/m@c0ffee/x"),
                task(&format!("abcd{}", "0".repeat(60)), "http://o/c"),
            ],
            ..Default::default()
        };
        assert_eq!(find(&stat, "http://o/a.bin").expect("url").task_id, by_url);
        assert_eq!(
            find(&stat, "hf://org/m@c0ffee/x")
                .expect("by its URL")
                .task_id,
            "ab".repeat(32)
        );
        assert_eq!(
            find(&stat, "abababab").expect("prefix").task_id,
            "ab".repeat(32)
        );
        let mut two = stat.clone();
        two.tasks
            .push(task(&format!("ababab{}", "1".repeat(58)), "http://o/d"));
        let e = find(&two, "ababab").expect_err("ambiguous");
        assert!(format!("{e}").contains("2 tasks"), "{e}");
        let both = find(&stat, "ab").expect_err("too short to be an id");
        assert!(format!("{both}").contains("neither"), "{both}");
        assert!(find(&stat, "abcd00").is_ok());
        assert!(find(&stat, &format!("sha256:{}", "ab".repeat(32))).is_ok());
        let none = find(&stat, "http://o/none").expect_err("absent");
        assert!(format!("{none}").contains("pollen cache ls"), "{none}");
    }
}
