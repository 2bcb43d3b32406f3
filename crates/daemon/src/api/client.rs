//! Client side of the local API: connects to a daemon's unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use pollen_proto::daemon::daemon_client::DaemonClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// Why the local daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the pollen daemon at {path}: {reason}")]
pub struct ConnectError {
    /// Socket path tried.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
    /// The socket is there but this user may not use it.
    pub denied: bool,
}

/// Connects to the daemon listening on `socket`.
pub async fn connect(socket: &Path) -> Result<DaemonClient<Channel>, ConnectError> {
    let path = socket.to_path_buf();
    let err = |reason: String| ConnectError {
        path: path.clone(),
        reason,
        denied: false,
    };
    // Fail fast with the OS's reason (no such file, connection refused) before tonic wraps it.
    UnixStream::connect(&path).await.map_err(|e| ConnectError {
        denied: e.kind() == std::io::ErrorKind::PermissionDenied,
        ..err(e.to_string())
    })?;
    let p = path.clone();
    let channel = Endpoint::from_static("http://[::1]:1")
        .connect_with_connector(service_fn(move |_: Uri| {
            let p = p.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(DaemonClient::new(channel).max_decoding_message_size(64 << 20))
}

/// Runs a download request on `client` until the daemon says it is done; the daemon's error
/// (with its causes) when it fails, `Aborted` when the stream ends first.
pub async fn download_to_end(
    client: &mut DaemonClient<Channel>,
    request: pollen_proto::daemon::DownloadRequest,
) -> Result<(), tonic::Status> {
    let mut stream = client.download(request).await?.into_inner();
    while let Some(m) = stream.message().await? {
        if m.done {
            return Ok(());
        }
    }
    Err(tonic::Status::aborted("download stream ended early"))
}
