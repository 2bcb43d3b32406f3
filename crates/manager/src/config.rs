//! The manager's settings, with their defaults. Read from TOML (`pollen manager --config`),
//! flags winning.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The manager's settings (its config file, with flags over it); every field has a default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// Database URL. Default: a SQLite file `manager.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Where the SQLite file and the initial admin password are kept (default
    /// `/var/lib/pollen/manager`).
    pub data_dir: PathBuf,
    /// How long a console session lasts (default 12h).
    #[serde(with = "pollen_core::duration::humane")]
    pub session_ttl: Duration,
    /// A scheduler silent for this long is marked inactive and no longer handed to daemons
    /// (default 30s).
    #[serde(with = "pollen_core::duration::humane")]
    pub keepalive_timeout: Duration,
    /// How often a daemon's open session refreshes its "last seen" time (default 30s).
    #[serde(with = "pollen_core::duration::humane")]
    pub peer_seen_interval: Duration,
    /// Connections served at once on the REST port (default 1024).
    pub max_connections: usize,
    /// A client must send its request headers within this time (default 10s).
    #[serde(with = "pollen_core::duration::humane")]
    pub header_read_timeout: Duration,
    /// A job waits this long for a peer to be connected before failing its part (default
    /// 30s; covers daemons reconnecting after a manager restart).
    #[serde(with = "pollen_core::duration::humane")]
    pub job_peer_grace: Duration,
    /// Longest a peer may take over one fetch of a job (default 1h).
    #[serde(with = "pollen_core::duration::humane")]
    pub job_command_timeout: Duration,
    /// Connections held at once on the gRPC port (default 10000; every daemon and scheduler
    /// keeps one).
    pub grpc_max_connections: usize,
    /// A gRPC client must send the HTTP/2 preface (with TLS: finish its handshake) within
    /// this time or be disconnected (default 10s).
    #[serde(with = "pollen_core::duration::humane")]
    pub connection_setup_timeout: Duration,
    /// HTTPS on the REST API and console port (`[rest_tls]` table: `cert`, `key`, PEM files;
    /// the manager certificate of `pollen certs dev` will do for a test). Passwords, session
    /// cookies and tokens cross this port: serve it over TLS wherever it is reached over a
    /// network. The session cookie is then marked `Secure`. Default: none (plain HTTP, fit
    /// for loopback only).
    pub rest_tls: Option<RestTls>,
    /// File holding the key (64 hex digits) that seals job secrets (registry passwords,
    /// request headers) in the database; `POLLEN_MANAGER_SECRETS_KEY` wins over it. Default:
    /// `DATA_DIR/secrets.key`, made on first start. Managers sharing a database share it.
    pub secrets_key_file: Option<PathBuf>,
    /// Failed sign-ins and requests with a bad token allowed per client address and minute;
    /// past it that address gets 429 (with `Retry-After`) on every credentialed request until
    /// the minute ends. 0 turns it off. Default 10.
    pub auth_failures_per_minute: u32,
    /// Let schedulers register, and daemons claim to be seeds, on the plain-TCP gRPC port
    /// without a join token: only for networks whose hosts are all trusted (the manager says
    /// so when it starts). Under mutual TLS the role in the certificate (or a token) is still
    /// needed. Default false.
    pub open_join: bool,
    /// Mutual TLS on the gRPC port (`[tls]` table: `ca_cert`, `cert`, `key`): with it, only
    /// schedulers and daemons presenting a certificate signed by `ca_cert` are let in, and
    /// they reach the manager at an `https://` URL. Default: none (plain HTTP/2). The REST
    /// port is not affected: put it behind a TLS terminator.
    pub tls: Option<pollen_tls::TlsConfig>,
}

/// The REST port's certificate.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestTls {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: PathBuf::from("/var/lib/pollen/manager"),
            session_ttl: Duration::from_secs(12 * 3600),
            keepalive_timeout: Duration::from_secs(30),
            peer_seen_interval: Duration::from_secs(30),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            job_peer_grace: Duration::from_secs(30),
            job_command_timeout: Duration::from_secs(3600),
            grpc_max_connections: 10_000,
            connection_setup_timeout: Duration::from_secs(10),
            auth_failures_per_minute: 10,
            open_join: false,
            rest_tls: None,
            secrets_key_file: None,
            tls: None,
        }
    }
}

impl ManagerConfig {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("manager.db").display()),
        }
    }
}
