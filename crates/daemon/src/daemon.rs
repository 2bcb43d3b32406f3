//! Starting and stopping a daemon: binds its sockets and wires its parts together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pollen_core::RateLimiter;
use pollen_proto::daemon::daemon_server::DaemonServer;
use pollen_proto::scheduler::HostInfo;
use pollen_source::{BucketSettings, BucketSource, Cloud, FileSource, HttpSource, Sources};
use pollen_storage::Store;
use pollen_wire::{ClientTls, UploadServer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::service::LocalApi;
use crate::config::DaemonConfig;
use crate::control::host_sessions::HostSessions;
use crate::control::manager_session::{CachedPlacement, ManagerSession};
use crate::download::conductor::Conductor;
use crate::identity;
use crate::links::scheduler_set::SchedulerSet;
use crate::live_limits::LiveLimits;
use crate::proxy::ProxyState;
use crate::start_error::DaemonStartError;
use crate::stats::DaemonStats;
use crate::upload::upload_provider::StoreProvider;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonStartError {
    let what = what.into();
    move |source| DaemonStartError::Io { what, source }
}

/// The `hf://` origin from `origin_hf`, `HF_ENDPOINT` and `HF_TOKEN`.
fn hub_source(
    cfg: &DaemonConfig,
    roots: &[Vec<u8>],
    guard: &pollen_source::OriginGuard,
) -> Result<pollen_source::HubSource, DaemonStartError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let token = match &cfg.origin_hf.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(io_err(format!(
                    "reading origin_hf.token_file {}",
                    p.display()
                )))?
                .trim()
                .to_string(),
        ),
        None => env("HF_TOKEN"),
    };
    let settings = pollen_source::HubSettings {
        endpoint: cfg
            .origin_hf
            .endpoint
            .clone()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| pollen_source::DEFAULT_HUB.to_string()),
        token: token.filter(|t| !t.is_empty()),
        connect_timeout: cfg.connect_timeout,
        read_timeout: cfg.origin_read_timeout,
        extra_roots: roots.to_vec(),
    };
    pollen_source::HubSource::new(settings, guard).map_err(DaemonStartError::setup(
        "the Hugging Face origin (origin_hf)",
    ))
}

/// Entry point for running a daemon.
pub struct Daemon;

/// A running daemon.
pub struct DaemonHandle {
    /// Address the upload server listens on.
    pub upload_addr: SocketAddr,
    /// Address of the registry mirror and HTTP proxy, when enabled.
    pub proxy_addr: Option<SocketAddr>,
    /// Each mirror listener bound to one registry: the registry (`scheme://host[:port]`) and
    /// the address it listens on.
    pub registry_mirrors: Vec<(String, SocketAddr)>,
    /// The local API socket.
    pub api_socket: PathBuf,
    /// This host's id.
    pub host_id: String,
    /// Traffic counters.
    pub stats: Arc<DaemonStats>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// The work the servers spawned (downloads, sessions, answers): see `Conductor::tasks`.
    work: tokio_util::task::TaskTracker,
}

impl DaemonHandle {
    /// Stops every part of the daemon and waits for them, and for every task they spawned:
    /// when it returns, nothing of the daemon runs any more.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.work.close();
        self.work.wait().await;
        let _ = std::fs::remove_file(&self.api_socket);
    }

    /// A token that stops the daemon when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

