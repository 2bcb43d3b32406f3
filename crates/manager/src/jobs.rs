//! The job runner: takes pending jobs (and, after a restart, running ones) and drives them to
//! `succeeded` or `failed` with a reason.
//!
//! Find-task and delete-task jobs name tasks (by URL or id) and ask every active peer of
//! their clusters to list or remove each one; a peer's answer is its result's detail.
//!
//! A preheat job resolves what to fetch (its URLs, or an image reference through the OCI
//! distribution API to the blob URLs of every platform or one), picks the active seed peers
//! of its clusters, records one pending result per (peer, URL), and sends each to its peer as
//! a command, at most `concurrency` at once. Results are written as they settle, so a job
//! resumed after a restart only runs what was not yet done. A peer not connected within
//! `job_peer_grace` fails its part with that reason; nothing waits forever.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use pollen_core::error_kind::Chain;
use pollen_core::{TaskId, TaskIdError, TaskKey};
use pollen_oci::{Credentials, ImageReference, Platform, Registry};
use pollen_proto::manager::{command, CommandResult, DeleteTask, Header, ListTasks, Preheat};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::rest::AppState;
use crate::store::jobs::{self, JobArgs, Kind};
use crate::store::peers;

/// One unit of a preheat: a URL with its headers and digest.
#[derive(Clone)]
struct Target {
    url: String,
    headers: Vec<Header>,
    digest: String,
    /// Bytes per second the fetch may take (0: no job limit).
    rate_limit: u64,
}

/// Polls for jobs to run until `shutdown`.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let running: Arc<Mutex<HashSet<i64>>> = Default::default();
    loop {
        match jobs::unfinished(&state.db.pool).await {
            Ok(ids) => {
                for id in ids {
                    if !running.lock().unwrap_or_else(|e| e.into_inner()).insert(id) {
                        continue;
                    }
                    let (state, running, stop) = (state.clone(), running.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = run_job(&state, id) => {}
                        }
                        running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                    });
                }
            }
            Err(e) => warn!(error = %e, "cannot list jobs"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.jobs_added.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

async fn run_job(state: &AppState, id: i64) {
    let pool = &state.db.pool;
    let outcome = drive(state, id).await;
    let (st, reason) = match &outcome {
        Ok(()) => (jobs::SUCCEEDED, String::new()),
        Err(r) => (jobs::FAILED, r.clone()),
    };
    info!(job = id, state = st, reason = %reason, "job finished");
    if let Err(e) = jobs::set_state(pool, id, st, &reason).await {
        warn!(job = id, error = %e, "cannot record a job's end");
    }
}

async fn drive(state: &AppState, id: i64) -> Result<(), String> {
    let pool = &state.db.pool;
    let db = |e: sqlx::Error| format!("database error: {e}");
    let job = jobs::get(pool, id)
        .await
        .map_err(db)?
        .ok_or("the job was deleted")?;
    jobs::set_state(pool, id, jobs::RUNNING, "")
        .await
        .map_err(db)?;
    let units: Vec<Unit> = match job.kind {
        Kind::Preheat => {
            let stored = jobs::secret(pool, id).await.map_err(db)?;
            let opened = state.secrets.open(&stored).map_err(|e| e.to_string())?;
            // A job stored before secrets were sealed holds its bare password, and its
            // headers in the clear in its arguments.
            let secret = serde_json::from_str::<jobs::JobSecret>(&opened).unwrap_or_else(|_| {
                jobs::JobSecret {
                    password: opened,
                    headers: job.args.headers.clone(),
                }
            });
            targets(&job.args, &secret.headers, secret.password)
                .await?
                .into_iter()
                .map(Unit::Fetch)
                .collect()
        }
        Kind::FindTask | Kind::DeleteTask => task_units(job.kind, &job.args)?,
    };
    if units.is_empty() {
        return Err("nothing to do".into());
    }
    let chosen = choose_hosts(state, &job.args, job.kind).await.map_err(db)?;
    // A resumed job keeps the hosts it planned, even if they are not connected yet.
    let planned: HashSet<String> = job.results.iter().map(|r| r.host_id.clone()).collect();
    let hosts: Vec<String> = if planned.is_empty() {
        chosen
    } else {
        planned.into_iter().collect()
    };
    if hosts.is_empty() {
        let on_seeds =
            job.kind == Kind::Preheat && job.args.peer_count == 0 && job.args.peer_percentage == 0;
        return Err(format!(
            "no active {} in {}",
            if on_seeds { "seed peer" } else { "peer" },
            if job.args.scheduler_cluster_ids.is_empty() {
                "any cluster".to_string()
            } else {
                format!("clusters {:?}", job.args.scheduler_cluster_ids)
            }
        ));
    }
    for h in &hosts {
        for u in &units {
            jobs::plan(pool, id, h, u.label()).await.map_err(db)?;
        }
    }
    // Settled before a restart: kept. (Rows planned just now are all pending.)
    let done: HashSet<(String, String)> = job
        .results
        .iter()
        .filter(|r| r.state != jobs::PENDING)
        .map(|r| (r.host_id.clone(), r.url.clone()))
        .collect();
    let work: Vec<(String, Unit)> = hosts
        .iter()
        .flat_map(|h| units.iter().map(move |u| (h.clone(), u.clone())))
        .filter(|(h, u)| !done.contains(&(h.clone(), u.label().to_string())))
        .collect();
    let concurrency = job.args.concurrency.clamp(1, 64) as usize;
    let grace = state.cfg.job_peer_grace;
    let timeout = state.cfg.job_command_timeout;
    futures::stream::iter(work)
        .for_each_concurrent(concurrency, |(host, unit)| async move {
            let r = state
                .hub
                .run(&host, unit.command(), grace, timeout)
                .await
                .map(|answer| unit.detail(&answer));
            if let Err(e) = &r {
                warn!(job = id, %host, target = %unit.label(), error = %e, "a job's command failed on a peer");
            }
            let outcome = r.as_deref().map_err(String::as_str);
            if let Err(e) = jobs::settle(pool, id, &host, unit.label(), outcome).await {
                warn!(job = id, error = %e, "cannot record a job result");
            }
        })
        .await;
    let results = jobs::get(pool, id)
        .await
        .map_err(db)?
        .map(|j| j.results)
        .unwrap_or_default();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.state != jobs::SUCCEEDED)
        .collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {} commands failed; first: {} on {}: {}",
            failed.len(),
            results.len(),
            first.url,
            first.host_id,
            first.error
        )),
    }
}

