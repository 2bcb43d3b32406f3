//! How the CLI's client commands (`get`, `status`, `preheat`) find and reach the local
//! daemon: one `--api-socket` flag and one set of messages for when it cannot.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use pollen_proto::daemon::daemon_client::DaemonClient;
use tonic::transport::Channel;

/// The local daemon's socket (`--api-socket`).
#[derive(Args, Debug)]
pub struct DaemonSocket {
    /// Unix socket of the local daemon.
    #[arg(
        long,
        env = "POLLEN_API_SOCKET",
        default_value = "/run/pollen/daemon.sock"
    )]
    pub api_socket: PathBuf,
}

impl DaemonSocket {
    /// A client of the local daemon, or an error that says how to start one or get access.
    pub(crate) async fn connect(&self) -> anyhow::Result<DaemonClient<Channel>> {
        pollen_daemon::api::client::connect(&self.api_socket)
            .await
            .map_err(|e| {
                if e.denied {
                    return anyhow!(
                        "you may not use the pollen daemon at {} (permission denied): its socket is for root and the members of the daemon's api_group (default `pollen`); ask an administrator to add you to that group",
                        e.path.display()
                    );
                }
                anyhow!(
                    "no pollen daemon is running at {} ({}); start one with `pollen daemon --scheduler http://SCHEDULER:8002`, or pass --api-socket",
                    e.path.display(),
                    e.reason
                )
            })
    }
}
