//! The daemon's local API on its unix socket: what `pollen get` and `pollen demo` call.
//!
//! Who may call it: the socket is 0660 in a 0750 directory, both in the `api_group` group,
//! so only root and that group's members reach it; each call's caller is read from the socket
//! (`SO_PEERCRED`) and the output is written with the caller's rights (see `caller`).
//!
//! `Download` validates the request, checks the caller may write the output location before
//! any byte is fetched, streams progress, and writes the finished content to the output path through a
//! temporary file and a rename, so the path never holds a partial or unverified file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pollen_proto::daemon::daemon_server::Daemon;
use pollen_proto::daemon::{
    DownloadProgress, DownloadRequest, ExistingOutput, ExportRequest, ExportResponse,
    ImportRequest, ImportResponse, ListRequest, ListResponse, ListedObject, RemoveRequest,
    RemoveResponse, StatRequest, StatResponse, TaskStat,
};
use pollen_source::{OriginPolicy, Source as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};

use crate::download::caller::Caller;
use crate::download::conductor::Conductor;
use crate::download::output_writer::{create_new, output_error, temp_sibling, OutputWriter};
use crate::download::task_spec::TaskSpec;
use crate::download::watch::DownloadWatch;
use crate::error::DownloadError;
use crate::stats::DaemonStats;

pub(crate) struct LocalApi {
    pub conductor: Arc<Conductor>,
    pub upload_addr: String,
    pub proxy_addr: String,
    pub registry_mirrors: Vec<(String, std::net::SocketAddr)>,
    pub limits: Arc<crate::live_limits::LiveLimits>,
    /// `gc.quota`, reported by `Stat`.
    pub cache_quota: u64,
}