/// The hosts a job runs on: for a preheat the active seed peers of its clusters, or a count
/// or percentage of their ordinary peers chosen at random; for a find or delete every active
/// peer.
async fn choose_hosts(
    state: &AppState,
    args: &JobArgs,
    kind: Kind,
) -> Result<Vec<String>, sqlx::Error> {
    let on_ordinary = args.peer_count > 0 || args.peer_percentage > 0;
    let filter = peers::Filter {
        seed: match kind {
            Kind::Preheat => Some(!on_ordinary),
            Kind::FindTask | Kind::DeleteTask => None,
        },
        active_only: true,
        ..Default::default()
    };
    let mut hosts: Vec<String> = peers::list(&state.db.pool, filter, 100_000, 0)
        .await?
        .into_iter()
        .filter(|p| {
            args.scheduler_cluster_ids.is_empty()
                || p.scheduler_cluster_id
                    .is_some_and(|c| args.scheduler_cluster_ids.contains(&c))
        })
        .map(|p| p.host_id)
        .collect();
    if kind == Kind::Preheat && on_ordinary {
        let n = if args.peer_count > 0 {
            args.peer_count as usize
        } else {
            (hosts.len() * args.peer_percentage as usize).div_ceil(100)
        };
        use rand::seq::SliceRandom as _;
        hosts.shuffle(&mut rand::rng());
        hosts.truncate(n);
    }
    Ok(hosts)
}

/// One unit of a job, run on each chosen peer.
#[derive(Clone)]
enum Unit {
    /// Fetch a URL into the cache.
    Fetch(Target),
    /// Say whether the task is held (`label`: the URL or task id the job named).
    Find { label: String, task_id: String },
    /// Remove the task from the cache.
    Delete { label: String, task_id: String },
}

