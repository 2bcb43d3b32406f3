//! The demo's swarm: a scheduler, one seed and N daemons running in this process, the same
//! code as the separate roles, each daemon on its own loopback address with its own data
//! directory and API socket under one temporary directory that goes when the swarm stops.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pollen_core::join::JoinToken;
use pollen_daemon::{Daemon, DaemonConfig, DaemonHandle};
use pollen_proto::daemon::DownloadRequest;
use pollen_scheduler::{SchedulerConfig, SchedulerService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long every daemon may take to reach the scheduler.
const STARTUP: Duration = Duration::from_secs(30);

/// One daemon of the swarm.
pub(crate) struct Peer {
    pub(crate) name: String,
    pub(crate) daemon: DaemonHandle,
}

impl Peer {
    /// Has this daemon download `url` to `output`, to the end.
    pub(crate) async fn download(&self, url: &str, output: &Path) -> anyhow::Result<()> {
        let mut client = pollen_daemon::api::client::connect(&self.daemon.api_socket).await?;
        let request = DownloadRequest {
            url: url.to_string(),
            output_path: output.to_string_lossy().into_owned(),
            ..Default::default()
        };
        pollen_daemon::api::client::download_to_end(&mut client, request)
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
    }

    /// Bytes this daemon read from the origin.
    pub(crate) fn bytes_from_origin(&self) -> u64 {
        self.daemon.stats.origin_bytes.load(Ordering::Relaxed)
    }

    /// Bytes this daemon took from other peers.
    pub(crate) fn bytes_from_peers(&self) -> u64 {
        self.daemon.stats.p2p_download_bytes.load(Ordering::Relaxed)
    }

    /// Bytes this daemon served to other peers.
    pub(crate) fn bytes_uploaded(&self) -> u64 {
        self.daemon.stats.upload.bytes.load(Ordering::Relaxed)
    }
}

/// A running swarm; [`Swarm::stop`] ends it.
pub(crate) struct Swarm {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) seed: Peer,
    pub(crate) peers: Vec<Peer>,
    shutdown: CancellationToken,
    scheduler: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Swarm {
    /// Starts the scheduler, the seed and `peers` daemons (each uploading at most
    /// `upload_limit` bytes per second, if given) and waits until all reach the scheduler.
    pub(crate) async fn start(peers: usize, upload_limit: Option<u64>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pollen-demo-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen for the scheduler")?;
        let scheduler_url = format!("http://{}", listener.local_addr()?);
        let service = SchedulerService::new(SchedulerConfig::default());
        // The seed proves its role with a join token made for this run.
        let token = JoinToken::parse(&format!(
            "{}{}",
            pollen_core::join::PREFIX,
            hex::encode(rand::random::<[u8; 32]>())
        ))?;
        service.accept_seed_join_tokens(HashSet::from([token.hash()]));
        let scheduler = tokio::spawn(service.serve(listener, shutdown.clone()));

        let start = |name: String, ip: u8, seed: bool| {
            let cfg = DaemonConfig {
                scheduler: Some(scheduler_url.clone()),
                seed,
                join_token: seed.then(|| token.clone()),
                data_dir: dir.path().join(&name),
                upload_listen: ([127, 0, 0, ip], 0).into(),
                api_socket: dir.path().join(format!("{name}.sock")),
                // Only this user drives the demo's daemons.
                api_group: String::new(),
                upload_rate_limit: if seed { 0 } else { upload_limit.unwrap_or(0) },
                // The demo's origin listens on loopback, which daemons refuse unless told.
                origin_allow: vec!["127.0.0.0/8".into()],
                proxy: pollen_daemon::ProxyConfig {
                    listen: None,
                    ..Default::default()
                },
                ..Default::default()
            };
            async move {
                let daemon = Daemon::start(cfg)
                    .await
                    .with_context(|| format!("cannot start {name}"))?;
                anyhow::Ok(Peer { name, daemon })
            }
        };
        let seed = start("seed".into(), 2, true).await?;
        let mut all = Vec::with_capacity(peers);
        for i in 0..peers {
            all.push(start(format!("peer-{}", i + 1), 3 + (i % 250) as u8, false).await?);
        }
        let swarm = Self {
            dir,
            seed,
            peers: all,
            shutdown,
            scheduler,
        };
        let deadline = Instant::now() + STARTUP;
        for p in std::iter::once(&swarm.seed).chain(&swarm.peers) {
            while p.daemon.stats.scheduler_sessions.load(Ordering::Relaxed) == 0 {
                if Instant::now() > deadline {
                    bail!("{} did not reach the scheduler within {STARTUP:?}", p.name);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(swarm)
    }

    /// Every daemon, seed first.
    pub(crate) fn daemons(&self) -> impl Iterator<Item = &Peer> {
        std::iter::once(&self.seed).chain(&self.peers)
    }

    /// Stops every daemon and the scheduler, and removes the directory.
    pub(crate) async fn stop(self) {
        for p in std::iter::once(self.seed).chain(self.peers) {
            p.daemon.shutdown().await;
        }
        self.shutdown.cancel();
        let _ = self.scheduler.await;
    }
}
