//! One host session (and load report loop) per scheduler in use, started and stopped as the
//! set of schedulers changes.
//!
//! Every scheduler of the daemon's cluster must know this host — to offer it as a parent
//! for the tasks hashed to that scheduler, and to send it seed triggers — so the daemon
//! keeps a session with each of them, not only with the one a download uses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pollen_core::places::Places;
use pollen_proto::scheduler::HostInfo;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::download::conductor::Conductor;
use crate::download::task_spec::TaskSpec;
use crate::links::scheduler_link::SchedulerLink;
use crate::links::scheduler_set::Change;
use crate::stats::DaemonStats;

pub(crate) struct HostSessions {
    info: HostInfo,
    conductor: Arc<Conductor>,
    stats: Arc<DaemonStats>,
    /// The upload server's places: their cap goes with every load report.
    places: Arc<Places>,
    shutdown: CancellationToken,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl HostSessions {
    pub fn new(
        info: HostInfo,
        conductor: Arc<Conductor>,
        stats: Arc<DaemonStats>,
        places: Arc<Places>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            info,
            conductor,
            stats,
            places,
            shutdown,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Stops the sessions of schedulers that left and opens sessions with new ones.
    pub fn apply(&self, change: Change) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for url in change.removed {
            if let Some(t) = running.remove(&url) {
                info!(scheduler = %url, "scheduler left the placement; closing its host session");
                t.cancel();
            }
        }
        for link in change.added {
            let token = self.shutdown.child_token();
            running.insert(link.url.clone(), token.clone());
            self.start(link, token);
        }
    }

    fn start(&self, link: SchedulerLink, token: CancellationToken) {
        let c = self.conductor.clone();
        let on_download = move |task| match TaskSpec::from_proto(task) {
            // Only a seed reads the origin for the fleet: a plain peer that obeyed would let
            // whoever speaks for the scheduler point it at any URL.
            Ok(_) if !c.cfg.seed => {
                warn!(
                    "ignoring a download order from the scheduler: this daemon is not a seed peer"
                );
            }
            Ok(mut spec) => {
                info!(url = %spec.key.url, "scheduler asked this seed peer to fetch a task");
                spec.ordered_by_fleet = true;
                let _ = c.start(spec);
            }
            Err(e) => warn!(error = %e, "ignoring an invalid task from the scheduler"),
        };
        let c = self.conductor.clone();
        let url = link.url.clone();
        let on_open = move || {
            let c = c.clone();
            let url = url.clone();
            let tasks = c.tasks.clone();
            tasks.spawn(async move { c.announce_held(&url).await });
        };
        self.conductor.tasks.spawn(link.clone().run_load_reports(
            self.info.host_id.clone(),
            self.stats.clone(),
            self.places.clone(),
            Duration::from_secs(1),
            self.conductor.dropped.subscribe(),
            token.clone(),
        ));
        self.conductor.tasks.spawn(link.run_host_session(
            self.info.clone(),
            self.conductor.grant_keys.clone(),
            on_download,
            on_open,
            self.stats.clone(),
            token,
        ));
    }
}
