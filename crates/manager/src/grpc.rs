//! The manager's gRPC service for schedulers and daemons.
//!
//! Schedulers register, then keep alive every few seconds; every answer carries their
//! cluster's config, which is how config changes reach them. Each daemon holds one
//! session stream: it says who it is, and the manager sends it a placement (its cluster and
//! that cluster's active schedulers) at once and again whenever clusters or schedulers
//! change. When the session ends, the daemon is marked inactive.
//!
//! Bounds: connections are admitted as on the scheduler's port ([`pollen_tls::incoming`]:
//! a cap, a setup deadline, mutual TLS when configured), messages are small (64 KiB at
//! most), a session must say hello within 10 s, and strings in a hello are length-checked
//! before they reach the database.

#![allow(clippy::result_large_err)] // tonic::Status is the error type of every RPC.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use pollen_proto::manager::manager_server::{Manager as ManagerRpc, ManagerServer};
use pollen_proto::manager::{
    daemon_message, manager_message, DaemonHello, DaemonMessage, ManagerMessage, PeerConfig,
    Placement, SchedulerClusterConfig as ProtoConfig, SchedulerInfo, SchedulerKeepalive,
    SchedulerState,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::placement;
use crate::rest::AppState;
use crate::store::clusters::{self, SchedulerCluster};
use crate::store::join_tokens::{self, JoinRole};
use crate::store::{peers, schedulers};

/// Largest gRPC message accepted.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Time a daemon has to say hello after opening its session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ManagerService {
    state: Arc<AppState>,
    shutdown: CancellationToken,
}

fn db_status(e: sqlx::Error) -> Status {
    warn!(error = %e, "database error answering a gRPC call");
    Status::unavailable("the manager's database is unavailable")
}

