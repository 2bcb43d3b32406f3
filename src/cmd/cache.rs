//! `pollen cache`: the local daemon's cache by task (what `dfcache` does): list it, show one
//! task, remove one. A task is named by its id (or a unique prefix of it) or by the URL it
//! was downloaded from.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use indicatif::HumanBytes as H;
use pollen_proto::daemon::{RemoveRequest, StatRequest, StatResponse, TaskStat};

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
    }
    Ok(ExitCode::SUCCESS)
}

async fn stat(daemon: &super::daemon_client::DaemonSocket) -> anyhow::Result<StatResponse> {
    let mut client = daemon.connect().await?;
    Ok(client
        .stat(StatRequest {})
        .await
        .map_err(|s| anyhow!("the daemon did not answer: {}", s.message()))?
        .into_inner())
}

fn held_percent(t: &TaskStat) -> u64 {
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

/// The task `name` names: an id, a unique id prefix (6 hex digits or more), or a URL (the
/// task of that URL without tag or application, or the one task downloaded from it).
fn find<'a>(stat: &'a StatResponse, name: &str) -> anyhow::Result<&'a TaskStat> {
    let name = name.trim();
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
        let none = find(&stat, "http://o/none").expect_err("absent");
        assert!(format!("{none}").contains("pollen cache ls"), "{none}");
    }
}