impl Daemon {
    /// Opens the store, binds the upload port and API socket, and starts serving.
    pub async fn start(cfg: DaemonConfig) -> Result<DaemonHandle, DaemonStartError> {
        let cfg = Arc::new(cfg);
        std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(format!(
            "creating data dir {}",
            cfg.data_dir.display()
        )))?;
        let store = {
            let dir = cfg.data_dir.clone();
            tokio::task::spawn_blocking(move || Store::open(&dir))
                .await
                .map_err(DaemonStartError::setup("the piece store"))??
        };
        // Only a seed shows a token: a secret goes only where it must.
        let join_token = match (&cfg.join_token_file, cfg.seed) {
            _ if !cfg.seed => None,
            _ if cfg.join_token.is_some() => cfg.join_token.clone(),
            (Some(p), true) => Some(
                pollen_core::join::JoinToken::read(p)
                    .map_err(DaemonStartError::setup("the join token"))?,
            ),
            _ => None,
        };
        let tls = match &cfg.tls {
            Some(t) => {
                Some(pollen_tls::Material::load(t).map_err(DaemonStartError::setup("mutual TLS"))?)
            }
            None => None,
        };
        // A certificate bound to one host gives the host id; otherwise it is this data
        // directory's own.
        let host_id = match tls.as_ref().and_then(|m| m.host_id()) {
            Some(id) => {
                info!(host = %id, "host id from the certificate");
                id
            }
            None => identity::host_id(&cfg.data_dir).map_err(io_err("writing the host id"))?,
        };
        let listener = TcpListener::bind(cfg.upload_listen)
            .await
            .map_err(io_err(format!(
                "binding the upload port {}",
                cfg.upload_listen
            )))?;
        let upload_addr = listener
            .local_addr()
            .map_err(io_err("reading the upload address"))?;
        let proxy_listener = match cfg.proxy.listen {
            Some(addr) => Some(
                crate::proxy::bind(addr)
                    .await
                    .map_err(io_err(format!("binding the proxy port {addr}")))?,
            ),
            None => None,
        };
        let proxy_addr = match &proxy_listener {
            Some(l) => Some(
                l.local_addr()
                    .map_err(io_err("reading the proxy address"))?,
            ),
            None => None,
        };
        let mut registry_listeners = Vec::new();
        for m in &cfg.proxy.registry_mirrors {
            let registry =
                crate::proxy::bound_registry(m, &cfg.proxy).map_err(DaemonStartError::Config)?;
            if registry_listeners.iter().any(|(r, _, _)| *r == registry) {
                return Err(DaemonStartError::Config(format!(
                    "registry {registry} has two mirror listeners in proxy.registry_mirrors"
                )));
            }
            let l = crate::proxy::bind(m.listen).await.map_err(io_err(format!(
                "binding the mirror port {} of {registry}",
                m.listen
            )))?;
            let addr = l
                .local_addr()
                .map_err(io_err("reading a registry mirror's address"))?;
            registry_listeners.push((registry, addr, l));
        }
        let registry_mirrors: Vec<(String, SocketAddr)> = registry_listeners
            .iter()
            .map(|(r, a, _)| (r.clone(), *a))
            .collect();
        let api = crate::api::socket::bind(&cfg.api_socket, &cfg.api_group).await?;
        let shutdown = CancellationToken::new();
        let stats = Arc::new(DaemonStats::default());
        let mut tasks = JoinSet::new();

        let upload_limiter =
            RateLimiter::new((cfg.upload_rate_limit > 0).then_some(cfg.upload_rate_limit));
        let grant_keys = crate::upload::grant_keys::GrantKeys::default();
        let upload = UploadServer::new(
            listener,
            Arc::new(StoreProvider::new(
                store.clone(),
                cfg.seed,
                grant_keys.clone(),
            )),
            upload_limiter.clone(),
            stats.upload.clone(),
            cfg.max_upload_connections,
        )
        .with_piece_limit(cfg.max_concurrent_upload_pieces)
        .with_congestion_control(&cfg.upload_congestion_control)
        .with_timeouts(cfg.upload_first_request_timeout, cfg.upload_idle_timeout)
        .with_write_timeout(cfg.upload_write_timeout);
        let tls_error = |e| DaemonStartError::setup::<pollen_tls::TlsError>("mutual TLS")(e);
        let (upload, peer_tls) = match &tls {
            Some(m) => (
                upload.with_tls(m.server_config(&[]).map_err(tls_error)?),
                Some(ClientTls::new(
                    m.client_config().map_err(tls_error)?,
                    m.peer_name().clone(),
                )),
            ),
            None => (upload, None),
        };
        let upload_places = upload.places();
        tasks.spawn(upload.run(shutdown.clone()));