/// Fails early when the output directory does not exist or the caller may not write it.
async fn probe_output(caller: &Caller, output: &Path) -> Result<(), DownloadError> {
    let path = output.to_path_buf();
    caller
        .run(move || {
            if path.is_dir() {
                return Err(std::io::Error::other("is a directory"));
            }
            let probe = temp_sibling(&path);
            create_new(&probe)?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(|e| output_error(output, e))
}

/// The fuzz entry for the local API's parser of untrusted bytes
/// (`fuzz/fuzz_targets/local_api_request.rs`): a `DownloadRequest` as it arrives on the
/// socket, through validation and the origin guard's check of its URL. Panics only when an
/// invariant breaks.
pub fn fuzz_local_api_request(bytes: &[u8]) {
    use prost::Message;
    let Ok(req) = DownloadRequest::decode(bytes) else {
        return;
    };
    if let Ok(spec) = TaskSpec::from_request(&req) {
        assert_eq!(spec.id.hex().len(), 64);
        if let Ok(url) = url::Url::parse(&spec.key.url) {
            let guard = pollen_source::OriginGuard::default();
            for policy in [
                pollen_source::OriginPolicy::LocalUser,
                pollen_source::OriginPolicy::Fleet,
            ] {
                let _ = guard.check_url(&url, policy);
            }
        }
    }
    let _ = Path::new(&req.output_path).is_absolute();
}

/// What the caller wants done with an existing output.
fn existing_output(value: i32) -> Result<ExistingOutput, DownloadError> {
    ExistingOutput::try_from(value).map_err(|_| {
        DownloadError::InvalidRequest(format!(
            "existing_output {value} is not one this daemon knows"
        ))
    })
}

/// A task id from the CLI.
fn parse_task_id(text: &str) -> Result<pollen_core::TaskId, DownloadError> {
    text.parse::<pollen_core::TaskId>()
        .map_err(|e| DownloadError::InvalidRequest(format!("{e}: a task id is 64 hex digits")))
}

/// A path from the CLI, which must be absolute (`what` names it in the error).
fn absolute(path: &str, what: &str) -> Result<PathBuf, DownloadError> {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(DownloadError::InvalidRequest(format!(
            "{what} {path:?} must be absolute"
        )))
    }
}

/// Objects a listing returns when the caller sets no limit.
const DEFAULT_LIST_LIMIT: usize = 10_000;

async fn follow(
    conductor: Arc<Conductor>,
    mut watch: DownloadWatch,
    output: Option<(PathBuf, Caller)>,
    existing: ExistingOutput,
    tx: mpsc::Sender<Result<DownloadProgress, Status>>,
) {
    let id = watch.id;
    let mut kept = false;
    let msg = |p: crate::download::watch::Progress, done: bool, cached: bool| DownloadProgress {
        task_id: id.hex(),
        content_length: p.content_length,
        completed_bytes: p.completed,
        done,
        from_cache: cached,
        peer_bytes: p.from_peers,
        origin_bytes: p.from_origin,
        doing: p.phase.describe(),
        output_kept: false,
    };
    let store = conductor.store.clone();
    let link_from = conductor
        .cfg
        .output_hardlink
        .then_some(conductor.cfg.data_dir.as_path());
    // Cache only: the task is kept in the store, nothing is written elsewhere.
    let mut writer = output.map(|(o, caller)| OutputWriter::new(o, link_from, caller));
    let outcome: Result<(), DownloadError> = async {
        loop {
            let done = watch.result.borrow_and_update().clone();
            if let Some(entry) = store.get(&id) {
                match &done {
                    Some(Ok(())) => {
                        // An output that already holds exactly this content stays as it is.
                        if let Some(w) = writer.as_ref() {
                            if w.keeps_existing(&entry, existing).await? {
                                kept = true;
                                return Ok(());
                            }
                        }
                        return match writer.as_mut() {
                            Some(w) => w.finish(&entry, &store.content_path(&id)).await,
                            None => Ok(()),
                        }
                    }
                    Some(Err(_)) => {}
                    None => {
                        if let Some(w) = writer.as_mut() {
                            w.export_present(&entry).await?;
                        }
                    }
                }
            }
            if let Some(r) = done {
                return r.and(Err(DownloadError::TaskLost(
                    "the finished task was removed before its output was written; run the download again".into(),
                )));
            }
            let p = *watch.progress.borrow_and_update();
            if tx.send(Ok(msg(p, false, false))).await.is_err() {
                return Err(DownloadError::ShuttingDown);
            }
            tokio::select! {
                _ = watch.result.changed() => {}
                _ = watch.progress.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
    .await;
    if let Some(w) = writer {
        w.discard().await;
    }
    let last = match outcome {
        Ok(()) => Ok(DownloadProgress {
            output_kept: kept,
            ..msg(*watch.progress.borrow(), true, watch.from_cache)
        }),
        Err(e) => Err(Status::from(e)),
    };
    let _ = tx.send(last).await;
}

#[tonic::async_trait]
impl Daemon for LocalApi {
    type DownloadStream = ReceiverStream<Result<DownloadProgress, Status>>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = Caller::of_connection(request.extensions().get::<UdsConnectInfo>())?;
        let req = request.into_inner();
        let output = match (req.cache_only, req.output_path.is_empty()) {
            (true, true) => None,
            (true, false) => {
                return Err(DownloadError::InvalidRequest(
                    "a cache-only download takes no output path".into(),
                )
                .into())
            }
            (false, _) => Some(PathBuf::from(&req.output_path)),
        };
        let existing = existing_output(req.existing_output)?;
        if let Some(output) = &output {
            if !output.is_absolute() {
                return Err(DownloadError::InvalidRequest(format!(
                    "output path {:?} must be absolute",
                    req.output_path
                ))
                .into());
            }
        }
        // An origin that pins a version (a hub revision, an artifact's tag, a bucket object's
        // ETag) or publishes a digest says so now: the task is that version.
        let spec = TaskSpec::resolved(req, &self.conductor.source, OriginPolicy::LocalUser).await?;
        if let Some(output) = &output {
            probe_output(&caller, output).await?;
        }
        let (watch, interest) = self.conductor.start_for_caller(spec);
        let (tx, rx) = mpsc::channel(16);
        let output = output.map(|o| (o, caller));
        let conductor = self.conductor.clone();
        self.conductor.tasks.spawn(async move {
            // Held while the caller follows: when it goes away, so may the download.
            let _interest = interest;
            follow(conductor, watch, output, existing, tx).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.max_objects {
            0 => DEFAULT_LIST_LIMIT,
            n => n as usize,
        };
        let policy = pollen_source::OriginPolicy::LocalUser;
        let listing = self
            .conductor
            .source
            .list(&req.url, policy, limit)
            .await
            .map_err(DownloadError::from)?;
        Ok(Response::new(ListResponse {
            objects: listing
                .objects
                .into_iter()
                .map(|o| ListedObject {
                    url: o.url,
                    path: o.path,
                    size: o.size,
                    version: o.version.unwrap_or_default(),
                    digest: o.digest.map(|d| d.to_string()).unwrap_or_default(),
                })
                .collect(),
            truncated: listing.truncated,
        }))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let id = parse_task_id(&request.into_inner().task_id)?;
        let gone = self.conductor.remove_held(id).await?;
        if let Some(e) = &gone {
            tracing::info!(task = %e.id, url = %e.snapshot().meta.url, "task removed from the cache by a local caller");
        }
        Ok(Response::new(RemoveResponse {
            removed: gone.is_some(),
        }))
    }

    async fn import(
        &self,
        request: Request<ImportRequest>,
    ) -> Result<Response<ImportResponse>, Status> {
        let caller = Caller::of_connection(request.extensions().get::<UdsConnectInfo>())?;
        let req = request.into_inner();
        let path = absolute(&req.path, "file to import")?;
        let url = if req.url.is_empty() {
            url::Url::from_file_path(&path)
                .map_err(|()| {
                    DownloadError::InvalidRequest(format!("{:?} is no file path", req.path))
                })?
                .to_string()
        } else {
            req.url
        };
        let expected = match req.digest.as_str() {
            "" => None,
            d => Some(
                d.parse::<pollen_core::ContentDigest>()
                    .map_err(|e| DownloadError::InvalidRequest(format!("digest {d:?}: {e}")))?,
            ),
        };
        let done = self
            .conductor
            .import_file(&caller, path, url, expected)
            .await?;
        Ok(Response::new(ImportResponse {
            task_id: done.id.hex(),
            content_length: done.content_length,
            already_held: done.already_held,
        }))
    }

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<ExportResponse>, Status> {
        let caller = Caller::of_connection(request.extensions().get::<UdsConnectInfo>())?;
        let req = request.into_inner();
        let id = parse_task_id(&req.task_id)?;
        let output = absolute(&req.output_path, "output path")?;
        let existing = existing_output(req.existing_output)?;
        probe_output(&caller, &output).await?;
        let (content_length, output_kept) = self
            .conductor
            .export_task(caller, id, output, existing)
            .await?;
        Ok(Response::new(ExportResponse {
            content_length,
            output_kept,
        }))
    }

    async fn stat(&self, _: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let s = &self.conductor.stats;
        let limits = self.limits.in_force();
        let sessions = s
            .scheduler_sessions
            .load(std::sync::atomic::Ordering::Relaxed);
        let tasks = self
            .conductor
            .store
            .tasks()
            .into_iter()
            .map(|e| {
                let snap = e.snapshot();
                let layout = e.layout();
                let mut url = snap.meta.url;
                if let Some(q) = url.find(['?', '#']) {
                    url.truncate(q);
                }
                TaskStat {
                    task_id: e.id.hex(),
                    content_length: snap.meta.content_length,
                    piece_count: snap.present.len(),
                    pieces_present: snap.present.count(),
                    complete: snap.meta.complete,
                    url,
                    last_access: snap.meta.last_access,
                    held_bytes: snap.present.iter_set().map(|n| layout.length(n)).sum(),
                    private: snap.meta.private,
                }
            })
            .collect();
        Ok(Response::new(StatResponse {
            host_id: self.conductor.host_id.clone(),
            upload_addr: self.upload_addr.clone(),
            proxy_addr: self.proxy_addr.clone(),
            registry_mirrors: self
                .registry_mirrors
                .iter()
                .map(|(registry, addr)| pollen_proto::daemon::RegistryMirror {
                    registry: registry.clone(),
                    addr: addr.to_string(),
                })
                .collect(),
            origin_bytes: DaemonStats::get(&s.origin_bytes),
            p2p_download_bytes: DaemonStats::get(&s.p2p_download_bytes),
            upload_bytes: DaemonStats::get(&s.upload.bytes),
            pieces_from_origin: DaemonStats::get(&s.pieces_from_origin),
            pieces_from_peers: DaemonStats::get(&s.pieces_from_peers),
            pieces_rejected: DaemonStats::get(&s.pieces_rejected),
            proxy_p2p_served: DaemonStats::get(&s.proxy_p2p_served),
            proxy_fallbacks: DaemonStats::get(&s.proxy_fallbacks),
            proxy_aborted: DaemonStats::get(&s.proxy_aborted),
            upload_protocol_errors: DaemonStats::get(&s.upload.protocol_errors),
            upload_timed_out: DaemonStats::get(&s.upload.timed_out),
            tasks,
            upload_rate_limit: limits.upload,
            download_rate_limit: limits.download,
            back_to_source_rate_limit: limits.back_to_source,
            max_upload_connections: limits.upload_connections as u32,
            scheduler_connected: sessions > 0,
            scheduler_sessions: sessions as u32,
            schedulers: self.conductor.schedulers.urls(),
            cache_quota: self.cache_quota,
        }))
    }
}

#[cfg(test)]
mod fuzz_entry_tests {
    use pollen_proto::daemon::{DownloadRequest, Header};
    use prost::Message;

    #[test]
    fn the_fuzz_entry_takes_odd_requests() {
        let mut ok = Vec::new();
        DownloadRequest {
            url: "http://[::ffff:169.254.169.254]:80/x?y=1".into(),
            output_path: "/tmp/out".into(),
            digest: "sha256:zz".into(),
            headers: vec![Header {
                name: "bad\nname".into(),
                value: "v".into(),
            }],
            filtered_query: vec!["y".into(); 3],
            ..Default::default()
        }
        .encode(&mut ok)
        .expect("encode");
        for input in [&ok[..], &ok[..ok.len() / 2], &[0xff; 16][..], &[][..]] {
            super::fuzz_local_api_request(input);
        }
    }
}
