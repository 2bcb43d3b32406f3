//! The scheduler's gRPC service: host sessions, load reports and per-task announce streams.
//!
//! Who sends what: a daemon opens `HostSession` once, reports its load with `ReportLoad`
//! about once a second, and opens `AnnouncePeer` per task. On `Register` the scheduler replies
//! with what it knows of the task and either parents, silence (a seed or another peer is
//! reading the origin and parents will follow), or `BackToSource`. The decisions themselves
//! live in [`crate::core`]; this file only moves messages in and out under the model's lock.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pollen_proto::scheduler::scheduler_server::{Scheduler, SchedulerServer};
use pollen_proto::scheduler::{
    host_command, peer_event, HostCommand, HostInfo, HostLoad, LoadAck, PeerEvent, SchedulerEvent,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::config::SchedulerConfig;
use crate::core::Core;
use crate::metrics::Refusal;

/// The scheduler service; cheap to clone.
#[derive(Clone)]
pub struct SchedulerService {
    core: Arc<Mutex<Core>>,
}

impl SchedulerService {
    /// A scheduler with an empty model.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            core: Arc::new(Mutex::new(Core::new(cfg, rand::random()))),
        }
    }

    /// Serves gRPC on `listener` until `shutdown` fires; quiet tasks are collected meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_with_tls(listener, None, shutdown).await
    }

    /// As [`Self::serve`], over TLS when `tls` is given (give a config that demands client
    /// certificates for mutual TLS; it must offer ALPN `h2`).
    pub async fn serve_with_tls(
        self,
        listener: TcpListener,
        tls: Option<Arc<pollen_tls::rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let gc = self.clone();
        let every = self.lock().config().gc_interval;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => { gc.lock().collect_garbage(Instant::now()); }
                }
            }
        });
        let (max, setup) = {
            let core = self.lock();
            let c = core.config();
            (c.max_connections, c.connection_setup_timeout)
        };
        let incoming = pollen_tls::incoming::admit(listener, tls, max, setup, shutdown.clone());
        tonic::transport::Server::builder()
            // A client that stops answering pings (gone, or a socket held open on purpose)
            // gives its place back.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(SchedulerServer::new(self))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
    }

    /// The evaluator's tunables in force.
    pub fn evaluator(&self) -> crate::EvaluatorConfig {
        self.lock().config().evaluator.clone()
    }

    /// Accepts, besides the manager's, the seed join tokens whose hashes are `hashes` (from
    /// the scheduler's own `seed_join_tokens` file).
    pub fn accept_seed_join_tokens(&self, hashes: std::collections::HashSet<String>) {
        self.lock().join.set_local(hashes);
    }

    /// Replaces the seed join tokens the manager lists; true when they changed.
    pub fn set_manager_seed_join_tokens(&self, hashes: std::collections::HashSet<String>) -> bool {
        self.lock().join.set_from_manager(hashes)
    }

    /// The metrics in OpenMetrics text (see [`crate::metrics`]).
    pub fn metrics_text(&self) -> String {
        self.lock().metrics_text()
    }

    /// Replaces the evaluator's tunables for the decisions that follow.
    pub fn set_evaluator(&self, e: crate::EvaluatorConfig) {
        self.lock().set_evaluator(e);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    type HostSessionStream = ReceiverStream<Result<HostCommand, Status>>;
    type AnnouncePeerStream = ReceiverStream<Result<SchedulerEvent, Status>>;

    async fn host_session(
        &self,
        request: Request<HostInfo>,
    ) -> Result<Response<Self::HostSessionStream>, Status> {
        let remote = pollen_tls::incoming::remote_ip(&request);
        let proven = pollen_tls::incoming::proven_roles(&request);
        let token = pollen_tls::incoming::join_token_hash(&request);
        let proven_host = pollen_tls::incoming::proven_host(&request);
        let info = request.into_inner();
        if info.host_id.is_empty() {
            return Err(Status::invalid_argument("host_id is required"));
        }
        if info.seed {
            // A seed's reports of task facts count and it receives trigger headers: the
            // claim needs the role in its certificate or a join token.
            let core = self.lock();
            core.check_seed_claim(proven.as_ref(), token.as_deref(), "a seed host session")
                .inspect_err(|e| {
                    core.metrics.refused(Refusal::SeedClaim);
                    warn!(host = %info.host_id, error = %e.message(), "seed claim refused");
                })?;
        }
        let ip: IpAddr = match info.ip.parse() {
            Ok(ip) => ip,
            Err(_) => remote.ok_or_else(|| Status::invalid_argument("host ip unknown"))?,
        };
        let (tx, rx) = mpsc::channel(256);
        let host_id = info.host_id.clone();
        let (session, grant_key) = {
            let mut core = self.lock();
            let metrics = core.metrics.clone();
            core.check_host_binding(
                &host_id,
                proven_host.as_deref(),
                proven.is_some(),
                "a host session",
            )
            .inspect_err(|e| {
                metrics.refused(Refusal::HostBinding);
                warn!(host = %host_id, error = %e.message(), "host session refused");
            })?;
            // A connection proving the host id may take it over from one that does not.
            if proven_host.as_deref() != Some(host_id.as_str()) {
                core.check_takeover(&host_id, remote, std::time::Instant::now())
                    .inspect_err(|e| {
                        metrics.refused(Refusal::Takeover);
                        warn!(host = %host_id, error = %e.message(), "host session refused");
                    })?;
            }
            let session = core.open_host(info, ip, tx.clone());
            if let Some(from) = remote {
                core.set_session_origin(&host_id, session, from);
            }
            (session, core.grant_key())
        };
        // First on the session: the key the host's upload port checks grants with.
        let _ = tx.try_send(Ok(HostCommand {
            command: Some(host_command::Command::GrantKey(grant_key.to_vec())),
        }));
        let this = self.clone();
        tokio::spawn(async move {
            tx.closed().await;
            this.lock().close_host(&host_id, session);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn announce_peer(
        &self,
        request: Request<Streaming<PeerEvent>>,
    ) -> Result<Response<Self::AnnouncePeerStream>, Status> {
        let remote = pollen_tls::incoming::remote_ip(&request);
        let proven = pollen_tls::incoming::proven_roles(&request);
        let token = pollen_tls::incoming::join_token_hash(&request);
        let proven_host = pollen_tls::incoming::proven_host(&request);
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .and_then(|e| e.event)
            .ok_or_else(|| Status::invalid_argument("the first announce event must be Register"))?;
        let peer_event::Event::Register(reg) = first else {
            return Err(Status::invalid_argument(
                "the first announce event must be Register",
            ));
        };
        let (tx, rx) = mpsc::channel(1024);
        let (tid, pid) = {
            let mut core = self.lock();
            let metrics = core.metrics.clone();
            core.check_host_binding(
                &reg.host_id,
                proven_host.as_deref(),
                proven.is_some(),
                "a register",
            )
            .inspect_err(|_| metrics.refused(Refusal::HostBinding))?;
            core.check_register_origin(&reg.host_id, remote, proven.as_ref(), token.as_deref())?;
            let ids = core.register(reg, tx).inspect_err(|e| {
                metrics.refused(if e.code() == tonic::Code::ResourceExhausted {
                    Refusal::PeerCap
                } else {
                    Refusal::BadRegister
                });
            })?;
            metrics.registers.inc();
            ids
        };
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(PeerEvent { event: Some(ev) })) => this.lock().event(&tid, &pid, ev),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        debug!(peer = %pid, error = %e, "announce stream broke");
                        break;
                    }
                }
            }
            this.lock().disconnect(&tid, &pid);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_load(&self, request: Request<HostLoad>) -> Result<Response<LoadAck>, Status> {
        let remote = pollen_tls::incoming::remote_ip(&request);
        let proven = pollen_tls::incoming::proven_roles(&request);
        let proven_host = pollen_tls::incoming::proven_host(&request);
        let load = request.into_inner();
        let mut core = self.lock();
        let metrics = core.metrics.clone();
        core.check_host_binding(
            &load.host_id,
            proven_host.as_deref(),
            proven.is_some(),
            "a load report",
        )
        .inspect_err(|_| metrics.refused(Refusal::HostBinding))?;
        core.report_load(&load, remote)
            .inspect_err(|_| metrics.refused(Refusal::LoadReport))?;
        Ok(Response::new(LoadAck {}))
    }
}
