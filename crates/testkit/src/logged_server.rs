//! A server program started for a test: listening on 127.0.0.1 and a free port, its output in
//! a log file (whose access lines count what it served), killed on drop.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::registry_kit::{free_port, wait_until};

/// A running server and its log.
pub(crate) struct LoggedServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
    _child: Child,
}

impl LoggedServer {
    /// Runs `program` with the arguments `args(port)` gives for a free port, logging to
    /// `dir/LOG_NAME`, and waits until the port accepts connections.
    pub async fn start(
        program: &str,
        args: impl FnOnce(u16) -> Vec<String>,
        dir: &Path,
        log_name: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let log = dir.join(log_name);
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(program)
            .args(args(port))
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let addr = format!("127.0.0.1:{port}");
        wait_until(program, || async {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await?;
        Ok(Self {
            addr,
            log,
            _child: child,
        })
    }

    /// Lines of the log so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}
