//! The daemon's session with the manager: say who this host is, and use the schedulers of
//! each placement the manager sends.
//!
//! The manager is never on a download's path. The last placement is kept in
//! `DATA_DIR/placement.json` and used at the next start until the manager answers; while the
//! manager is unreachable the placement in force stays, and the session is retried with
//! backoff.
//!
//! The manager also sends commands down the session and gets each one's outcome back on it:
//! a preheat job's URL (run as a cache-only download), a listing of the cache (the console's
//! view of a peer, find-task jobs) and the removal of a task (cache-delete jobs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::TaskId;
use pollen_proto::manager::manager_client::ManagerClient;
use pollen_proto::manager::{
    command, daemon_message, manager_message, Command, CommandResult, DaemonHello, DaemonMessage,
    HeldTask,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use crate::control::host_sessions::HostSessions;
use crate::download::conductor::Conductor;
use crate::links::scheduler_set::SchedulerSet;
use crate::live_limits::{ClusterLimits, LiveLimits};

/// A placement as cached on disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CachedPlacement {
    pub scheduler_cluster_id: i64,
    pub scheduler_urls: Vec<String>,
    /// The cluster's settings for daemons, when the manager sent them.
    #[serde(default)]
    pub config: Option<ClusterLimits>,
}

pub(crate) struct ManagerSession {
    pub url: String,
    /// The manager's endpoint, TLS applied ([`pollen_tls::grpc_endpoint`]).
    pub endpoint: Endpoint,
    pub connect_timeout: Duration,
    pub hello: DaemonHello,
    pub set: Arc<SchedulerSet>,
    /// A seed's join token, shown when the session opens.
    pub join_token: Option<pollen_core::join::JoinToken>,
    pub sessions: Arc<HostSessions>,
    pub cache: PathBuf,
    pub conductor: Arc<Conductor>,
    pub limits: Arc<LiveLimits>,
}

/// Runs one command to its end.
async fn run_command(conductor: Arc<Conductor>, cmd: Command) -> CommandResult {
    let outcome = match cmd.command {
        Some(command::Command::Preheat(p)) => preheat(conductor, p).await.map(|_| Vec::new()),
        Some(command::Command::ListTasks(l)) => list_tasks(&conductor, &l.task_id),
        Some(command::Command::DeleteTask(d)) => delete_task(conductor, &d.task_id).await,
        None => Err("an unknown command (is this daemon older than the manager?)".into()),
    };
    match outcome {
        Ok(tasks) => CommandResult {
            id: cmd.id,
            ok: true,
            error: String::new(),
            tasks,
        },
        Err(error) => CommandResult {
            id: cmd.id,
            ok: false,
            error,
            tasks: Vec::new(),
        },
    }
}

fn held(e: &pollen_storage::TaskEntry) -> HeldTask {
    let snap = e.snapshot();
    HeldTask {
        task_id: e.id.hex(),
        url: snap.meta.url.clone(),
        content_length: snap.meta.content_length,
        piece_count: snap.present.len(),
        pieces_present: snap.present.count(),
        complete: snap.meta.complete,
        last_access: snap.meta.last_access,
        private: snap.meta.private,
    }
}

fn task_id(hex: &str) -> Result<TaskId, String> {
    hex.parse::<TaskId>().map_err(|e| e.to_string())
}

/// The tasks in the cache: all, or the one named.
fn list_tasks(conductor: &Conductor, only: &str) -> Result<Vec<HeldTask>, String> {
    if only.is_empty() {
        return Ok(conductor.store.tasks().iter().map(|e| held(e)).collect());
    }
    let id = task_id(only)?;
    Ok(conductor.store.get(&id).iter().map(|e| held(e)).collect())
}

/// Removes a task from the cache; answers with it, or nothing when it was not held. A task
/// being downloaded is not removed (its download would write into a removed file).
async fn delete_task(conductor: Arc<Conductor>, hex: &str) -> Result<Vec<HeldTask>, String> {
    let id = task_id(hex)?;
    let Some(entry) = conductor.remove_held(id).await.map_err(|e| e.to_string())? else {
        return Ok(Vec::new());
    };
    let gone = held(&entry);
    info!(task = %gone.task_id, url = %gone.url, "task deleted from the cache by the manager");
    Ok(vec![gone])
}

