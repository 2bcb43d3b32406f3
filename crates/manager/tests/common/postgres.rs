//! A throwaway PostgreSQL server for one test: `initdb` into a temporary directory, started
//! on a free loopback port with durability off (speed; the data dies with the test), stopped
//! with a fast shutdown when dropped. Uses Debian's packages (`postgresql`), which `.ci/run`
//! installs. As root, the server runs as the `postgres` user, as PostgreSQL requires.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
}

/// The newest installed server's bin directory.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

/// Runs as the `postgres` user when we are root.
fn as_server_user(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    if nix::unistd::geteuid().is_root() {
        if let Ok(Some(u)) = nix::unistd::User::from_name("postgres") {
            cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    /// Starts a server, or None when PostgreSQL is missing and the run asked to skip it
    /// (`POLLEN_SKIP_TOOLS=postgresql`; see `pollen_testkit::tools`).
    pub async fn start() -> Option<Self> {
        let bin = bin_dir();
        if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::condition(
            "postgresql",
            bin.is_some(),
            "apt-get install -y postgresql",
        )]) {
            return None;
        }
        let bin = bin?;
        let dir = tempfile::tempdir().expect("temp dir");
        if nix::unistd::geteuid().is_root() {
            let u = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user (Debian's postgresql package makes it)");
            nix::unistd::chown(dir.path(), Some(u.uid), Some(u.gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let mut init = Command::new(bin.join("initdb"));
        init.args([
            "-A",
            "trust",
            "-U",
            "pollen",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        as_server_user(&mut init);
        let out = init.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut server = Command::new(bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("server.log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        as_server_user(&mut server);
        let child = server.spawn().expect("postgres starts");
        let pg = Self {
            child,
            url: format!("postgres://pollen@127.0.0.1:{port}/postgres"),
            _dir: dir,
        };
        pg.wait_ready(&bin).await;
        Some(pg)
    }

    async fn wait_ready(&self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next());
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", port.unwrap_or("5432"), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it ends sessions and exits cleanly.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
