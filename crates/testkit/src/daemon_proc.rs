//! One daemon process of a test cluster: started, stopped, killed and restarted with the
//! same data directory and API socket, and asked for its counters over its local API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pollen_proto::daemon::daemon_client::DaemonClient;
use pollen_proto::daemon::{DownloadRequest, StatRequest, StatResponse};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::launch::{launch, STARTUP};

/// One daemon process, restartable with the same data directory and socket.
pub struct DaemonProc {
    /// Name used in logs and reports (`seed`, `peer-1`, …).
    pub name: String,
    /// Its API socket.
    pub socket: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file (stderr, appended across restarts).
    pub log: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) args: Vec<String>,
    /// Network namespace the process runs in (entered with `ip netns exec`).
    pub(crate) netns: Option<String>,
    pub(crate) child: Option<Child>,
}

impl DaemonProc {
    pub(crate) async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("daemon").args(&self.args);
        let (child, line) = launch(cmd, &self.log, &self.name).await?;
        if !line.starts_with("daemon ready") {
            bail!("{} printed {line:?} instead of its ready line", self.name);
        }
        self.child = Some(child);
        Ok(())
    }

    /// Runs the process in network namespace `ns` (entered with `ip netns exec`, so files
    /// under `/etc/netns/NS/` stand in for those of `/etc`).
    pub fn in_netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self
    }

    /// Starts the process (for one made by [`Cluster::stranger`]) and waits for its ready
    /// line.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the process: a stopped daemon still has its
    /// sockets open and the kernel still accepts connections for it, but it answers nothing.
    pub fn pause(&self, paused: bool) {
        use nix::sys::signal::{kill, Signal};
        if let Some(pid) = self.pid() {
            let sig = if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), sig);
        }
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Starts the process again with the same flags.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    /// A client of its local API.
    pub async fn client(&self) -> anyhow::Result<DaemonClient<Channel>> {
        Ok(pollen_daemon::api::client::connect(&self.socket).await?)
    }

    /// Its counters.
    pub async fn stat(&self) -> anyhow::Result<StatResponse> {
        Ok(self
            .client()
            .await?
            .stat(StatRequest {})
            .await?
            .into_inner())
    }

    /// Address of its upload (data-plane) server.
    pub async fn upload_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let a = self.stat().await?.upload_addr;
        a.parse()
            .with_context(|| format!("{} reports upload address {a:?}", self.name))
    }

    /// Address of its registry mirror and HTTP proxy (`host:port`).
    pub async fn proxy_addr(&self) -> anyhow::Result<String> {
        let a = self.stat().await?.proxy_addr;
        if a.is_empty() {
            bail!("{} runs without a proxy", self.name);
        }
        Ok(a)
    }

    /// Address (`host:port`) of its mirror listener bound to `registry` (`scheme://host[:port]`).
    pub async fn registry_mirror_addr(&self, registry: &str) -> anyhow::Result<String> {
        let s = self.stat().await?;
        s.registry_mirrors
            .iter()
            .find(|m| m.registry == registry)
            .map(|m| m.addr.clone())
            .with_context(|| {
                format!(
                    "{} has no mirror listener for {registry}: {:?}",
                    self.name, s.registry_mirrors
                )
            })
    }

    /// Waits until its cache holds at least `n` complete tasks, at most `within`. (The cache
    /// marks a task complete after its own whole-content check, which may finish just after a
    /// client has the last byte.)
    pub async fn wait_cached(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let stat = self.stat().await?;
            if stat.tasks.iter().filter(|t| t.complete).count() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} caches too little: {:?}", self.name, stat.tasks);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until its host session with the scheduler is open.
    pub async fn wait_connected(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if self
                .stat()
                .await
                .map(|s| s.scheduler_connected)
                .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not connect to the scheduler; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Downloads `url` to `output` and waits for the end.
    pub async fn download(
        &self,
        url: &str,
        output: &Path,
        digest: Option<&str>,
    ) -> Result<(), tonic::Status> {
        self.download_request(DownloadRequest {
            url: url.to_string(),
            output_path: output.to_string_lossy().into_owned(),
            digest: digest.unwrap_or_default().to_string(),
            ..Default::default()
        })
        .await
    }

    /// Runs a download request to the end.
    pub async fn download_request(&self, request: DownloadRequest) -> Result<(), tonic::Status> {
        let mut client = self
            .client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        pollen_daemon::api::client::download_to_end(&mut client, request).await
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