/// Fetches a URL into the cache, as `pollen get --cache-only` would.
async fn preheat(
    conductor: Arc<Conductor>,
    p: pollen_proto::manager::Preheat,
) -> Result<(), String> {
    let req = pollen_proto::daemon::DownloadRequest {
        url: p.url,
        digest: p.digest,
        headers: p
            .headers
            .into_iter()
            .map(|h| pollen_proto::daemon::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        cache_only: true,
        ..Default::default()
    };
    // Resolved as `pollen get` would, so the preheated task is the one users' downloads name.
    let mut spec = crate::download::task_spec::TaskSpec::resolved(
        req,
        &conductor.source,
        pollen_source::OriginPolicy::Fleet,
    )
    .await
    .map_err(|e| pollen_core::error_kind::Chain(&e).to_string())?;
    spec.rate_limit = p.rate_limit;
    spec.ordered_by_fleet = true;
    let mut watch = conductor.start(spec);
    loop {
        if let Some(r) = watch.result.borrow_and_update().clone() {
            return r.map_err(|e| pollen_core::error_kind::Chain(&e).to_string());
        }
        if watch.result.changed().await.is_err() {
            return Err("the daemon is shutting down".into());
        }
    }
}

impl ManagerSession {
    /// The cached placement, if any.
    pub fn cached(&self) -> Option<CachedPlacement> {
        let text = std::fs::read_to_string(&self.cache).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Uses `p`'s schedulers, and its settings if it carries any, from now on.
    pub fn apply(&self, p: &CachedPlacement) {
        if let Some(c) = &p.config {
            self.limits.apply(c);
        }
        match self.set.replace(&p.scheduler_urls) {
            Ok(change) => self.sessions.apply(change),
            Err(e) => warn!(error = %e, "the manager sent an unusable scheduler URL"),
        }
    }

    fn save(&self, p: &CachedPlacement) {
        let tmp = self.cache.with_extension("json.tmp");
        let written = serde_json::to_vec(p)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &self.cache));
        if let Err(e) = written {
            warn!(error = %e, "cannot cache the placement");
        }
    }

    /// Holds the session until `shutdown`, re-opening it with backoff when it breaks.
    pub async fn run(self, shutdown: CancellationToken) {
        let endpoint = self
            .endpoint
            .clone()
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        let client = ManagerClient::new(endpoint.connect_lazy());
        let mut backoff = pollen_core::reconnect::Reconnect::default();
        loop {
            let (tx, rx) = mpsc::channel(4);
            let hello = DaemonMessage {
                message: Some(daemon_message::Message::Hello(self.hello.clone())),
            };
            let _ = tx.send(hello).await;
            let mut c = client.clone();
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = c.daemon_session(pollen_tls::with_join_token(ReceiverStream::new(rx), self.join_token.as_ref())) => r,
            };
            match opened {
                Ok(resp) => {
                    let mut inbound = resp.into_inner();
                    loop {
                        let m = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = inbound.message() => m,
                        };
                        match m {
                            Ok(Some(msg)) => {
                                backoff.reset();
                                if let Some(manager_message::Message::Command(cmd)) = msg.message {
                                    info!(id = cmd.id, "command from the manager");
                                    let (c, tx) = (self.conductor.clone(), tx.clone());
                                    self.conductor.tasks.spawn(async move {
                                        let result = run_command(c, cmd).await;
                                        let _ = tx
                                            .send(DaemonMessage {
                                                message: Some(daemon_message::Message::Result(
                                                    result,
                                                )),
                                            })
                                            .await;
                                    });
                                } else if let Some(manager_message::Message::Placement(p)) =
                                    msg.message
                                {
                                    let p = CachedPlacement {
                                        scheduler_cluster_id: p.scheduler_cluster_id,
                                        scheduler_urls: p.scheduler_urls,
                                        // Without settings (no cluster to join), the
                                        // last ones stay in force, now and after a restart.
                                        config: p
                                            .config
                                            .map(ClusterLimits::from)
                                            .or_else(|| self.cached().and_then(|c| c.config)),
                                    };
                                    info!(cluster = p.scheduler_cluster_id, schedulers = ?p.scheduler_urls, "placement from the manager");
                                    self.apply(&p);
                                    self.save(&p);
                                }
                            }
                            Ok(None) => {
                                warn!(manager = %self.url, "the manager closed the session; keeping the placement in force");
                                break;
                            }
                            Err(e) => {
                                warn!(manager = %self.url, error = %e.message(), "manager session broke; keeping the placement in force");
                                break;
                            }
                        }
                    }
                    drop(tx);
                }
                Err(e) => {
                    warn!(manager = %self.url, error = %e.message(), "cannot reach the manager; keeping the placement in force");
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}