impl Unit {
    /// What the job's results call it.
    fn label(&self) -> &str {
        match self {
            Self::Fetch(t) => &t.url,
            Self::Find { label, .. } | Self::Delete { label, .. } => label,
        }
    }

    fn command(&self) -> command::Command {
        match self {
            Self::Fetch(t) => command::Command::Preheat(Preheat {
                url: t.url.clone(),
                headers: t.headers.clone(),
                digest: t.digest.clone(),
                rate_limit: t.rate_limit,
            }),
            Self::Find { task_id, .. } => command::Command::ListTasks(ListTasks {
                task_id: task_id.clone(),
            }),
            Self::Delete { task_id, .. } => command::Command::DeleteTask(DeleteTask {
                task_id: task_id.clone(),
            }),
        }
    }

    /// The result's detail, from the peer's answer.
    fn detail(&self, answer: &CommandResult) -> String {
        let held = answer.tasks.first();
        match (self, held) {
            (Self::Fetch(_), _) => String::new(),
            (Self::Find { .. } | Self::Delete { .. }, None) => "absent".into(),
            (Self::Find { .. }, Some(t)) if t.complete => "complete".into(),
            (Self::Find { .. }, Some(t)) => {
                format!("partial {}/{}", t.pieces_present, t.piece_count)
            }
            (Self::Delete { .. }, Some(_)) => "deleted".into(),
        }
    }
}

/// The tasks a find or delete job names: its task ids, and the task id of each URL (with
/// the job's tag, application and filtered query, as `pollen get` would name it).
fn task_units(kind: Kind, args: &JobArgs) -> Result<Vec<Unit>, String> {
    let mut named: Vec<(String, String)> = Vec::new();
    for t in &args.task_ids {
        let id: TaskId = t.parse().map_err(|e: TaskIdError| e.to_string())?;
        named.push((t.clone(), id.hex()));
    }
    for u in &args.urls {
        let key = TaskKey {
            url: u.clone(),
            digest: None,
            tag: args.tag.clone(),
            application: args.application.clone(),
            filtered_query: args.filtered_query.clone(),
            private: false,
            // A bucket object's task fetched at a version is named by its id, not its URL.
            version: String::new(),
        };
        let id = key.task_id().map_err(|e| format!("{u}: {e}"))?;
        named.push((u.clone(), id.hex()));
    }
    Ok(named
        .into_iter()
        .map(|(label, task_id)| match kind {
            Kind::DeleteTask => Unit::Delete { label, task_id },
            _ => Unit::Find { label, task_id },
        })
        .collect())
}

/// What a preheat fetches.
async fn targets(
    args: &JobArgs,
    headers: &[String],
    password: String,
) -> Result<Vec<Target>, String> {
    let headers: Vec<Header> = headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, v)| Header {
            name: n.trim().to_string(),
            value: v.trim().to_string(),
        })
        .collect();
    if args.image.is_empty() {
        return Ok(args
            .urls
            .iter()
            .map(|u| Target {
                url: u.clone(),
                headers: headers.clone(),
                digest: String::new(),
                rate_limit: args.rate_limit,
            })
            .collect());
    }
    let reference = ImageReference::parse(&args.image).map_err(|e| e.to_string())?;
    let platform: Option<Platform> = if args.platform.is_empty() {
        None
    } else {
        Some(args.platform.parse::<Platform>()?)
    };
    let credentials = (!args.username.is_empty()).then(|| Credentials {
        username: args.username.clone(),
        password,
    });
    let insecure = args.insecure || reference.is_loopback_registry();
    let mut registry = Registry::for_reference(&reference, insecure, credentials)
        .map_err(|e| Chain(&e).to_string())?;
    let resolved = pollen_oci::resolve(&mut registry, &reference, platform.as_ref())
        .await
        .map_err(|e| format!("cannot resolve {reference}: {}", Chain(&e)))?;
    let auth: Vec<Header> = registry
        .blob_headers()
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect();
    Ok(resolved
        .blobs
        .iter()
        .map(|b| Target {
            url: registry.blob_url(&reference.repository, &b.digest),
            headers: auth.clone(),
            digest: b.digest.to_string(),
            rate_limit: args.rate_limit,
        })
        .collect())
}
