//! Starting one `pollen` process and waiting for its ready line: shared by every process the
//! kit starts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a process may take to come up.
pub(crate) const STARTUP: Duration = Duration::from_secs(30);

/// The `--tls-*` flags that make a role use the CA `ca` and its own `(cert, key)`.
pub fn tls_flags(ca: &Path, (cert, key): &(PathBuf, PathBuf)) -> Vec<String> {
    [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_string(), path.to_string_lossy().into_owned()])
        .collect()
}

/// Starts `pollen scheduler --listen LISTEN` (log appended to DIR/scheduler.log) and waits
/// for its ready line; returns the process and the address it listens on.
pub(crate) async fn spawn_scheduler(
    bin: &Path,
    listen: &str,
    dir: &Path,
    certs: Option<&pollen_tls::DevCerts>,
) -> anyhow::Result<(Child, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["scheduler", "--listen", listen]);
    // The seed's join token (see `Cluster::start`).
    cmd.arg("--seed-join-tokens").arg(dir.join(SEED_TOKEN_FILE));
    if let Some(c) = certs {
        cmd.args(tls_flags(&c.ca_cert, &c.scheduler));
    }
    let (child, line) = launch(cmd, &dir.join("scheduler.log"), "the scheduler").await?;
    let addr = line
        .rsplit(' ')
        .next()
        .ok_or_else(|| anyhow!("unexpected scheduler output {line:?}"))?
        .to_string();
    Ok((child, addr))
}

/// The cluster's seed join token, in its directory.
pub(crate) const SEED_TOKEN_FILE: &str = "seed-join-token";

/// Spawns `cmd` with stderr appended to `log` and waits for the first line it prints (its
/// ready line); the rest of its output is drained in the background.
pub(crate) async fn launch(
    mut cmd: Command,
    log: &Path,
    name: &str,
) -> anyhow::Result<(Child, String)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let mut child = cmd
        .env("POLLEN_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(STARTUP, lines.next_line())
        .await
        .map_err(|_| anyhow!("{name} did not start within {STARTUP:?}"))??
        .ok_or_else(|| anyhow!("{name} exited at start; see {}", log.display()))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, line))
}
