//! `pollen status`: what the local daemon is doing, in one screen: who it is, whether it
//! reaches its schedulers, how full its cache is, what it moved, and the tasks it used last.

use std::process::ExitCode;

use clap::Args;
use indicatif::HumanBytes as H;
use pollen_proto::daemon::{StatRequest, StatResponse, TaskStat};

/// `pollen status` flags.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Recent tasks to list (most recently used first); 0 lists none.
    #[arg(long, default_value_t = 10)]
    pub tasks: usize,
    /// Print everything as one JSON object instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub daemon: super::daemon_client::DaemonSocket,
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut client = args.daemon.connect().await?;
    let stat = client
        .stat(StatRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("the daemon did not answer: {}", s.message()))?
        .into_inner();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(&stat, args.tasks))?
        );
    } else {
        print!("{}", report(&stat, args.tasks, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// The tasks most recently used first, at most `n`.
fn recent(stat: &StatResponse, n: usize) -> Vec<&TaskStat> {
    let mut tasks: Vec<&TaskStat> = stat.tasks.iter().collect();
    tasks.sort_by(|a, b| {
        b.last_access
            .cmp(&a.last_access)
            .then(a.task_id.cmp(&b.task_id))
    });
    tasks.truncate(n);
    tasks
}

fn rate(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "unlimited".into()
    } else {
        format!("{}/s", H(bytes_per_sec))
    }
}

fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    match now.saturating_sub(then) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// The whole screen, as text.
fn report(stat: &StatResponse, tasks: usize, now: u64) -> String {
    let mut out = String::new();
    let mut row = |label: &str, text: String| out.push_str(&format!("{label:<11}{text}\n"));
    row(
        "daemon",
        format!("{} (serves peers on {})", stat.host_id, stat.upload_addr),
    );
    row(
        "scheduler",
        match (stat.schedulers.len(), stat.scheduler_sessions) {
            (0, _) => "none configured: every download reads its origin".into(),
            (n, 0) => format!(
                "not connected to {} ({}): downloads read their origin until one is back",
                if n == 1 { "it" } else { "any of them" },
                stat.schedulers.join(", ")
            ),
            (n, open) => format!("connected, {open} of {n} ({})", stat.schedulers.join(", ")),
        },
    );
    let mut mirror = if stat.proxy_addr.is_empty() {
        "off".to_string()
    } else {
        format!("proxy and mirror on {}", stat.proxy_addr)
    };
    for m in &stat.registry_mirrors {
        mirror.push_str(&format!("; {} on {}", m.registry, m.addr));
    }
    row("mirror", mirror);
    let held: u64 = stat.tasks.iter().map(|t| t.held_bytes).sum();
    let complete = stat.tasks.iter().filter(|t| t.complete).count();
    let quota = if stat.cache_quota == 0 {
        "no quota".to_string()
    } else {
        format!("quota {}", H(stat.cache_quota))
    };
    row(
        "cache",
        format!(
            "{} held in {} tasks ({complete} complete), {quota}",
            H(held),
            stat.tasks.len()
        ),
    );
    row(
        "traffic",
        format!(
            "{} from origins, {} from peers, {} to peers; {} pieces refused for bad data",
            H(stat.origin_bytes),
            H(stat.p2p_download_bytes),
            H(stat.upload_bytes),
            stat.pieces_rejected
        ),
    );
    row(
        "limits",
        format!(
            "upload {}, download {}, from origins {}, {} upload connections",
            rate(stat.upload_rate_limit),
            rate(stat.download_rate_limit),
            rate(stat.back_to_source_rate_limit),
            stat.max_upload_connections
        ),
    );
    let recent = recent(stat, tasks);
    if !recent.is_empty() {
        out.push_str("\nrecent tasks, last used first:\n");
        for t in recent {
            let state = if t.complete {
                "complete".to_string()
            } else {
                format!("{}/{} pieces", t.pieces_present, t.piece_count)
            };
            let private = if t.private { " (private)" } else { "" };
            out.push_str(&format!(
                "  {}  {:<14} {:>10}  {:<12}  {}{private}\n",
                &t.task_id[..t.task_id.len().min(12)],
                state,
                H(t.content_length).to_string(),
                ago(now, t.last_access),
                t.url
            ));
        }
    }
    out
}

fn json(stat: &StatResponse, tasks: usize) -> serde_json::Value {
    let recent: Vec<serde_json::Value> = recent(stat, tasks)
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "task_id": t.task_id,
                "url": t.url,
                "content_length": t.content_length,
                "held_bytes": t.held_bytes,
                "pieces": t.piece_count,
                "pieces_present": t.pieces_present,
                "complete": t.complete,
                "private": t.private,
                "last_access": t.last_access,
            })
        })
        .collect();
    serde_json::json!({
        "host_id": stat.host_id,
        "upload_addr": stat.upload_addr,
        "schedulers": stat.schedulers,
        "scheduler_sessions": stat.scheduler_sessions,
        "proxy_addr": stat.proxy_addr,
        "registry_mirrors": stat.registry_mirrors.iter().map(|m| serde_json::json!({"registry": m.registry, "addr": m.addr})).collect::<Vec<_>>(),
        "cache": {
            "tasks": stat.tasks.len(),
            "complete": stat.tasks.iter().filter(|t| t.complete).count(),
            "held_bytes": stat.tasks.iter().map(|t| t.held_bytes).sum::<u64>(),
            "quota": stat.cache_quota,
        },
        "origin_bytes": stat.origin_bytes,
        "peer_bytes": stat.p2p_download_bytes,
        "upload_bytes": stat.upload_bytes,
        "pieces_rejected": stat.pieces_rejected,
        "limits": {
            "upload": stat.upload_rate_limit,
            "download": stat.download_rate_limit,
            "back_to_source": stat.back_to_source_rate_limit,
            "upload_connections": stat.max_upload_connections,
        },
        "recent_tasks": recent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollen_proto::daemon::RegistryMirror;

    fn task(id: &str, last_access: u64, complete: bool) -> TaskStat {
        TaskStat {
            task_id: id.repeat(64 / id.len()),
            content_length: 3 << 20,
            piece_count: 1,
            pieces_present: u32::from(complete),
            complete,
            url: format!("http://origin/{id}"),
            last_access,
            held_bytes: if complete { 3 << 20 } else { 0 },
            private: false,
        }
    }

    #[test]
    fn the_screen_names_each_part_in_human_units() {
        let stat = StatResponse {
            host_id: "node-1".into(),
            upload_addr: "10.0.0.1:4100".into(),
            schedulers: vec!["http://s1:8002".into(), "http://s2:8002".into()],
            scheduler_sessions: 1,
            proxy_addr: "127.0.0.1:65001".into(),
            registry_mirrors: vec![RegistryMirror {
                registry: "ghcr.io".into(),
                addr: "127.0.0.1:5001".into(),
            }],
            origin_bytes: 1 << 30,
            upload_bytes: 3 << 30,
            cache_quota: 10 << 30,
            upload_rate_limit: 100 << 20,
            max_upload_connections: 64,
            tasks: vec![
                task("a", 990, true),
                task("b", 400, false),
                task("c", 999, true),
            ],
            ..Default::default()
        };
        let text = report(&stat, 2, 1000);
        for want in [
            "daemon     node-1 (serves peers on 10.0.0.1:4100)",
            "scheduler  connected, 1 of 2 (http://s1:8002, http://s2:8002)",
            "mirror     proxy and mirror on 127.0.0.1:65001; ghcr.io on 127.0.0.1:5001",
            "cache      6.00 MiB held in 3 tasks (2 complete), quota 10.00 GiB",
            "traffic    1.00 GiB from origins, 0 B from peers, 3.00 GiB to peers",
            "limits     upload 100.00 MiB/s, download unlimited",
            "recent tasks, last used first:",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        // Most recent first, and only two of the three.
        let c = text.find("http://origin/c").expect("c listed");
        let a = text.find("http://origin/a").expect("a listed");
        assert!(c < a, "{text}");
        assert!(!text.contains("http://origin/b"), "{text}");
        assert!(
            text.contains("1 s ago") && text.contains("10 s ago"),
            "{text}"
        );
    }

    #[test]
    fn a_daemon_without_or_cut_off_from_its_scheduler_says_where_downloads_go() {
        let mut stat = StatResponse::default();
        assert!(report(&stat, 10, 0).contains("none configured: every download reads its origin"));
        stat.schedulers = vec!["http://s1:8002".into()];
        assert!(report(&stat, 10, 0)
            .contains("not connected to it (http://s1:8002): downloads read their origin"));
        assert!(
            !report(&stat, 10, 0).contains("recent tasks"),
            "no tasks, no list"
        );
    }

    #[test]
    fn ages_read_in_the_largest_whole_unit() {
        assert_eq!(ago(100, 0), "never");
        assert_eq!(ago(100, 41), "59 s ago");
        assert_eq!(ago(3999, 400), "59 min ago");
        assert_eq!(ago(100_000, 0), "never");
        assert_eq!(ago(200_000, 100), "2 days ago");
        assert_eq!(ago(10_000, 2_800), "2 h ago");
    }
}