        let client_tls = tls.as_ref().map(|m| m.tonic_client());
        let schedulers = Arc::new(SchedulerSet::new(
            cfg.connect_timeout,
            client_tls.clone(),
            join_token.clone(),
        ));
        if let Some(url) = &cfg.scheduler {
            // Checks the URL (and its scheme against [tls]) now, so a mistake stops the start.
            crate::links::scheduler_link::SchedulerLink::new(
                url,
                cfg.connect_timeout,
                client_tls.clone(),
                None,
            )
            .map_err(DaemonStartError::Config)?;
        }
        let roots = cfg
            .origin_ca_certs
            .iter()
            .map(|p| {
                std::fs::read(p).map_err(io_err(format!("reading CA certificate {}", p.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let guard = pollen_source::OriginGuard::new(&cfg.origin_allow)
            .map_err(DaemonStartError::setup("the origin guard (origin_allow)"))?;
        let source = HttpSource::new(
            cfg.connect_timeout,
            cfg.origin_read_timeout,
            &roots,
            guard.clone(),
        )
        .map_err(DaemonStartError::setup("the origin client"))?;
        let files = FileSource::new(&cfg.origin_file_roots).map_err(DaemonStartError::setup(
            "the file origin (origin_file_roots)",
        ))?;
        let buckets = [
            (Cloud::S3, &cfg.origin_s3),
            (Cloud::Gcs, &cfg.origin_gcs),
            (Cloud::Azure, &cfg.origin_azure),
        ]
        .into_iter()
        .map(|(cloud, options)| {
            let settings = BucketSettings {
                options: options.0.clone().into_iter().collect(),
                connect_timeout: cfg.connect_timeout,
                read_timeout: cfg.origin_read_timeout,
                extra_roots: roots.clone(),
            };
            BucketSource::new(cloud, settings, &guard)
                .map_err(DaemonStartError::setup("the bucket origins"))
        })
        .collect::<Result<Vec<_>, _>>()?;
        let hub = hub_source(&cfg, &roots, &guard)?;
        let oci = pollen_source::OciSource::new(
            pollen_source::OciSettings {
                plain_http: cfg.proxy.insecure_registries.clone(),
                connect_timeout: cfg.connect_timeout,
                read_timeout: cfg.origin_read_timeout,
                extra_roots: roots.clone(),
            },
            &guard,
        )
        .map_err(DaemonStartError::setup("the OCI registry origin"))?;
        let sources = Arc::new(
            Sources::new(source.clone(), files, buckets)
                .with_hub(hub)
                .with_oci(oci),
        );
        let conductor = Arc::new(
            Conductor::new(
                store.clone(),
                stats.clone(),
                cfg.clone(),
                sources,
                schedulers.clone(),
                host_id.clone(),
                shutdown.clone(),
            )
            .with_peer_tls(peer_tls)
            .with_grant_keys(grant_keys),
        );
        let limits = Arc::new(LiveLimits::new(
            (upload_limiter, cfg.upload_rate_limit),
            (
                conductor.traffic.download_limiter(),
                cfg.download_rate_limit,
            ),
            (
                conductor.traffic.back_to_source_limiter(),
                cfg.back_to_source_rate_limit,
            ),
            (upload_places.clone(), cfg.max_upload_connections),
        ));

        if cfg.scheduler.is_some() || cfg.manager.is_some() {
            let advertise = cfg.advertise_ip.clone().unwrap_or_else(|| {
                if upload_addr.ip().is_unspecified() {
                    String::new()
                } else {
                    upload_addr.ip().to_string()
                }
            });
            let info = HostInfo {
                host_id: host_id.clone(),
                hostname: host_id.clone(),
                ip: advertise.clone(),
                upload_port: u32::from(upload_addr.port()),
                seed: cfg.seed,
                upload_rate_limit: cfg.upload_rate_limit,
                max_upload_connections: cfg.max_upload_connections as u32,
                idc: cfg.idc.clone(),
                location: cfg.location.clone(),
            };
            let sessions = Arc::new(HostSessions::new(
                info,
                conductor.clone(),
                stats.clone(),
                upload_places,
                shutdown.clone(),
            ));
            // A fixed scheduler is used from the start (with a manager, until it answers).
            let fixed = cfg.scheduler.iter().cloned().collect::<Vec<_>>();
            match &cfg.manager {
                None => {
                    let change = schedulers
                        .replace(&fixed)
                        .map_err(DaemonStartError::Config)?;
                    sessions.apply(change);
                }
                Some(url) => {
                    let endpoint = pollen_tls::grpc_endpoint("manager", url, client_tls.clone())
                        .map_err(DaemonStartError::setup("the manager link"))?;
                    let session = ManagerSession {
                        url: url.clone(),
                        endpoint,
                        connect_timeout: cfg.connect_timeout,
                        hello: pollen_proto::manager::DaemonHello {
                            host_id: host_id.clone(),
                            hostname: cfg
                                .hostname
                                .clone()
                                .unwrap_or_else(pollen_core::host::hostname),
                            ip: advertise,
                            upload_port: u32::from(upload_addr.port()),
                            idc: cfg.idc.clone(),
                            location: cfg.location.clone(),
                            seed: cfg.seed,
                            scheduler_cluster_id: cfg.scheduler_cluster_id,
                            seed_peer_cluster_id: cfg.seed_peer_cluster_id,
                        },
                        set: schedulers.clone(),
                        join_token: join_token.clone(),
                        sessions: sessions.clone(),
                        cache: cfg.data_dir.join("placement.json"),
                        conductor: conductor.clone(),
                        limits: limits.clone(),
                    };
                    let initial = session.cached().unwrap_or(CachedPlacement {
                        scheduler_cluster_id: 0,
                        scheduler_urls: fixed,
                        config: None,
                    });
                    session.apply(&initial);
                    tasks.spawn(session.run(shutdown.clone()));
                }
            }
        }

        if proxy_listener.is_some() || !registry_listeners.is_empty() {
            let relay_client = pollen_source::client(
                cfg.connect_timeout,
                cfg.origin_read_timeout,
                &roots,
                pollen_source::Redirects::Keep,
                &guard,
                pollen_source::OriginPolicy::of(cfg.seed, false),
            )
            .map_err(DaemonStartError::setup("the proxy's origin client"))?;
            let rules =
                crate::proxy::rules::Rules::new(&cfg.proxy).map_err(DaemonStartError::Config)?;
            let (cert, key) = crate::proxy::ca::load_or_create(&cfg)
                .map_err(DaemonStartError::setup("the proxy's CA"))?;
            let ca = crate::proxy::ca::Ca::new(&cert, &key)
                .map_err(DaemonStartError::setup("the proxy's CA"))?;
            let state = Arc::new(ProxyState {
                conductor: conductor.clone(),
                cfg: cfg.proxy.clone(),
                relay_client,
                source: source.clone(),
                rules,
                ca: Some(Arc::new(ca)),
            });
            if let Some(listener) = proxy_listener {
                tasks.spawn(crate::proxy::serve(
                    listener,
                    state.clone(),
                    crate::proxy::Door::Shared,
                    shutdown.clone(),
                ));
            }
            for (registry, addr, listener) in registry_listeners {
                info!(%registry, %addr, "registry mirror listening");
                tasks.spawn(crate::proxy::serve(
                    listener,
                    state.clone(),
                    crate::proxy::Door::Registry(registry.into()),
                    shutdown.clone(),
                ));
            }
        }

        if cfg.gc.disk_low_watermark > cfg.gc.disk_high_watermark {
            return Err(DaemonStartError::Config(
                "gc.disk_low_watermark is above gc.disk_high_watermark".into(),
            ));
        }
        tasks.spawn(crate::gc::run(
            store.clone(),
            conductor.clone(),
            cfg.gc.clone(),
            cfg.data_dir.clone(),
            shutdown.clone(),
        ));

        let api_service = LocalApi {
            conductor: conductor.clone(),
            upload_addr: upload_addr.to_string(),
            proxy_addr: proxy_addr.map(|a| a.to_string()).unwrap_or_default(),
            registry_mirrors: registry_mirrors.clone(),
            limits,
            cache_quota: cfg.gc.quota,
        };
        let token = shutdown.clone();
        tasks.spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(DaemonServer::new(api_service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(api), token.cancelled_owned())
                .await;
            if let Err(e) = r {
                warn!(error = %e, "local API server stopped");
            }
        });
        info!(%upload_addr, proxy = ?proxy_addr, socket = %cfg.api_socket.display(), %host_id, seed = cfg.seed, "daemon started");
        Ok(DaemonHandle {
            upload_addr,
            proxy_addr,
            registry_mirrors,
            api_socket: cfg.api_socket.clone(),
            host_id,
            stats,
            shutdown,
            tasks,
            work: conductor.tasks.clone(),
        })
    }
}
