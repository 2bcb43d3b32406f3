//! `pollen daemon`: runs a peer (or a seed peer with `--seed`) until Ctrl-C or SIGTERM.
//!
//! Settings come from the defaults, then the TOML file given with `--config`, then flags (and
//! their `POLLEN_*` variables), the later winning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pollen_daemon::config::parse_duration;
use pollen_daemon::{Daemon, DaemonConfig};

/// `--proxy-listen`: an address, or `off`.
#[derive(Clone, Debug)]
pub enum ProxyListen {
    /// Listen here.
    At(SocketAddr),
    /// No mirror and no proxy.
    Off,
}

fn proxy_listen(s: &str) -> Result<ProxyListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(ProxyListen::Off);
    }
    s.parse()
        .map(ProxyListen::At)
        .map_err(|_| format!("{s:?} is not an address (e.g. 127.0.0.1:4001) or \"off\""))
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (e.g. endpoint=http://minio:9000)"
        )),
    }
}

fn size(s: &str) -> Result<u64, String> {
    pollen_core::parse_size(s).map_err(|e| e.to_string())
}

/// Daemon flags; each overrides the same key of the `--config` file.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// TOML config file (keys as in `DaemonConfig`; flags win over it).
    #[arg(long, env = "POLLEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Scheduler URL, e.g. http://scheduler:8002. Without one, every download goes to the origin.
    #[arg(long, env = "POLLEN_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Manager gRPC URL, e.g. http://manager:65003: it places this daemon in a scheduler
    /// cluster and tells it which schedulers to use.
    #[arg(long, env = "POLLEN_MANAGER")]
    pub manager: Option<String>,
    /// Scheduler cluster to be placed in, whatever the manager's scopes say.
    #[arg(long, env = "POLLEN_SCHEDULER_CLUSTER_ID")]
    pub scheduler_cluster_id: Option<i64>,
    /// For a seed peer: the seed-peer cluster it belongs to (its load_limit caps this
    /// daemon's upload connections).
    #[arg(long, env = "POLLEN_SEED_PEER_CLUSTER_ID")]
    pub seed_peer_cluster_id: Option<i64>,
    /// Hostname reported to the manager [default: the machine's].
    #[arg(long, env = "POLLEN_HOSTNAME")]
    pub hostname: Option<String>,
    /// Data directory for content and metadata [default: /var/lib/pollen/daemon].
    #[arg(long, env = "POLLEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run as a seed peer: the scheduler sends it to the origin for new tasks.
    #[arg(long, env = "POLLEN_SEED")]
    pub seed: bool,
    /// Upload server address [default: 0.0.0.0:4100].
    #[arg(long, env = "POLLEN_UPLOAD_LISTEN")]
    pub upload_listen: Option<SocketAddr>,
    /// IP address other peers use to reach this one [default: the upload address, or the
    /// address the scheduler sees].
    #[arg(long, env = "POLLEN_ADVERTISE_IP")]
    pub advertise_ip: Option<String>,
    /// Unix socket of the local API used by `pollen get` [default: /run/pollen/daemon.sock].
    #[arg(long, env = "POLLEN_API_SOCKET")]
    pub api_socket: Option<PathBuf>,
    /// Group whose members may use the local API besides root [default: pollen].
    #[arg(long, env = "POLLEN_API_GROUP")]
    pub api_group: Option<String>,
    /// Upload limit in bytes per second (e.g. 100MiB); 0 means unlimited.
    #[arg(long, env = "POLLEN_UPLOAD_RATE_LIMIT", value_parser = size)]
    pub upload_rate_limit: Option<u64>,
    /// Download limit in bytes per second (e.g. 1GiB); 0 means unlimited.
    #[arg(long, env = "POLLEN_DOWNLOAD_RATE_LIMIT", value_parser = size)]
    pub download_rate_limit: Option<u64>,
    /// Back-to-source limit in bytes per second; 0 means unlimited.
    #[arg(long, env = "POLLEN_BACK_TO_SOURCE_RATE_LIMIT", value_parser = size)]
    pub back_to_source_rate_limit: Option<u64>,
    /// Download limit of each task in bytes per second; 0 means unlimited.
    #[arg(long, env = "POLLEN_TASK_DOWNLOAD_RATE_LIMIT", value_parser = size)]
    pub task_download_rate_limit: Option<u64>,
    /// Prefetch limit in bytes per second (prefetch also waits for foreground downloads);
    /// 0 means unlimited.
    #[arg(long, env = "POLLEN_PREFETCH_RATE_LIMIT", value_parser = size)]
    pub prefetch_rate_limit: Option<u64>,
    /// Most pieces fetched at once over every task; 0 means no cap.
    #[arg(long, env = "POLLEN_MAX_CONCURRENT_DOWNLOAD_PIECES")]
    pub max_concurrent_download_pieces: Option<usize>,
    /// Most pieces sent at once over every upload connection; 0 means no cap.
    #[arg(long, env = "POLLEN_MAX_CONCURRENT_UPLOAD_PIECES")]
    pub max_concurrent_upload_pieces: Option<usize>,
    /// Most concurrent upload connections [default: 64].
    #[arg(long, env = "POLLEN_MAX_UPLOAD_CONNECTIONS")]
    pub max_upload_connections: Option<usize>,
    /// TCP congestion control of upload connections (Linux, e.g. `cubic`); empty keeps the
    /// system's [default: empty].
    #[arg(long, env = "POLLEN_UPLOAD_CONGESTION_CONTROL")]
    pub upload_congestion_control: Option<String>,
    /// Extra CA certificate (PEM file) trusted for HTTPS origins; repeatable.
    #[arg(long = "origin-ca-cert", env = "POLLEN_ORIGIN_CA_CERT")]
    pub origin_ca_certs: Vec<PathBuf>,
    /// Address or CIDR network the origin guard lets through (e.g. 127.0.0.1, 10.0.0.0/8);
    /// repeatable. Without it, cloud metadata and link-local origins are refused, and for a
    /// seed or a download another host ordered also loopback and this node's own addresses.
    #[arg(
        long = "origin-allow",
        env = "POLLEN_ORIGIN_ALLOW",
        value_delimiter = ','
    )]
    pub origin_allow: Vec<String>,
    /// Directory whose files may be read as file:///path origins (links resolved first, so
    /// none leads outside it); repeatable. Without it file:// origins are refused.
    #[arg(
        long = "origin-file-root",
        env = "POLLEN_ORIGIN_FILE_ROOT",
        value_delimiter = ','
    )]
    pub origin_file_roots: Vec<PathBuf>,
    /// An S3 origin setting KEY=VALUE over the AWS_* environment (endpoint=http://minio:9000,
    /// region=eu-west-1, allow_http=true, …); repeatable. Keep secrets in the environment or
    /// the config file's [origin_s3] table, not on a command line others can read.
    #[arg(long = "origin-s3", env = "POLLEN_ORIGIN_S3", value_delimiter = ',', value_parser = key_value)]
    pub origin_s3: Vec<(String, String)>,
    /// A GCS origin setting KEY=VALUE over the GOOGLE_* environment (base_url=…,
    /// service_account=/path/key.json, …); repeatable.
    #[arg(long = "origin-gcs", env = "POLLEN_ORIGIN_GCS", value_delimiter = ',', value_parser = key_value)]
    pub origin_gcs: Vec<(String, String)>,
    /// An Azure origin setting KEY=VALUE over the AZURE_* environment (account_name=…,
    /// endpoint=…, …); repeatable.
    #[arg(long = "origin-azure", env = "POLLEN_ORIGIN_AZURE", value_delimiter = ',', value_parser = key_value)]
    pub origin_azure: Vec<(String, String)>,
    /// The Hugging Face Hub `hf://` URLs are read from (a mirror speaking its API works too).
    /// [default: HF_ENDPOINT, else https://huggingface.co]
    #[arg(long = "origin-hf-endpoint", env = "POLLEN_ORIGIN_HF_ENDPOINT")]
    pub origin_hf_endpoint: Option<String>,
    /// File holding the hub token for private and gated repositories. [default: HF_TOKEN]
    #[arg(long = "origin-hf-token-file", env = "POLLEN_ORIGIN_HF_TOKEN_FILE")]
    pub origin_hf_token_file: Option<PathBuf>,
    /// File holding a seed's join token (the manager's `initial-join-token`, or one made with
    /// `POST /api/v1/join-tokens` for role `seed`): without mutual TLS a seed claim needs it.
    #[arg(long, env = "POLLEN_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Give up (and retry) an origin that sends nothing for this long (e.g. 30s).
    #[arg(long, env = "POLLEN_ORIGIN_READ_TIMEOUT", value_parser = parse_duration)]
    pub origin_read_timeout: Option<Duration>,
    /// Close an upload connection whose peer takes no bytes for this long (e.g. 60s).
    #[arg(long, env = "POLLEN_UPLOAD_WRITE_TIMEOUT", value_parser = parse_duration)]
    pub upload_write_timeout: Option<Duration>,
    /// Give up a parent that sends nothing for this long (e.g. 15s).
    #[arg(long, env = "POLLEN_PARENT_STALL_TIMEOUT", value_parser = parse_duration)]
    pub parent_stall_timeout: Option<Duration>,
    /// Registry mirror and HTTP proxy address, or `off` [default: 127.0.0.1:4001].
    #[arg(long, env = "POLLEN_PROXY_LISTEN", value_parser = proxy_listen)]
    pub proxy_listen: Option<ProxyListen>,
    /// Registry for mirror requests that name none, e.g. http://registry.local:5000
    /// [default: https://registry-1.docker.io].
    #[arg(long, env = "POLLEN_DEFAULT_REGISTRY")]
    pub default_registry: Option<String>,
    /// A mirror listener bound to one registry, REGISTRY=ADDRESS (e.g.
    /// http://registry.local:5000=127.0.0.1:4002); repeatable. Needed by CRI-O, Podman, skopeo
    /// and buildah for registries that ask for credentials: their `/v2/` check names no
    /// registry. `pollen init … --registry REGISTRY=ADDRESS` points them at it [default: none].
    #[arg(
        long = "registry-mirror",
        env = "POLLEN_REGISTRY_MIRRORS",
        value_delimiter = ',',
        value_name = "REGISTRY=ADDRESS"
    )]
    pub registry_mirrors: Vec<pollen_daemon::config::RegistryMirror>,
    /// How long to wait for a usable parent before fetching from the origin (e.g. 15s).
    #[arg(long, env = "POLLEN_PARENT_WAIT", value_parser = parse_duration)]
    pub parent_wait: Option<Duration>,
    /// Hard-link finished downloads to their output instead of copying them (same
    /// filesystem only). The output then IS the cached copy: editing it changes what the
    /// cache holds, which is found and fetched again on the next use [default: false].
    #[arg(long, env = "POLLEN_OUTPUT_HARDLINK")]
    pub output_hardlink: Option<bool>,
    /// Data centre of this host; the scheduler prefers parents in the same one.
    #[arg(long, env = "POLLEN_IDC")]
    pub idc: Option<String>,
    /// Location of this host as region|zone|rack; parents sharing more of it are preferred.
    #[arg(long, env = "POLLEN_LOCATION")]
    pub location: Option<String>,
    #[command(flatten)]
    pub tls: super::tls_args::TlsArgs,
}

