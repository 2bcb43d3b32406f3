//! A local Pollen cluster of real OS processes: a scheduler, an optional seed and N daemons on
//! loopback, each with its own ephemeral port, data directory, API socket and log file, all
//! under one temporary directory that is removed (and every process killed) on drop.
//!
//! The multi-process tests and the benchmark harness run on it, and kill and restart daemons
//! through it.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use tokio::process::{Child, Command};

pub use crate::daemon_proc::DaemonProc;
pub use crate::launch::tls_flags;
use crate::launch::{launch, spawn_scheduler, SEED_TOKEN_FILE};
pub use crate::role_proc::{ManagerProc, RoleProc, SchedulerProc};

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `pollen` binary.
    pub bin: PathBuf,
    /// Number of ordinary daemons.
    pub peers: usize,
    /// Start a seed daemon.
    pub seed: bool,
    /// Start a scheduler; without one, daemons are pointed at a closed port.
    pub scheduler: bool,
    /// Upload limit of the seed, bytes per second.
    pub seed_upload_limit: Option<u64>,
    /// Upload limit of every ordinary daemon, bytes per second.
    pub peer_upload_limit: Option<u64>,
    /// Extra flags for every daemon.
    pub daemon_args: Vec<String>,
    /// Extra flags for single ordinary daemons, by index (`peer_args[0]` for `peer-1`).
    pub peer_args: Vec<Vec<String>>,
    /// Extra flags for the seed alone (its origin credentials, say).
    pub seed_args: Vec<String>,
    /// Where daemon data directories are created (default: the cluster's temporary dir).
    pub data_root: Option<PathBuf>,
    /// Address the scheduler and every daemon listen on, instead of 127.0.0.x: one that
    /// daemons in other network namespaces can reach (a bridge's address).
    pub listen_ip: Option<String>,
    /// Ordinary daemons run inside a network namespace, by index: (namespace, its address).
    pub peer_netns: Vec<Option<(String, String)>>,
    /// Mutual TLS between every role, with certificates from `pollen certs dev` made in the
    /// cluster's directory.
    pub tls: bool,
}

impl ClusterSpec {
    /// `peers` daemons with neither scheduler nor seed: every download goes to the origin.
    pub fn standalone(bin: impl Into<PathBuf>, peers: usize) -> Self {
        Self {
            seed: false,
            scheduler: false,
            ..Self::new(bin, peers)
        }
    }

    /// A scheduler, a seed and `peers` daemons, no limits.
    pub fn new(bin: impl Into<PathBuf>, peers: usize) -> Self {
        Self {
            bin: bin.into(),
            peers,
            seed: true,
            scheduler: true,
            seed_upload_limit: None,
            peer_upload_limit: None,
            daemon_args: Vec::new(),
            peer_args: Vec::new(),
            seed_args: Vec::new(),
            data_root: None,
            listen_ip: None,
            peer_netns: Vec::new(),
            tls: false,
        }
    }
}

/// A running cluster; everything stops and is removed on drop.
pub struct Cluster {
    /// The temporary directory holding every data dir, socket and log.
    pub dir: tempfile::TempDir,
    /// The scheduler URL daemons use.
    pub scheduler_url: String,
    /// The seed daemon, if any.
    pub seed: Option<DaemonProc>,
    /// The ordinary daemons.
    pub peers: Vec<DaemonProc>,
    scheduler: Option<Child>,
    bin: PathBuf,
    /// The certificates every role uses, with mutual TLS on.
    pub certs: Option<pollen_tls::DevCerts>,
}

impl Drop for Cluster {
    /// With `POLLEN_KEEP_CLUSTER` set, the directory (logs, data) is kept for inspection.
    fn drop(&mut self) {
        if std::env::var_os("POLLEN_KEEP_CLUSTER").is_some() {
            let path = self.dir.path().to_path_buf();
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::TempDir::new().unwrap_or_else(|_| std::process::abort()),
            );
            let _ = kept.keep();
            eprintln!("cluster kept at {}", path.display());
        }
    }
}

