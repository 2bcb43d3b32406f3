//! The daemon's connection to the scheduler: the host session and announce streams.
//!
//! The host session is kept open for the daemon's life and re-opened with backoff when it
//! breaks; commands that arrive on it (seed triggers) are handed to a callback. Announce
//! streams are opened per download; failing to open one is not an error for the download,
//! which then goes to the origin (the conductor logs why).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::places::Places;
use pollen_proto::scheduler::scheduler_client::SchedulerClient;
use pollen_proto::scheduler::{
    host_command, HostInfo, HostLoad, PeerEvent, Register, SchedulerEvent, TaskRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::Streaming;
use tracing::{info, warn};

use crate::stats::DaemonStats;

/// One open host session in [`DaemonStats::scheduler_sessions`], for as long as it lives.
struct OpenSession<'a>(&'a DaemonStats);

impl<'a> OpenSession<'a> {
    fn new(stats: &'a DaemonStats) -> Self {
        stats.scheduler_sessions.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.scheduler_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A lazily connected scheduler client.
#[derive(Clone)]
pub(crate) struct SchedulerLink {
    client: SchedulerClient<Channel>,
    pub url: String,
    /// A seed's join token, shown on the host session and on announces.
    join_token: Option<pollen_core::join::JoinToken>,
}

/// An open announce stream: events go out through `tx`, answers come in on `rx`.
pub(crate) struct Announce {
    pub tx: mpsc::Sender<PeerEvent>,
    pub rx: Streaming<SchedulerEvent>,
}

impl SchedulerLink {
    /// A client for `url`, over mutual TLS when `tls` is given (the URL must then be
    /// `https://`, and plain `http://` otherwise, so a mismatch is caught at start).
    pub fn new(
        url: &str,
        connect_timeout: Duration,
        tls: Option<ClientTlsConfig>,
        join_token: Option<pollen_core::join::JoinToken>,
    ) -> Result<Self, String> {
        let endpoint =
            pollen_tls::grpc_endpoint("scheduler", url, tls).map_err(|e| e.to_string())?;
        let endpoint = endpoint
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        Ok(Self {
            client: SchedulerClient::new(endpoint.connect_lazy()),
            url: url.to_string(),
            join_token,
        })
    }

    /// Opens an announce stream and registers the peer.
    pub async fn announce(&self, register: Register) -> Result<Announce, tonic::Status> {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(PeerEvent {
            event: Some(pollen_proto::scheduler::peer_event::Event::Register(
                register,
            )),
        })
        .await
        .map_err(|_| tonic::Status::internal("announce channel closed"))?;
        let mut client = self.client.clone();
        let resp = client
            .announce_peer(pollen_tls::with_join_token(
                ReceiverStream::new(rx),
                self.join_token.as_ref(),
            ))
            .await?;
        Ok(Announce {
            tx,
            rx: resp.into_inner(),
        })
    }

    /// Reports this host's load to the scheduler every `every` until `shutdown`: upload
    /// connections in use and the cap on them now (`places`), and the bytes per second sent
    /// and received since the last report.
    /// A refused report (no host session yet) is retried at the next tick. A task dropped
    /// from the store (`dropped`) is reported at once, and again until a report is taken.
    pub async fn run_load_reports(
        self,
        host_id: String,
        stats: Arc<DaemonStats>,
        places: Arc<Places>,
        every: Duration,
        mut dropped: tokio::sync::broadcast::Receiver<pollen_core::TaskId>,
        shutdown: CancellationToken,
    ) {
        let mut unsent: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let totals = |s: &DaemonStats| {
            (
                s.upload.bytes.load(Ordering::Relaxed),
                DaemonStats::get(&s.p2p_download_bytes) + DaemonStats::get(&s.origin_bytes),
            )
        };
        let mut last = (totals(&stats), tokio::time::Instant::now());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                d = dropped.recv() => match d {
                    Ok(id) => unsent.push(id.hex()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "more tasks dropped at once than can be reported; the scheduler learns of the rest when the host session ends");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
                },
            }
            while let Ok(id) = dropped.try_recv() {
                unsent.push(id.hex());
            }
            let now = (totals(&stats), tokio::time::Instant::now());
            let secs = now.1.duration_since(last.1).as_secs_f64().max(0.001);
            let load = HostLoad {
                host_id: host_id.clone(),
                upload_connections: stats.upload.connections.load(Ordering::Relaxed) as u32,
                upload_bytes_per_sec: (now.0 .0.saturating_sub(last.0 .0) as f64 / secs) as u64,
                download_bytes_per_sec: (now.0 .1.saturating_sub(last.0 .1) as f64 / secs) as u64,
                max_upload_connections: places.cap() as u32,
                dropped_task_ids: unsent.clone(),
            };
            last = now;
            let mut client = self.client.clone();
            let sent = tokio::time::timeout(every, client.report_load(load)).await;
            match sent {
                Ok(Ok(_)) => unsent.clear(),
                Ok(Err(e)) => tracing::debug!(error = %e.message(), "load report refused"),
                Err(_) => {}
            }
        }
    }

    /// Keeps a host session open until `shutdown`, calling `on_download` for every task the
    /// scheduler asks this host to fetch and recording its grant key in `grant_keys`.
    pub async fn run_host_session<F, O>(
        self,
        info: HostInfo,
        grant_keys: crate::upload::grant_keys::GrantKeys,
        on_download: F,
        on_open: O,
        connected: Arc<DaemonStats>,
        shutdown: CancellationToken,
    ) where
        F: Fn(TaskRequest) + Send + 'static,
        O: Fn() + Send + 'static,
    {
        let mut backoff = pollen_core::reconnect::Reconnect::default();
        loop {
            let mut client = self.client.clone();
            let opened = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = client.host_session(pollen_tls::with_join_token(info.clone(), self.join_token.as_ref())) => r,
            };
            match opened {
                Ok(resp) => {
                    info!(scheduler = %self.url, "host session open");
                    // Counted while this session is open, however the loop below ends.
                    let _open = OpenSession::new(&connected);
                    on_open();
                    backoff.reset();
                    let mut commands = resp.into_inner();
                    loop {
                        let msg = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            m = commands.message() => m,
                        };
                        match msg {
                            Ok(Some(cmd)) => match cmd.command {
                                Some(host_command::Command::Download(task)) => on_download(task),
                                Some(host_command::Command::GrantKey(k)) => grant_keys.learn(&k),
                                None => {}
                            },
                            Ok(None) => {
                                warn!(scheduler = %self.url, "scheduler closed the host session");
                                break;
                            }
                            Err(e) => {
                                warn!(scheduler = %self.url, error = %e.message(), "host session broke");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(scheduler = %self.url, error = %e.message(), "cannot open a host session; retrying");
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
        }
    }
}