impl DaemonArgs {
    /// Defaults, then the config file, then the flags.
    pub fn resolve(self) -> anyhow::Result<DaemonConfig> {
        let mut cfg: DaemonConfig = super::load_config(self.config.as_deref())?;
        if self.scheduler.is_some() {
            cfg.scheduler = self.scheduler;
        }
        if self.manager.is_some() {
            cfg.manager = self.manager;
        }
        if let Some(v) = self.scheduler_cluster_id {
            cfg.scheduler_cluster_id = v;
        }
        if let Some(v) = self.seed_peer_cluster_id {
            cfg.seed_peer_cluster_id = v;
        }
        if self.hostname.is_some() {
            cfg.hostname = self.hostname;
        }
        if let Some(v) = self.data_dir {
            cfg.data_dir = v;
        }
        cfg.seed |= self.seed;
        if let Some(v) = self.upload_listen {
            cfg.upload_listen = v;
        }
        if self.advertise_ip.is_some() {
            cfg.advertise_ip = self.advertise_ip;
        }
        if let Some(v) = self.api_group {
            cfg.api_group = v;
        }
        if let Some(v) = self.api_socket {
            cfg.api_socket = v;
        }
        if let Some(v) = self.upload_rate_limit {
            cfg.upload_rate_limit = v;
        }
        if let Some(v) = self.download_rate_limit {
            cfg.download_rate_limit = v;
        }
        if let Some(v) = self.back_to_source_rate_limit {
            cfg.back_to_source_rate_limit = v;
        }
        if let Some(v) = self.task_download_rate_limit {
            cfg.task_download_rate_limit = v;
        }
        if let Some(v) = self.prefetch_rate_limit {
            cfg.prefetch_rate_limit = v;
        }
        if let Some(v) = self.max_concurrent_download_pieces {
            cfg.max_concurrent_download_pieces = v;
        }
        if let Some(v) = self.upload_congestion_control.clone() {
            cfg.upload_congestion_control = v;
        }
        if let Some(v) = self.max_concurrent_upload_pieces {
            cfg.max_concurrent_upload_pieces = v;
        }
        if let Some(v) = self.max_upload_connections {
            cfg.max_upload_connections = v;
        }
        if let Some(v) = self.parent_wait {
            cfg.parent_wait = v;
        }
        if let Some(v) = self.output_hardlink {
            cfg.output_hardlink = v;
        }
        if let Some(v) = self.origin_read_timeout {
            cfg.origin_read_timeout = v;
        }
        if let Some(v) = self.parent_stall_timeout {
            cfg.parent_stall_timeout = v;
        }
        match self.proxy_listen {
            Some(ProxyListen::At(a)) => cfg.proxy.listen = Some(a),
            Some(ProxyListen::Off) => cfg.proxy.listen = None,
            None => {}
        }
        if let Some(v) = self.default_registry {
            cfg.proxy.default_registry = v;
        }
        if !self.registry_mirrors.is_empty() {
            cfg.proxy.registry_mirrors = self.registry_mirrors;
        }
        if let Some(v) = self.upload_write_timeout {
            cfg.upload_write_timeout = v;
        }
        if !self.origin_allow.is_empty() {
            cfg.origin_allow = self.origin_allow;
        }
        cfg.origin_s3.0.extend(self.origin_s3);
        cfg.origin_gcs.0.extend(self.origin_gcs);
        cfg.origin_azure.0.extend(self.origin_azure);
        if self.origin_hf_endpoint.is_some() {
            cfg.origin_hf.endpoint = self.origin_hf_endpoint;
        }
        if self.origin_hf_token_file.is_some() {
            cfg.origin_hf.token_file = self.origin_hf_token_file;
        }
        if !self.origin_file_roots.is_empty() {
            cfg.origin_file_roots = self.origin_file_roots;
        }
        if self.join_token_file.is_some() {
            cfg.join_token_file = self.join_token_file;
        }
        if !self.origin_ca_certs.is_empty() {
            cfg.origin_ca_certs = self.origin_ca_certs;
        }
        if let Some(v) = self.idc {
            cfg.idc = v;
        }
        if let Some(v) = self.location {
            cfg.location = v;
        }
        cfg.tls = self.tls.apply(cfg.tls.take())?;
        Ok(cfg)
    }
}

pub(crate) async fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve()?;
    let handle = Daemon::start(cfg)
        .await
        .context("cannot start the daemon")?;
    let proxy = handle
        .proxy_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    println!(
        "daemon ready upload={} proxy={proxy} socket={} host={}",
        handle.upload_addr,
        handle.api_socket.display(),
        handle.host_id
    );
    crate::signals::terminated().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