impl Cluster {
    /// Starts everything and waits until every daemon is connected to the scheduler.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pollen-cluster-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let certs = if spec.tls {
            Some(
                pollen_tls::make_dev_certs(&dir.path().join("certs"), &[])
                    .context("cannot make certificates")?,
            )
        } else {
            None
        };
        let scheme = if spec.tls { "https" } else { "http" };
        // The join token the kit's seed shows its scheduler (under TLS it shows its
        // certificate's seed role instead).
        let seed_token = dir.path().join(SEED_TOKEN_FILE);
        std::fs::write(
            &seed_token,
            format!(
                "{}{}\n",
                pollen_core::join::PREFIX,
                hex::encode(rand::random::<[u8; 24]>())
            ),
        )
        .context("cannot write the seed's join token")?;
        let (scheduler, scheduler_url) = if spec.scheduler {
            let listen = format!("{}:0", spec.listen_ip.as_deref().unwrap_or("127.0.0.1"));
            let (child, addr) =
                spawn_scheduler(&spec.bin, &listen, dir.path(), certs.as_ref()).await?;
            (Some(child), format!("{scheme}://{addr}"))
        } else {
            // A port nothing listens on: daemons must cope without a scheduler.
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let addr = l.local_addr()?;
            drop(l);
            (None, format!("{scheme}://{addr}"))
        };
        let make = |name: String,
                    ip: u8,
                    seed: bool,
                    limit: Option<u64>,
                    own: &[String],
                    netns: Option<&(String, String)>| {
            let ip = match (netns, &spec.listen_ip) {
                (Some((_, addr)), _) => addr.clone(),
                (None, Some(addr)) => addr.clone(),
                (None, None) => format!("127.0.0.{ip}"),
            };
            let data_dir = spec.data_root.as_deref().unwrap_or(dir.path()).join(&name);
            let socket = dir.path().join(format!("{name}.sock"));
            let mut args = vec![
                "--scheduler".to_string(),
                scheduler_url.clone(),
                "--data-dir".into(),
                data_dir.to_string_lossy().into_owned(),
                "--upload-listen".into(),
                format!("{ip}:0"),
                "--api-socket".into(),
                socket.to_string_lossy().into_owned(),
                "--proxy-listen".into(),
                format!("{ip}:0"),
            ];
            if seed {
                args.push("--seed".into());
                if certs.is_none() {
                    args.push("--join-token-file".into());
                    args.push(seed_token.to_string_lossy().into_owned());
                }
            }
            // The kit's origins listen on loopback or on the cluster's own address; a seed
            // (and any download the scheduler or manager orders) refuses both unless they
            // are allow-listed.
            args.push("--origin-allow".into());
            args.push(match &spec.listen_ip {
                Some(own) => format!("127.0.0.0/8,{own}"),
                None => "127.0.0.0/8".into(),
            });
            if let Some(l) = limit {
                args.push("--upload-rate-limit".into());
                args.push(l.to_string());
            }
            if let Some(c) = &certs {
                // A seed's certificate carries the seed role, which its claim needs.
                args.extend(tls_flags(
                    &c.ca_cert,
                    if seed { &c.seed } else { &c.daemon },
                ));
            }
            args.extend(spec.daemon_args.iter().cloned());
            args.extend(own.iter().cloned());
            DaemonProc {
                log: dir.path().join(format!("{name}.log")),
                name,
                socket,
                data_dir,
                bin: spec.bin.clone(),
                args,
                netns: netns.map(|(ns, _)| ns.clone()),
                child: None,
            }
        };
        let mut seed = spec.seed.then(|| {
            make(
                "seed".into(),
                2,
                true,
                spec.seed_upload_limit,
                &spec.seed_args,
                None,
            )
        });
        let mut peers: Vec<DaemonProc> = (0..spec.peers)
            .map(|i| {
                make(
                    format!("peer-{}", i + 1),
                    3 + (i % 250) as u8,
                    false,
                    spec.peer_upload_limit,
                    spec.peer_args.get(i).map(Vec::as_slice).unwrap_or_default(),
                    spec.peer_netns.get(i).and_then(Option::as_ref),
                )
            })
            .collect();
        if let Some(s) = seed.as_mut() {
            s.spawn().await?;
        }
        for p in peers.iter_mut() {
            p.spawn().await?;
        }
        let cluster = Self {
            dir,
            scheduler_url,
            seed,
            peers,
            scheduler,
            bin: spec.bin.clone(),
            certs,
        };
        if spec.scheduler {
            for d in cluster.seed.iter().chain(cluster.peers.iter()) {
                d.wait_connected().await?;
            }
        }
        Ok(cluster)
    }

    /// A daemon outside the cluster's trust, not started: pointed at the cluster's scheduler
    /// (unless `args` names another) with its own data directory, socket and loopback
    /// address, and `args` as its only other flags (none of the cluster's certificates or
    /// `daemon_args`).
    pub fn stranger(&self, name: &str, args: Vec<String>) -> DaemonProc {
        let data_dir = self.dir.path().join(name);
        let socket = self.dir.path().join(format!("{name}.sock"));
        let mut all = Vec::new();
        let given = |flag: &str| args.iter().any(|a| a == flag);
        if !given("--scheduler") && !given("--manager") {
            all.extend(["--scheduler".to_string(), self.scheduler_url.clone()]);
        }
        for (flag, value) in [
            ("--data-dir", data_dir.to_string_lossy().into_owned()),
            ("--upload-listen", "127.0.0.254:0".into()),
            ("--api-socket", socket.to_string_lossy().into_owned()),
            ("--proxy-listen", "off".into()),
        ] {
            if !given(flag) {
                all.extend([flag.to_string(), value]);
            }
        }
        all.extend(args);
        DaemonProc {
            log: self.dir.path().join(format!("{name}.log")),
            name: name.to_string(),
            socket,
            data_dir,
            bin: self.bin.clone(),
            args: all,
            netns: None,
            child: None,
        }
    }

    /// Starts `pollen manager` on loopback with a SQLite database in the cluster's
    /// directory, `admin_password` for its admin, and `config` as its TOML config; with the
    /// cluster's certificates, its gRPC port demands them (an `https://` URL).
    pub async fn start_manager(
        &self,
        admin_password: &str,
        config: &str,
    ) -> anyhow::Result<ManagerProc> {
        self.start_manager_on(admin_password, config, "127.0.0.1:0", "127.0.0.1:0")
            .await
    }

    /// As [`Cluster::start_manager`], on given addresses (to restart one where its
    /// schedulers and daemons expect it, with [`ManagerProc::addrs`]).
    pub async fn start_manager_on(
        &self,
        admin_password: &str,
        config: &str,
        rest: &str,
        grpc: &str,
    ) -> anyhow::Result<ManagerProc> {
        let dir = self.dir.path().join("manager");
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("manager.toml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["manager", "--listen", rest, "--grpc-listen", grpc])
            .arg("--data-dir")
            .arg(&dir)
            .arg("--config")
            .arg(&config_path)
            .env("POLLEN_ADMIN_PASSWORD", admin_password);
        if let Some(c) = &self.certs {
            cmd.args(tls_flags(&c.ca_cert, &c.manager));
        }
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        let log = self.dir.path().join("manager.log");
        let (child, line) = launch(cmd, &log, "the manager").await?;
        // "manager (DB) gRPC on ADDR REST listening on ADDR"
        let grpc = line
            .split_whitespace()
            .skip_while(|x| *x != "gRPC")
            .nth(2)
            .map(str::to_string);
        let rest = line.rsplit(' ').next().map(str::to_string);
        match (grpc, rest) {
            (Some(g), Some(r)) => Ok(ManagerProc {
                rest: format!("http://{r}"),
                grpc: format!("{scheme}://{g}"),
                log,
                join_token_file: dir.join("initial-join-token"),
                child,
            }),
            _ => bail!("unexpected manager output {line:?}"),
        }
    }

    /// Starts `pollen ARGS` with `env` (log in DIR/NAME.log) and waits for its ready line.
    pub async fn start_role(
        &self,
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<RoleProc> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, line) = launch(cmd, &self.dir.path().join(format!("{name}.log")), name).await?;
        Ok(RoleProc { line, child })
    }

    /// Starts another scheduler on `listen` with `args` (e.g. `--manager URL`), logging to
    /// DIR/NAME.log.
    pub async fn start_scheduler(
        &self,
        name: &str,
        listen: &str,
        args: &[String],
    ) -> anyhow::Result<SchedulerProc> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["scheduler", "--listen", listen]).args(args);
        let (child, line) = launch(cmd, &self.dir.path().join(format!("{name}.log")), name).await?;
        let addr = line
            .rsplit(' ')
            .next()
            .ok_or_else(|| anyhow!("unexpected scheduler output {line:?}"))?;
        Ok(SchedulerProc {
            url: format!("http://{addr}"),
            child,
        })
    }

    /// Every daemon, seed first.
    pub fn daemons(&self) -> impl Iterator<Item = &DaemonProc> {
        self.seed.iter().chain(self.peers.iter())
    }

    /// Sends SIGKILL to the scheduler (usable while the cluster is borrowed).
    pub fn kill_scheduler(&self) {
        if let Some(pid) = self.scheduler.as_ref().and_then(|c| c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Process id of the scheduler, while it runs.
    pub fn scheduler_pid(&self) -> Option<u32> {
        self.scheduler.as_ref().and_then(|c| c.id())
    }

    /// Starts the scheduler again on the address the daemons know (after
    /// [`Cluster::kill_scheduler`]); it comes back with an empty model.
    pub async fn restart_scheduler(&mut self) -> anyhow::Result<()> {
        if let Some(mut old) = self.scheduler.take() {
            let _ = old.kill().await;
        }
        let listen = self
            .scheduler_url
            .split_once("://")
            .map(|(_, addr)| addr)
            .ok_or_else(|| anyhow!("unexpected scheduler URL {}", self.scheduler_url))?
            .to_string();
        let (child, _) =
            spawn_scheduler(&self.bin, &listen, self.dir.path(), self.certs.as_ref()).await?;
        self.scheduler = Some(child);
        Ok(())
    }
}
