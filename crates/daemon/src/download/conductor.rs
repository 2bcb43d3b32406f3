//! The conductor: runs every download of this daemon, one run per task.
//!
//! Who sends what: callers (local API, seed triggers) call [`Conductor::start`]; a second
//! caller of the same task joins the running download instead of starting another. A run owns
//! the task's announce stream, its parent fetchers and at most one origin fetcher; those report
//! finished pieces back over a channel and the run forwards them to the scheduler.
//!
//! Back-to-source happens when the scheduler says so, when no scheduler can be reached, when
//! the scheduler is lost and no parent is working, or when no parent shows up within
//! `parent_wait`. In every case the daemon logs why.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_core::error_kind::Chain;
use pollen_core::{PieceDigest, TaskId};
use pollen_proto::scheduler::{
    peer_event, scheduler_event, ContentInfo, NeedParents, ParentFailed, PeerFailed, PeerFinished,
    Register,
};
use pollen_source::{OriginPolicy, Source as _, Sources};
use pollen_storage::Store;
use pollen_wire::ClientTls;
use rand::RngExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use crate::config::DaemonConfig;
use crate::download::origin_fetcher::OriginJob;
use crate::download::parent_fetcher::{FetchContext, FetchError};
use crate::download::parent_pool::ParentPool;
use crate::download::piece_claims::PieceClaims;
use crate::download::report::Report;
use crate::download::scheduler_events::{announce, close_announce, next_event, pieces_event};
use crate::download::task_spec::TaskSpec;
use crate::download::watch::{publish, set_phase, DownloadWatch, Outcome, Phase, Progress};
use crate::error::DownloadError;
use crate::links::announce_queue::AnnounceQueue;
use crate::links::scheduler_link::Announce;
use crate::links::scheduler_set::SchedulerSet;
use crate::stats::DaemonStats;
use crate::traffic::{Pace, Priority, Traffic};

/// After every parent offered so far has failed, how long the scheduler gets to offer a
/// working one before the download goes to the origin (rather than the whole `parent_wait`:
/// peers that cannot be reached must not slow a pull down by much).
const AFTER_PARENTS_FAILED: Duration = Duration::from_secs(2);

struct Inflight {
    progress: watch::Receiver<Progress>,
    result: watch::Receiver<Outcome>,
    priority: Arc<watch::Sender<Priority>>,
    /// Stops the run (see [`Interest`]).
    stop: CancellationToken,
    /// Local callers holding an [`Interest`] in it.
    callers: usize,
    /// Something other than a local caller asked for it (a seed trigger, a preheat, a mirror
    /// client, a prefetch): it runs to the end whoever leaves.
    detached: bool,
}

/// A local caller's hold on a download. When the last one lets go (the caller went away,
/// e.g. Ctrl-C) and nothing else asked for the task, the run stops; the pieces it holds stay,
/// so a rerun resumes.
pub(crate) struct Interest {
    conductor: Arc<Conductor>,
    id: TaskId,
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut map = self
            .conductor
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get_mut(&self.id) {
            f.callers = f.callers.saturating_sub(1);
            if f.callers == 0 && !f.detached && !f.stop.is_cancelled() {
                info!(task = %&self.id.hex()[..12], "nobody waits for the download any more; stopping it (a rerun resumes)");
                f.stop.cancel();
            }
        }
    }
}

