//! The other processes a test starts beside a cluster's daemons: a manager, extra
//! schedulers, and any other role (`pollen standalone`, …), each killed on drop.

use std::path::PathBuf;

use tokio::process::Child;

/// A `pollen manager` process; killed on drop.
pub struct ManagerProc {
    /// REST base URL (`http://127.0.0.1:PORT`).
    pub rest: String,
    /// gRPC URL for schedulers and daemons.
    pub grpc: String,
    /// Its log file.
    pub log: PathBuf,
    /// The join token the manager made at first start (plain-TCP gRPC only): what the kit
    /// gives schedulers and seeds that join it.
    pub join_token_file: PathBuf,
    pub(crate) child: Child,
}

impl ManagerProc {
    /// `host:port` of the REST API and of the gRPC service.
    pub fn addrs(&self) -> (String, String) {
        let strip = |u: &str| u.split_once("://").map_or(u, |(_, a)| a).to_string();
        (strip(&self.rest), strip(&self.grpc))
    }

    /// SIGKILL, no clean shutdown.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Any other `pollen` process (`pollen standalone`, …) and the ready line it printed; killed
/// on drop.
pub struct RoleProc {
    /// The first line it printed.
    pub line: String,
    pub(crate) child: Child,
}

impl RoleProc {
    /// The value of `key=` in the ready line.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    }

    /// SIGKILL, no clean shutdown.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// An extra scheduler process; killed on drop.
pub struct SchedulerProc {
    /// The URL daemons dial.
    pub url: String,
    pub(crate) child: Child,
}

impl SchedulerProc {
    /// SIGKILL, no clean shutdown.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