fn bounded(field: &str, v: &str, max: usize) -> Result<(), Status> {
    if v.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// What a request proves of its sender: its certificate's roles (under TLS) and the hash of
/// the join token it showed.
fn credentials<T>(req: &Request<T>) -> (Option<pollen_tls::ProvenRoles>, Option<String>) {
    (
        pollen_tls::incoming::proven_roles(req),
        pollen_tls::incoming::join_token_hash(req),
    )
}

fn proto_config(c: &SchedulerCluster) -> ProtoConfig {
    ProtoConfig {
        candidate_parent_limit: c.config.candidate_parent_limit,
        weights: c.config.weights.clone().into_iter().collect(),
    }
}

impl ManagerService {
    async fn state_of(&self, scheduler_id: i64, cluster_id: i64) -> Result<SchedulerState, Status> {
        let cluster = clusters::get_scheduler_cluster(&self.state.db.pool, cluster_id)
            .await
            .map_err(db_status)?
            .ok_or_else(|| Status::not_found("the scheduler's cluster was deleted"))?;
        Ok(SchedulerState {
            scheduler_id,
            scheduler_cluster_id: cluster_id,
            config: Some(proto_config(&cluster)),
            seed_join_token_hashes: join_tokens::live_hashes(&self.state.db.pool, JoinRole::Seed)
                .await
                .map_err(db_status)?,
        })
    }

    /// Judges a claim to be a scheduler or a seed: the role in the client's certificate, a
    /// live join token for it, or (plain TCP, `open_join`) nothing.
    async fn check_claim(
        &self,
        (proven, token): (Option<pollen_tls::ProvenRoles>, Option<String>),
        role: JoinRole,
        claim: &str,
    ) -> Result<(), Status> {
        let shown = match token {
            None => pollen_tls::incoming::TokenShown::None,
            Some(h) => {
                if join_tokens::admits(&self.state.db.pool, &h, role)
                    .await
                    .map_err(db_status)?
                {
                    pollen_tls::incoming::TokenShown::Accepted
                } else {
                    pollen_tls::incoming::TokenShown::Refused
                }
            }
        };
        let tls_role = match role {
            JoinRole::Scheduler => pollen_tls::Role::Scheduler,
            JoinRole::Seed => pollen_tls::Role::Seed,
        };
        pollen_tls::incoming::check_claim(
            proven.as_ref(),
            shown,
            tls_role,
            claim,
            self.state.cfg.open_join,
        )
    }

    /// The placement for a daemon now.
    async fn placement(
        &self,
        hello: &DaemonHello,
        ip: Option<IpAddr>,
    ) -> Result<Placement, sqlx::Error> {
        let pool = &self.state.db.pool;
        let all = clusters::list_scheduler_clusters(pool).await?;
        let active = schedulers::list(pool, None, true).await?;
        let d = placement::Daemon {
            ip,
            hostname: &hello.hostname,
            idc: &hello.idc,
            location: &hello.location,
            pinned: (hello.scheduler_cluster_id > 0).then_some(hello.scheduler_cluster_id),
        };
        let chosen = placement::choose(&all, &d, |id| {
            active.iter().any(|s| s.scheduler_cluster_id == id)
        });
        // A seed peer serves at most its seed-peer cluster's load_limit connections at once.
        let load_limit = match hello.seed_peer_cluster_id {
            id if hello.seed && id > 0 => clusters::get_seed_peer_cluster(pool, id)
                .await?
                .map(|c| c.config.load_limit),
            _ => None,
        };
        Ok(match chosen {
            Some(id) => Placement {
                scheduler_cluster_id: id,
                scheduler_urls: active
                    .iter()
                    .filter(|s| s.scheduler_cluster_id == id)
                    .map(|s| s.url.clone())
                    .collect(),
                config: all.iter().find(|c| c.id == id).map(|c| {
                    let p = &c.config.peer;
                    PeerConfig {
                        upload_rate_limit: p.upload_rate_limit,
                        download_rate_limit: p.download_rate_limit,
                        back_to_source_rate_limit: p.back_to_source_rate_limit,
                        max_upload_connections: load_limit,
                    }
                }),
            },
            // No cluster to join: the daemon keeps the settings it last received.
            None => Placement::default(),
        })
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ManagerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ManagerRpc for ManagerService {
    async fn register_scheduler(
        &self,
        request: Request<SchedulerInfo>,
    ) -> Result<Response<SchedulerState>, Status> {
        let from = pollen_tls::incoming::remote_ip(&request);
        self.check_claim(
            credentials(&request),
            JoinRole::Scheduler,
            "registering a scheduler",
        )
        .await
        .inspect_err(|e| warn!(?from, error = %e.message(), "scheduler registration refused"))?;
        let info = request.into_inner();
        for (f, v) in [
            ("hostname", &info.hostname),
            ("ip", &info.ip),
            ("url", &info.url),
            ("idc", &info.idc),
            ("location", &info.location),
        ] {
            bounded(f, v, 1024)?;
        }
        let url = url::Url::parse(&info.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Status::invalid_argument("url must be http://HOST:PORT or https://HOST:PORT")
            })?;
        let pool = &self.state.db.pool;
        let cluster_id = if info.scheduler_cluster_id > 0 {
            info.scheduler_cluster_id
        } else {
            let all = clusters::list_scheduler_clusters(pool)
                .await
                .map_err(db_status)?;
            match all
                .iter()
                .find(|c| c.is_default)
                .or(all.first().filter(|_| all.len() == 1))
            {
                Some(c) => c.id,
                None => {
                    return Err(Status::failed_precondition(
                        "no default scheduler cluster: give the scheduler its cluster id",
                    ))
                }
            }
        };
        let registered = schedulers::register(
            pool,
            &schedulers::Registration {
                scheduler_cluster_id: cluster_id,
                hostname: &info.hostname,
                ip: &info.ip,
                port: i64::from(info.port),
                url: url.as_str().trim_end_matches('/'),
                idc: &info.idc,
                location: &info.location,
            },
        )
        .await
        .map_err(|e| {
            if crate::store::is_foreign_key_violation(&e) {
                Status::not_found(format!("no scheduler cluster {cluster_id}"))
            } else {
                db_status(e)
            }
        })?;
        info!(id = registered.id, cluster = cluster_id, url = %registered.url, "scheduler registered");
        self.state.bump();
        self.state_of(registered.id, cluster_id)
            .await
            .map(Response::new)
    }

    async fn keepalive_scheduler(
        &self,
        request: Request<SchedulerKeepalive>,
    ) -> Result<Response<SchedulerState>, Status> {
        self.check_claim(
            credentials(&request),
            JoinRole::Scheduler,
            "a scheduler keepalive",
        )
        .await?;
        let id = request.into_inner().scheduler_id;
        let pool = &self.state.db.pool;
        match schedulers::keepalive(pool, id).await.map_err(db_status)? {
            None => Err(Status::not_found("unknown scheduler; register again")),
            Some(revived) => {
                if revived {
                    info!(id, "scheduler is back");
                    self.state.bump();
                }
                let s = schedulers::get(pool, id)
                    .await
                    .map_err(db_status)?
                    .ok_or_else(|| Status::not_found("unknown scheduler; register again"))?;
                self.state_of(id, s.scheduler_cluster_id)
                    .await
                    .map(Response::new)
            }
        }
    }

    type DaemonSessionStream = SessionStream;

    async fn daemon_session(
        &self,
        request: Request<Streaming<DaemonMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let remote = pollen_tls::incoming::remote_ip(&request);
        let proven_host = pollen_tls::incoming::proven_host(&request);
        // Judged before the hello says whether a seed is claimed; asked only then.
        let seed_claim = self
            .check_claim(
                credentials(&request),
                JoinRole::Seed,
                "a seed peer's session",
            )
            .await;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("say hello first"))??;
        let Some(DaemonMessage {
            message: Some(daemon_message::Message::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message must be a hello",
            ));
        };
        if hello.host_id.is_empty() {
            return Err(Status::invalid_argument("host_id is required"));
        }
        pollen_tls::incoming::check_host(proven_host.as_deref(), &hello.host_id, "this session")
            .inspect_err(|e| warn!(error = %e.message(), "daemon session refused"))?;
        if hello.seed {
            seed_claim.inspect_err(
                |e| warn!(host = %hello.host_id, error = %e.message(), "seed claim refused"),
            )?;
        }
        for (f, v) in [
            ("host_id", &hello.host_id),
            ("hostname", &hello.hostname),
            ("ip", &hello.ip),
            ("idc", &hello.idc),
            ("location", &hello.location),
        ] {
            bounded(f, v, 1024)?;
        }
        let ip = hello.ip.parse::<IpAddr>().ok().or(remote);
        let (tx, rx) = mpsc::channel(4);
        let svc = ManagerService {
            state: self.state.clone(),
            shutdown: self.shutdown.clone(),
        };
        tokio::spawn(async move { svc.run_session(hello, ip, inbound, tx).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Why a peer went inactive when its daemon's session ended.
const SESSION_ENDED: &str = "its session ended: the daemon stopped, or its connection broke";

impl ManagerService {
    /// Sends placements until the daemon goes away, then marks it inactive, saying why.
    async fn run_session(
        self,
        hello: DaemonHello,
        ip: Option<IpAddr>,
        mut inbound: Streaming<DaemonMessage>,
        tx: mpsc::Sender<Result<ManagerMessage, Status>>,
    ) {
        let pool = self.state.db.pool.clone();
        let session = self.state.open_daemon_session(&hello.host_id);
        self.state.hub.attach(&hello.host_id, session, tx.clone());
        let mut changed = self.state.changed.subscribe();
        let mut last: Option<Placement> = None;
        let mut peer_id = None;
        // While the session is open the daemon answers its HTTP/2 keepalive (a silent one
        // ends the session within a minute), so its row's last-seen time is kept fresh.
        let mut seen = tokio::time::interval(
            self.state
                .cfg
                .peer_seen_interval
                .max(Duration::from_millis(100)),
        );
        seen.tick().await;
        let mut recompute = true;
        let reason = loop {
            // When only the last-seen tick woke the loop, the placement is unchanged.
            if std::mem::take(&mut recompute) {
                match self.placement(&hello, ip).await {
                    Ok(p) if last.as_ref() != Some(&p) => {
                        let row = peers::upsert(
                            &pool,
                            &peers::Hello {
                                host_id: &hello.host_id,
                                hostname: &hello.hostname,
                                ip: &ip.map(|i| i.to_string()).unwrap_or_default(),
                                upload_port: i64::from(hello.upload_port),
                                idc: &hello.idc,
                                location: &hello.location,
                                is_seed: hello.seed,
                                scheduler_cluster_id: (p.scheduler_cluster_id > 0)
                                    .then_some(p.scheduler_cluster_id),
                                seed_peer_cluster_id: (hello.seed_peer_cluster_id > 0)
                                    .then_some(hello.seed_peer_cluster_id),
                            },
                        )
                        .await;
                        match row {
                            Ok(r) => peer_id = Some(r.id),
                            Err(e) => {
                                warn!(error = %e, host = %hello.host_id, "cannot record a peer");
                            }
                        }
                        let msg = ManagerMessage {
                            message: Some(manager_message::Message::Placement(p.clone())),
                        };
                        if tx.send(Ok(msg)).await.is_err() {
                            break SESSION_ENDED;
                        }
                        last = Some(p);
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "cannot compute a placement"),
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break "the manager stopped while its session was open",
                r = changed.changed() => {
                    if r.is_err() {
                        break "the manager stopped while its session was open";
                    }
                    recompute = true;
                }
                _ = seen.tick() => {
                    if let Some(id) = peer_id {
                        if let Err(e) = peers::seen(&pool, id).await {
                            warn!(error = %e, "cannot record that a peer was seen");
                        }
                    }
                }
                m = inbound.message() => match m {
                    Ok(Some(DaemonMessage { message: Some(daemon_message::Message::Result(r)) })) => {
                        self.state.hub.complete(r);
                        recompute = true;
                    }
                    Ok(Some(_)) => recompute = true,
                    Ok(None) | Err(_) => break SESSION_ENDED,
                },
            }
        };
        self.state.hub.detach(&hello.host_id, session);
        let newest = self.state.close_daemon_session(&hello.host_id, session);
        if let Some(id) = peer_id.filter(|_| newest) {
            if let Err(e) = peers::set_inactive(&pool, id, reason).await {
                warn!(error = %e, "cannot mark a peer inactive");
            }
        }
    }
}

/// Serves the gRPC service on `listener` until `shutdown`.
/// Serves the service on `listener` until `shutdown`, over TLS when `tls` is given (a
/// config that demands client certificates and offers ALPN `h2`), admitting connections
/// under the config's bounds.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<Arc<pollen_tls::rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = pollen_tls::incoming::admit(
        listener,
        tls,
        state.cfg.grpc_max_connections,
        state.cfg.connection_setup_timeout,
        shutdown.clone(),
    );
    let svc = ManagerService {
        state,
        shutdown: shutdown.clone(),
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(
            ManagerServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(4 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