/// A task being imported: busy (never evicted nor removed) until dropped.
pub(crate) struct Reservation {
    imports: Arc<Mutex<HashSet<TaskId>>>,
    id: TaskId,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

pub(crate) struct Conductor {
    pub store: Arc<Store>,
    pub stats: Arc<DaemonStats>,
    pub cfg: Arc<DaemonConfig>,
    pub source: Arc<Sources>,
    /// The schedulers in use (empty: every download goes to the origin).
    pub schedulers: Arc<SchedulerSet>,
    pub host_id: String,
    pub traffic: Traffic,
    pub shutdown: CancellationToken,
    /// TLS towards parents, when mutual TLS is on.
    peer_tls: Option<ClientTls>,
    /// The schedulers' grant keys, learnt on host sessions; the upload port checks grants
    /// for private tasks against them.
    pub grant_keys: crate::upload::grant_keys::GrantKeys,
    inflight: Mutex<HashMap<TaskId, Inflight>>,
    /// Tasks being imported (see [`Conductor::reserve`]).
    imports: Arc<Mutex<HashSet<TaskId>>>,
    /// Tasks removed from the store (evicted, deleted): each scheduler link tells its
    /// scheduler at once, so this host is no longer offered as their parent.
    pub dropped: tokio::sync::broadcast::Sender<TaskId>,
    /// Every task the daemon spawns for its work (downloads, origin fetches, answers to the
    /// CLI, the scheduler's and the manager's orders): shutdown waits for them all.
    pub tasks: TaskTracker,
}

impl Conductor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        stats: Arc<DaemonStats>,
        cfg: Arc<DaemonConfig>,
        source: Arc<Sources>,
        schedulers: Arc<SchedulerSet>,
        host_id: String,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            traffic: Traffic::new(&cfg),
            store,
            stats,
            cfg,
            source,
            schedulers,
            host_id,
            shutdown,
            peer_tls: None,
            grant_keys: Default::default(),
            inflight: Mutex::new(HashMap::new()),
            imports: Default::default(),
            dropped: tokio::sync::broadcast::channel(1024).0,
            tasks: TaskTracker::new(),
        }
    }

    /// Removes task `id` from the cache and tells the schedulers; its entry, or `None` when
    /// it was not held. A task being downloaded is refused (its download would write into a
    /// removed file).
    pub async fn remove_held(
        &self,
        id: TaskId,
    ) -> Result<Option<Arc<pollen_storage::TaskEntry>>, DownloadError> {
        let Some(entry) = self.store.get(&id) else {
            return Ok(None);
        };
        if self.busy().contains(&id) {
            return Err(DownloadError::InvalidRequest(
                "the task is being downloaded on this host; remove it when that ends".into(),
            ));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.remove_task(&id))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        self.task_dropped(id);
        Ok(Some(entry))
    }

    /// Says that `id` is no longer held here (see [`Conductor::dropped`]).
    pub fn task_dropped(&self, id: TaskId) {
        let _ = self.dropped.send(id);
    }

    /// Checks upload grants against `keys` (the upload port's).
    pub fn with_grant_keys(mut self, keys: crate::upload::grant_keys::GrantKeys) -> Self {
        self.grant_keys = keys;
        self
    }

    /// Speaks TLS to parents.
    pub fn with_peer_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.peer_tls = tls;
        self
    }

    /// Tasks being downloaded or imported right now (never evicted).
    pub fn busy(&self) -> HashSet<TaskId> {
        let mut busy: HashSet<TaskId> = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        busy.extend(
            self.imports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter(),
        );
        busy
    }

    /// Marks `id` as being imported, while the returned guard lives; `None` when it is being
    /// downloaded or imported already.
    pub(crate) fn reserve(&self, id: TaskId) -> Option<Reservation> {
        let inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let mut imports = self.imports.lock().unwrap_or_else(|e| e.into_inner());
        if inflight.contains_key(&id) || !imports.insert(id) {
            return None;
        }
        Some(Reservation {
            imports: self.imports.clone(),
            id,
        })
    }

    /// Starts (or joins) the download of a task someone waits for; it runs to the end.
    pub fn start(self: &Arc<Self>, spec: TaskSpec) -> DownloadWatch {
        self.start_with(spec, Priority::Foreground, false)
    }

    /// Starts (or joins) the download a local caller waits for: it stops when every such
    /// caller has let go of its [`Interest`] and nothing else asked for the task.
    pub fn start_for_caller(self: &Arc<Self>, spec: TaskSpec) -> (DownloadWatch, Interest) {
        let id = spec.id;
        let watch = self.start_with(spec, Priority::Foreground, true);
        (
            watch,
            Interest {
                conductor: self.clone(),
                id,
            },
        )
    }

    /// Starts (or joins) a download nobody waits for: it yields to foreground downloads and
    /// passes the prefetch limiter until a foreground request joins it.
    pub fn prefetch(self: &Arc<Self>, spec: TaskSpec) -> DownloadWatch {
        self.start_with(spec, Priority::Background, false)
    }

    /// How strict the origin guard is for `spec`: the fleet rules for a seed peer (whoever
    /// asked: its task URLs come from other hosts) and for any download another host ordered.
    pub fn origin_policy(&self, spec: &TaskSpec) -> OriginPolicy {
        OriginPolicy::of(self.cfg.seed, spec.ordered_by_fleet)
    }

    fn start_with(
        self: &Arc<Self>,
        spec: TaskSpec,
        priority: Priority,
        caller: bool,
    ) -> DownloadWatch {
        let from_cache = self.store.get(&spec.id).is_some_and(|e| e.is_complete());
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get_mut(&spec.id) {
            if caller {
                f.callers += 1;
            } else {
                f.detached = true;
            }
            if priority == Priority::Foreground {
                self.traffic.promote(&f.priority);
            }
            return DownloadWatch {
                id: spec.id,
                progress: f.progress.clone(),
                result: f.result.clone(),
                from_cache,
            };
        }
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (result_tx, result) = watch::channel(None);
        let (pace, priority) = self.traffic.pace(priority, spec.rate_limit);
        let priority = Arc::new(priority);
        let stop = CancellationToken::new();
        map.insert(
            spec.id,
            Inflight {
                progress: progress.clone(),
                result: result.clone(),
                priority: priority.clone(),
                stop: stop.clone(),
                callers: usize::from(caller),
                detached: !caller,
            },
        );
        let this = self.clone();
        let id = spec.id;
        let span = info_span!("download", task = %&id.hex()[..12]);
        self.tasks.spawn(
            async move {
                let r = tokio::select! {
                    r = this.run(spec, pace, progress_tx) => r,
                    _ = stop.cancelled() => Err(DownloadError::Abandoned),
                };
                if let Err(e) = &r {
                    warn!(error = %pollen_core::error_kind::Chain(e), "download failed");
                }
                let _ = result_tx.send(Some(r));
                let mut map = this.inflight.lock().unwrap_or_else(|e| e.into_inner());
                map.remove(&id);
                // Under the map's lock, so no request promotes the task after this.
                this.traffic.finished(&priority);
            }
            .instrument(span),
        );
        DownloadWatch {
            id,
            progress,
            result,
            from_cache,
        }
    }

    async fn open_announce(&self, spec: &TaskSpec, peer_id: &str) -> Option<Announce> {
        let links = self.schedulers.for_task(&spec.id.hex());
        if links.is_empty() {
            info!("no scheduler available; downloading from the origin");
            return None;
        }
        let register = Register {
            peer_id: peer_id.to_string(),
            host_id: self.host_id.clone(),
            task: Some(spec.for_scheduler()),
        };
        let wait = self.cfg.connect_timeout * 2;
        // The task's own scheduler first; the others, in hash order, if it is down.
        for link in &links {
            match tokio::time::timeout(wait, link.announce(register.clone())).await {
                Ok(Ok(a)) => return Some(a),
                Ok(Err(e)) => {
                    warn!(scheduler = %link.url, error = %e.message(), "the scheduler refused the task or could not be reached");
                }
                Err(_) => {
                    warn!(scheduler = %link.url, "scheduler did not answer within {wait:?}");
                }
            }
        }
        warn!("scheduler unreachable; downloading from the origin");
        None
    }

    /// Starts reading the origin, which the download needs because of `why`; refused for a
    /// download that may not read it.
    fn spawn_origin(
        &self,
        spec: &TaskSpec,
        why: &str,
        claims: Option<Arc<PieceClaims>>,
        reports: mpsc::Sender<Report>,
        pace: &Pace,
    ) -> Result<JoinHandle<Result<(), DownloadError>>, DownloadError> {
        if spec.no_origin {
            return Err(DownloadError::NoOrigin(why.to_string()));
        }
        let job = OriginJob {
            task: spec.id,
            key: spec.key.clone(),
            headers: spec.headers.clone(),
            claims,
            source: self.source.clone(),
            store: self.store.clone(),
            stats: self.stats.clone(),
            pace: pace.clone(),
            reports,
            cfg: self.cfg.clone(),
            policy: self.origin_policy(spec),
        };
        Ok(self.tasks.spawn(job.run().in_current_span()))
    }

    async fn run(
        self: &Arc<Self>,
        spec: TaskSpec,
        pace: Pace,
        progress: watch::Sender<Progress>,
    ) -> Result<(), DownloadError> {
        // Refused before the scheduler, a parent or the origin is contacted.
        self.source
            .check(&spec.key.url, self.origin_policy(&spec))?;
        if self.serve_from_cache(&spec).await? {
            if let Some(e) = self.store.get(&spec.id) {
                let len = e.layout().content_length();
                progress.send_replace(Progress {
                    content_length: len,
                    completed: len,
                    ..Progress::default()
                });
            }
            return Ok(());
        }
        if let Some(entry) = self.store.get(&spec.id) {
            self.recheck_held_pieces(entry).await?;
        }
        let mut claims = self
            .store
            .get(&spec.id)
            .map(|e| PieceClaims::for_download(e, &self.cfg));
        if let Some(c) = &claims {
            publish(&progress, c);
        }
        set_phase(&progress, Phase::Starting);
        let peer_id = format!("{}-{:08x}", self.host_id, rand::rng().random::<u32>());
        let (mut events_tx, mut events_rx) = match self.open_announce(&spec, &peer_id).await {
            Some(a) => (Some(AnnounceQueue::new(a.tx)), Some(a.rx)),
            None => (None, None),
        };
        let (report_tx, mut report_rx) = mpsc::channel::<Report>(256);
        let mut parents = ParentPool::new(FetchContext {
            cfg: self.cfg.clone(),
            store: self.store.clone(),
            stats: self.stats.clone(),
            pace: pace.clone(),
            reports: report_tx.clone(),
            tls: self.peer_tls.clone(),
            grant: Default::default(),
        });
        let mut origin: Option<JoinHandle<Result<(), DownloadError>>> = None;
        let mut back_to_source = false;
        let mut pending_digests: Vec<(u32, PieceDigest)> = Vec::new();
        set_phase(&progress, Phase::WaitingForPeers);
        if events_tx.is_none() {
            back_to_source = true;
            set_phase(&progress, Phase::FromOrigin);
            let why = "no scheduler could be reached";
            origin =
                Some(self.spawn_origin(&spec, why, claims.clone(), report_tx.clone(), &pace)?);
        } else if let Some(c) = &claims {
            let layout = c.entry.layout();
            announce(
                &mut events_tx,
                peer_event::Event::ContentInfo(ContentInfo {
                    content_length: layout.content_length(),
                    piece_length: layout.piece_length(),
                }),
            );
            let held = c.entry.present_digests();
            if !held.is_empty() {
                info!(pieces = held.len(), "resuming with pieces already held");
                announce(
                    &mut events_tx,
                    pieces_event(held.into_iter().map(|(n, d)| (n, d, None))),
                );
            }
        }
        let mut last_progress = Instant::now();
        let mut slices_seen = 0u32;
        let mut last_parent_failure: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Pieces the scheduler has been told about. A piece is committed before its report is
        // queued, so "all present" alone would end the run with the last reports (and the
        // digests other peers need) still in flight; the run ends when all are reported too.
        let mut reported: HashSet<u32> = claims
            .as_ref()
            .map(|c| c.entry.bitfield().iter_set().collect())
            .unwrap_or_default();
        let mut complete_since: Option<Instant> = None;
        let result: Result<(), DownloadError> = loop {
            if let Some(c) = &claims {
                if c.all_present() {
                    let since = *complete_since.get_or_insert_with(Instant::now);
                    let all_reported = reported.len() as u32 >= c.entry.layout().piece_count();
                    if all_reported || since.elapsed() > Duration::from_secs(5) {
                        break Ok(());
                    }
                }
            }
            tokio::select! {
                ev = next_event(&mut events_rx) => match ev {
                    Some(scheduler_event::Event::TaskInfo(info)) => {
                        if claims.is_none() {
                            let meta = crate::download::origin_fetcher::task_meta(
                                &spec.key,
                                info.content_length,
                                info.piece_length,
                            );
                            let store = self.store.clone();
                            let id = spec.id;
                            let entry = tokio::task::spawn_blocking(move || store.ensure_task(id, meta))
                                .await
                                .map_err(|_| DownloadError::ShuttingDown)?;
                            match entry {
                                Ok(entry) => {
                                    reported.extend(entry.bitfield().iter_set());
                                    let c = PieceClaims::for_download(entry, &self.cfg);
                                    c.add_expected(pending_digests.drain(..));
                                    publish(&progress, &c);
                                    parents.task_known(&c);
                                    claims = Some(c);
                                }
                                Err(e) => break Err(e.into()),
                            }
                        }
                    }
                    Some(scheduler_event::Event::PieceDigests(d)) => {
                        let digests = d.pieces.iter().filter_map(|p| {
                            PieceDigest::from_slice(&p.digest).map(|d| (p.number, d))
                        });
                        match &claims {
                            Some(c) => c.add_expected(digests),
                            None => pending_digests.extend(digests),
                        }
                    }
                    Some(scheduler_event::Event::Parents(p)) => {
                        parents.set_grant(p.grant.as_ref());
                        if !p.parents.is_empty() && origin.is_none() {
                            set_phase(&progress, Phase::FromPeers);
                        }
                        parents.offer(p.parents, claims.as_ref());
                    }
                    Some(scheduler_event::Event::BackToSource(b)) => {
                        if origin.is_none() {
                            info!(reason = %b.reason, "scheduler sent this peer to the origin");
                            back_to_source = true;
                            set_phase(&progress, Phase::FromOrigin);
                            let why = format!("the scheduler has no peer to offer ({})", b.reason);
                            match self.spawn_origin(&spec, &why, claims.clone(), report_tx.clone(), &pace) {
                                Ok(h) => origin = Some(h),
                                Err(e) => break Err(e),
                            }
                        }
                    }
                    None => {
                        events_rx = None;
                        if origin.is_none() && parents.idle() {
                            warn!("lost the scheduler and no parent is working; downloading from the origin");
                            back_to_source = true;
                            set_phase(&progress, Phase::FromOrigin);
                            let why = "the scheduler was lost and no parent is working";
                            match self.spawn_origin(&spec, why, claims.clone(), report_tx.clone(), &pace) {
                                Ok(h) => origin = Some(h),
                                Err(e) => break Err(e),
                            }
                        } else {
                            warn!("lost the scheduler; continuing with the parents at hand");
                        }
                    }
                },
                Some(report) = report_rx.recv() => match report {
                    Report::Created(c) => {
                        let layout = c.entry.layout();
                        announce(&mut events_tx, peer_event::Event::ContentInfo(ContentInfo {
                            content_length: layout.content_length(),
                            piece_length: layout.piece_length(),
                        }));
                        c.add_expected(pending_digests.drain(..));
                        publish(&progress, &c);
                        parents.task_known(&c);
                        claims = Some(c);
                    }
                    Report::OriginRetry { attempt, of } => set_phase(&progress, Phase::OriginRetry { attempt, of }),
                    Report::Piece { number, digest, parent } => {
                        last_progress = Instant::now();
                        reported.insert(number);
                        announce(&mut events_tx, pieces_event([(number, digest, parent)]));
                        if let Some(c) = &claims {
                            publish(&progress, c);
                        }
                    }
                },
                Some(joined) = parents.join_next(), if parents.fetching() => {
                    let Ok((parent, outcome)) = joined else { continue };
                    match outcome {
                        Err(FetchError::Local(e)) => break Err(e),
                        Err(e) => {
                            last_parent_failure = Some(Instant::now());
                            if parents.block(&parent) {
                                warn!(%parent, error = %Chain(&e), "parent failed; asking the scheduler for another");
                                let bad_data = matches!(e, FetchError::BadSlice { .. } | FetchError::BadPiece(_));
                                announce(&mut events_tx, peer_event::Event::ParentFailed(ParentFailed {
                                    parent_peer_id: parent.clone(),
                                    reason: Chain(&e).to_string(),
                                    bad_data,
                                }));
                            }
                        }
                        // A parent that ended with nothing more to give did not fail: the
                        // fast path to the origin is for parents that all failed.
                        Ok(()) => last_parent_failure = None,
                    }
                    parents.connection_ended(&parent, claims.as_ref());
                }
                joined = async { match origin.as_mut() { Some(h) => h.await, None => std::future::pending().await } } => {
                    origin = None;
                    match joined {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Err(e),
                        Err(_) => break Err(DownloadError::ShuttingDown),
                    }
                }
                _ = tick.tick() => {
                    if let Some(q) = events_tx.as_mut() {
                        q.flush();
                    }
                    if events_rx.is_some() && !back_to_source {
                        announce(&mut events_tx, peer_event::Event::NeedParents(NeedParents {
                            parents: parents.ids(),
                        }));
                    }
                    // No progress for `parent_wait` sends the download to the origin even
                    // with parents connected: parents that hold nothing we lack (the pieces
                    // exist nowhere in the swarm) must not keep it waiting forever.
                    if pace.yielding() {
                        // Prefetch standing aside for a foreground download is not stuck.
                        last_progress = Instant::now();
                    }
                    // Verified slices are progress too, before their pieces are whole.
                    if let Some(c) = &claims {
                        let slices = c.entry.slice_bitfield().count();
                        if slices > slices_seen {
                            slices_seen = slices;
                            last_progress = Instant::now();
                        }
                    }
                    let idle = parents.idle();
                    let waited = last_progress.elapsed() >= self.cfg.parent_wait;
                    let all_failed = last_parent_failure
                        .is_some_and(|t| t.elapsed() >= AFTER_PARENTS_FAILED.min(self.cfg.parent_wait));
                    if origin.is_none() && (waited || (idle && (back_to_source || all_failed))) {
                        if !back_to_source && waited {
                            warn!(waited = ?self.cfg.parent_wait, "no progress from parents in time; downloading from the origin");
                        } else if !back_to_source {
                            warn!(failed = parents.failed(), "every parent offered failed and no other came; downloading from the origin");
                        }
                        back_to_source = true;
                        set_phase(&progress, Phase::FromOrigin);
                        let why = if waited {
                            "no parent made progress within parent_wait"
                        } else {
                            "every parent offered failed"
                        };
                        match self.spawn_origin(&spec, why, claims.clone(), report_tx.clone(), &pace) {
                            Ok(h) => origin = Some(h),
                            Err(e) => break Err(e),
                        }
                    }
                }
                _ = self.shutdown.cancelled() => break Err(DownloadError::ShuttingDown),
            }
        };
        parents.abort_all();
        if let Some(o) = origin {
            o.abort();
        }
        // Pieces committed just before the loop saw the task complete are still queued: the
        // scheduler must hear of them (their digests above all) before `Finished`.
        while let Ok(report) = report_rx.try_recv() {
            if let Report::Piece {
                number,
                digest,
                parent,
            } = report
            {
                announce(&mut events_tx, pieces_event([(number, digest, parent)]));
            }
        }
        let duplicates = claims.as_ref().map_or(0, |c| c.duplicates());
        let result = match (result, claims) {
            (Ok(()), Some(c)) => self.complete(&spec, c).await,
            (Ok(()), None) => Err(DownloadError::TaskLost(
                "the download ended without a task; run it again".into(),
            )),
            (Err(e), _) => Err(e),
        };
        match &result {
            Ok(()) => {
                info!(duplicate_slices = duplicates, "download complete");
                announce(&mut events_tx, peer_event::Event::Finished(PeerFinished {}));
            }
            Err(e) => announce(
                &mut events_tx,
                peer_event::Event::Failed(PeerFailed {
                    reason: Chain(&e).to_string(),
                }),
            ),
        }
        close_announce(events_tx, events_rx);
        result
    }
}
