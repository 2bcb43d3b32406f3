//! Who called the local API, and file work done with that caller's rights.
//!
//! The daemon runs as root (or as a service user), but a local user who asks it for a download
//! must get no more out of it than their own rights: otherwise `pollen get URL -O /etc/...`
//! would let anyone in the socket's group write where only root may. So the caller is read
//! from the socket itself (`SO_PEERCRED`, which the kernel fills in and the caller cannot
//! forge), and every operation on the output path (the probe, creating the temporary file,
//! linking, renaming it into place, removing it after a failure) runs with the caller's
//! filesystem identity: a path the caller could not write is refused with the same
//! "Permission denied" that `cp` would give, and the file the caller gets is theirs.
//!
//! How: on Linux the filesystem identity (fsuid, fsgid and the supplementary groups) belongs
//! to a thread when it is set with the raw system calls (the C library's `setgroups` would
//! change every thread of the process). Each such operation runs on a short-lived thread of
//! its own that takes the caller's identity, does the work and ends, so no other thread of the
//! daemon ever acts as the caller, and nothing has to be switched back. A caller with the
//! daemon's own identity runs the work directly.
//!
//! Once the temporary file is open, bytes are written through its descriptor by any thread:
//! access was checked when it was opened, as for any file a process opens.

use std::io;

use tonic::transport::server::UdsConnectInfo;

use crate::error::DownloadError;

/// A local API caller's filesystem identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, as the calling process had them.
    pub groups: Vec<u32>,
}

impl Caller {
    /// This daemon process's own identity (work it does for itself, and tests).
    pub fn daemon() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        }
    }

    /// The process at the other end of a local API connection, as the kernel recorded it.
    pub fn of_connection(info: Option<&UdsConnectInfo>) -> Result<Self, DownloadError> {
        let cred = info
            .and_then(|i| i.peer_cred)
            .ok_or_else(|| refused("the caller's credentials are not available on this socket"))?;
        let pid = cred
            .pid()
            .ok_or_else(|| refused("the caller's process id is not available on this socket"))?;
        let groups = supplementary_groups(pid)
            .map_err(|e| refused(&format!("cannot read the caller's groups: {e}")))?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        })
    }

    fn is_daemon_itself(&self) -> bool {
        *self == Self::daemon()
    }

    /// Runs `work` with this caller's filesystem identity and returns what it returned.
    pub async fn run<T, F>(&self, work: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        if self.is_daemon_itself() {
            return tokio::task::spawn_blocking(work)
                .await
                .map_err(|_| io::Error::other("the daemon is shutting down"))?;
        }
        let me = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("pollen-as-caller".into())
            .spawn(move || {
                let r = me.become_on_this_thread().and_then(|()| work());
                let _ = tx.send(r);
            })?;
        rx.await
            .map_err(|_| io::Error::other("the caller's file operation did not finish"))?
    }

    /// Takes this caller's filesystem identity on the current thread only.
    #[allow(unsafe_code)] // The one unsafe block in Pollen; see SAFETY below.
    fn become_on_this_thread(&self) -> io::Result<()> {
        // SAFETY: raw system calls with plain integer arguments and a pointer to a live slice
        // of gid_t; they change only the calling thread's credentials (the thread ends after
        // its one job), unlike the C library's wrappers, which apply to every thread.
        unsafe {
            let groups: Vec<libc::gid_t> = self.groups.clone();
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                return Err(identity_error(self, io::Error::last_os_error()));
            }
            libc::syscall(libc::SYS_setfsgid, self.gid);
            libc::syscall(libc::SYS_setfsuid, self.uid);
            // setfs[ug]id return the previous id, whether or not they changed it; asking for
            // an invalid one returns the current one without changing it.
            let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
            let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
            if fsuid != self.uid || fsgid != self.gid {
                return Err(identity_error(
                    self,
                    io::Error::from(io::ErrorKind::PermissionDenied),
                ));
            }
        }
        Ok(())
    }
}

fn identity_error(c: &Caller, e: io::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the daemon cannot act as uid {} gid {} to write the output ({e}); it needs root (CAP_SETUID and CAP_SETGID), or run pollen get as the daemon's own user",
            c.uid, c.gid
        ),
    )
}

fn refused(why: &str) -> DownloadError {
    DownloadError::InvalidRequest(format!("local API: {why}"))
}

/// The `Groups:` line of `/proc/PID/status`.
fn supplementary_groups(pid: i32) -> io::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_groups(&status).ok_or_else(|| io::Error::other("no Groups line in /proc/PID/status"))
}

fn parse_groups(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    line.split_whitespace().map(|g| g.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_line_of_proc_status_parses() {
        let s = "Name:\tx\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 \nNgid:\t0\n";
        assert_eq!(parse_groups(s), Some(vec![4, 24, 27]));
        assert_eq!(parse_groups("Groups:\t\n"), Some(vec![]));
        assert_eq!(parse_groups("Groups:\tx\n"), None);
        assert_eq!(parse_groups("Name:\tx\n"), None);
    }

    #[tokio::test]
    async fn work_as_another_user_gets_that_users_rights_and_owns_what_it_creates() {
        if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::root()]) {
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let nobody = Caller {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        // Root's directory, 0755: nobody may not create files in it.
        let p = dir.path().join("denied");
        let e = nobody
            .run(move || std::fs::File::create(&p).map(|_| ()))
            .await
            .expect_err("nobody cannot write into root's directory");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(!dir.path().join("denied").exists());
        // A directory of nobody's own: the file is created, and is nobody's.
        let own = dir.path().join("own");
        std::fs::create_dir(&own).expect("mkdir");
        nix::unistd::chown(&own, Some(65534.into()), Some(65534.into())).expect("chown");
        let p = own.join("file");
        nobody
            .run(move || std::fs::File::create(&p).map(|_| ()))
            .await
            .expect("nobody writes its own directory");
        let m = std::fs::metadata(own.join("file")).expect("created");
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        // The daemon's own threads kept their identity.
        assert_eq!(Caller::daemon().uid, 0);
        std::fs::File::create(dir.path().join("still-root")).expect("root writes");
    }
}
