//! The local API's unix socket: where it lives and who may reach it.
//!
//! Whoever can connect can make the daemon download (with its network identity) and write
//! outputs (with the caller's own rights, see `caller`), so the socket must not be reachable
//! by every local user, and its place must not be one another user can take first:
//! - The directory is created 0750, owned by the daemon's user and the `api_group` group; a
//!   directory that already exists must belong to the daemon's user (or root) and must not be
//!   writable by others unless sticky (as `/tmp` is), or the daemon refuses to start: a local
//!   user who made `/tmp/pollen` before the daemon started would otherwise own its socket's
//!   place.
//! - The socket is 0660 in the `api_group` group: root and that group's members may use
//!   `pollen get`, nobody else.
//! - A group that does not exist leaves the socket to the daemon's own user and group.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::{Gid, Group};
use tokio::net::UnixListener;
use tracing::warn;

use crate::start_error::DaemonStartError;

/// Binds the socket at `path` for the members of `group` (a name or a numeric id).
pub(crate) async fn bind(path: &Path, group: &str) -> Result<UnixListener, DaemonStartError> {
    let gid = group_id(group)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir, gid)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(DaemonStartError::Config(format!(
                "another daemon is already listening on {}",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| {
            config_err(format!(
                "cannot remove the stale socket {}: {e}",
                path.display()
            ))
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        config_err(format!(
            "cannot bind the API socket {}: {e}",
            path.display()
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| chgrp(path, gid))
        .map_err(|e| config_err(format!("cannot set the API socket's mode: {e}")))?;
    Ok(listener)
}

/// The group's id; `None` when it does not exist (with a warning).
fn group_id(group: &str) -> Result<Option<Gid>, DaemonStartError> {
    if group.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = group.parse::<u32>() {
        return Ok(Some(Gid::from_raw(n)));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid)),
        Ok(None) => {
            warn!(%group, "api_group does not exist; only the daemon's own user and group can use the local API");
            Ok(None)
        }
        Err(e) => Err(config_err(format!("cannot look up group {group:?}: {e}"))),
    }
}

fn chgrp(path: &Path, gid: Option<Gid>) -> std::io::Result<()> {
    match gid {
        Some(g) => nix::unistd::chown(path, None, Some(g)).map_err(std::io::Error::from),
        None => Ok(()),
    }
}

fn prepare_dir(dir: &Path, gid: Option<Gid>) -> Result<(), DaemonStartError> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => check_existing_dir(dir, &m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| config_err(format!("cannot create {}: {e}", parent.display())))?;
            }
            std::fs::create_dir(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                })
                .and_then(|()| chgrp(dir, gid))
                .map_err(|e| config_err(format!("cannot create {}: {e}", dir.display())))
        }
        Err(e) => Err(config_err(format!("cannot read {}: {e}", dir.display()))),
    }
}

/// Refuses a directory another user could have planted or can write into.
fn check_existing_dir(dir: &Path, m: &std::fs::Metadata) -> Result<(), DaemonStartError> {
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_dir() {
        return Err(config_err(format!(
            "{} is not a directory (a symbolic link is refused too); choose another api_socket",
            dir.display()
        )));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(config_err(format!(
            "{} belongs to uid {}, not to this daemon's user (uid {me}) or root: another user may have made it to take the API socket's place; remove it or choose another api_socket",
            dir.display(),
            m.uid()
        )));
    }
    let sticky = m.mode() & 0o1000 != 0;
    if m.mode() & 0o022 != 0 && !sticky {
        return Err(config_err(format!(
            "{} is writable by other users (mode {:o}), who could replace the API socket; make it 0750 or choose another api_socket",
            dir.display(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

fn config_err(msg: String) -> DaemonStartError {
    DaemonStartError::Config(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_directory_is_0750_and_the_socket_0660() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("run").join("daemon.sock");
        let _l = bind(&sock, "").await.expect("binds");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&dir.path().join("run")), 0o750);
        assert_eq!(mode(&sock), 0o660);
    }

    #[tokio::test]
    async fn a_directory_others_can_write_or_own_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = bind(&open.join("d.sock"), "").await.expect_err("refused");
        assert!(e.to_string().contains("writable by other users"), "{e}");
        // Sticky, as /tmp is: others cannot remove or replace what is ours.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        bind(&open.join("d.sock"), "")
            .await
            .expect("sticky is fine");

        // Another owner needs root to make; without it that half is skipped by name.
        if pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::root()]) {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).expect("mkdir");
            nix::unistd::chown(&theirs, Some(65534.into()), None).expect("chown");
            let e = bind(&theirs.join("d.sock"), "").await.expect_err("refused");
            assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&open, &link).expect("symlink");
        let e = bind(&link.join("d.sock"), "").await.expect_err("refused");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
