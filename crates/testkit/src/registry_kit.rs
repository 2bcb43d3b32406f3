//! Real container tooling for the mirror's tests and benchmarks: Debian's `docker-registry` as
//! origin (its access log counts what it served), images built with `umoci` and pushed with
//! `skopeo`, and a private `containerd` to pull with `ctr`.
//!
//! These need root and the Debian packages `.ci/run` installs; without them a test fails
//! saying what to install, unless the run asked to skip them by name ([`crate::tools`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::tools::Need;

/// Whether a test that needs `tools` (Debian packages named in [`package_of`]) and root runs
/// here: see [`crate::tools`].
pub fn tools_present(tools: &[&str]) -> bool {
    let mut needs: Vec<Need> = tools
        .iter()
        .map(|t| Need::program(t, package_of(t)))
        .collect();
    needs.push(Need::root());
    crate::tools::runs(&needs)
}

/// The Debian package that installs the program `tool`.
pub fn package_of(tool: &str) -> &str {
    match tool {
        "registry" | "docker-registry" => "docker-registry",
        "ctr" | "containerd" => "containerd",
        "htpasswd" => "apache2-utils",
        "ip" | "tc" => "iproute2",
        "setpriv" | "unshare" | "nsenter" => "util-linux",
        "chromedriver" => "chromium-driver",
        other => other,
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs a command to completion; its output, or an error carrying it.
pub async fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed:\n{text}");
    }
    Ok(text)
}

/// Waits until `ready` holds, at most 30 s.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        if Instant::now() > deadline {
            bail!("{what} did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A `docker-registry` process on 127.0.0.1 and a free port.
pub struct Registry {
    /// `127.0.0.1:PORT`, as image references name it.
    pub host: String,
    log: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry storing under `dir`; with `htpasswd`, it requires basic auth.
    pub async fn start(dir: &Path, htpasswd: Option<&Path>) -> anyhow::Result<Self> {
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: pollen-test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        Self::start_with_auth(dir, &auth).await
    }

    /// Starts a registry storing under `dir` with `auth`, the `auth:` section of its config
    /// (empty: anonymous; see [`crate::token_service::TokenService::registry_auth_config`]).
    pub async fn start_with_auth(dir: &Path, auth: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth}",
            dir.join("data").display()
        );
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, config)?;
        let log = dir.join("registry.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start docker-registry")?;
        wait_until("the registry", || async {
            tokio::net::TcpStream::connect(&host).await.is_ok()
        })
        .await?;
        Ok(Self { host, log, child })
    }

    /// Bytes of each blob (by digest) the registry sent in answers to GETs, from its access
    /// log (`"GET /v2/NAME/blobs/DIGEST HTTP/1.1" STATUS BYTES`).
    pub fn blob_bytes_served(&self) -> HashMap<String, u64> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = HashMap::new();
        for line in text.lines() {
            let Some(req) = line.split('"').nth(1) else {
                continue;
            };
            let mut parts = req.split(' ');
            let (Some("GET"), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some((_, digest)) = path.split_once("/blobs/") else {
                continue;
            };
            let digest = digest.split('?').next().unwrap_or(digest).to_string();
            let tail = line.split('"').nth(2).unwrap_or("");
            let mut nums = tail.split_whitespace();
            let status: u16 = nums.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let bytes: u64 = nums.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if (200..300).contains(&status) {
                *out.entry(digest).or_insert(0) += bytes;
            }
        }
        out
    }

    /// Requests in the access log with `method` whose path contains `path_part`.
    pub fn requests_logged(&self, method: &str, path_part: &str) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter(|req| {
                let mut parts = req.split(' ');
                parts.next() == Some(method) && parts.next().is_some_and(|p| p.contains(path_part))
            })
            .count()
    }

    /// Stops the registry.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// An OCI image layout at `dir/oci` with tag `v1`: `layers` layers of `layer_bytes` random
/// bytes each (plus a config).
pub async fn build_image(dir: &Path, layers: usize, layer_bytes: usize) -> anyhow::Result<PathBuf> {
    let layout = dir.join("oci");
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))
    .await?;
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image])).await?;
    for i in 0..layers {
        let payload = dir.join(format!("payload{i}"));
        let data_dir = payload.join(format!("data{i}"));
        std::fs::create_dir_all(&data_dir)?;
        std::fs::write(
            data_dir.join("blob"),
            crate::origin::random_data(layer_bytes),
        )?;
        run(Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&payload)
            .arg("/"))
        .await?;
        std::fs::remove_dir_all(&payload)?;
    }
    run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/sh"]))
        .await?;
    Ok(layout)
}

/// Pushes `oci:LAYOUT:v1` to `docker://HOST/REPO:v1`.
pub async fn push(
    layout: &Path,
    host: &str,
    repo: &str,
    creds: Option<&str>,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{host}/{repo}:v1"));
    run(&mut cmd).await.map(drop)
}

/// The digests of every blob an OCI layout holds (manifest, config, layers), from file names.
pub fn layout_blobs(layout: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Layer and config digests of `layout`'s `v1` manifest (what a pull fetches as blobs).
pub fn image_blobs(layout: &Path) -> anyhow::Result<Vec<String>> {
    let json = |p: PathBuf| -> anyhow::Result<serde_json::Value> {
        let bytes = std::fs::read(&p).with_context(|| p.display().to_string())?;
        Ok(serde_json::from_slice(&bytes)?)
    };
    let digest = |v: &serde_json::Value| -> anyhow::Result<String> {
        Ok(v["digest"].as_str().context("no digest")?.to_string())
    };
    let index = json(layout.join("index.json"))?;
    let manifest_digest = digest(&index["manifests"][0])?;
    let manifest = json(blob_path(layout, &manifest_digest))?;
    let mut v = vec![digest(&manifest["config"])?];
    for l in manifest["layers"].as_array().context("no layers")? {
        v.push(digest(l)?);
    }
    v.sort();
    Ok(v)
}

/// Where a layout keeps the blob `digest` (`sha256:HEX`).
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Total bytes of the blobs a pull of `layout`'s image fetches.
pub fn image_bytes(layout: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for b in image_blobs(layout)? {
        total += std::fs::metadata(blob_path(layout, &b))?.len();
    }
    Ok(total)
}

/// A private containerd (own root, state and socket; CRI off) for `ctr`.
pub struct Containerd {
    /// Its socket.
    pub socket: PathBuf,
    child: Child,
}

impl Containerd {
    /// Starts a private containerd (root, state and socket under `dir`).
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let d = dir.join("ctrd");
        std::fs::create_dir_all(&d)?;
        let socket = d.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n[debug]\n  address = \"{r}/debug.sock\"\n  level = \"info\"\n",
            r = d.display(),
            s = socket.display()
        );
        let cfg = d.join("config.toml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start containerd")?;
        wait_until("containerd", || async {
            tokio::net::UnixStream::connect(&socket).await.is_ok()
        })
        .await?;
        Ok(Self { socket, child })
    }

    /// `ctr images pull --hosts-dir HOSTS_DIR REF`.
    pub async fn pull(&self, hosts_dir: &Path, reference: &str) -> anyhow::Result<String> {
        self.pull_as(hosts_dir, reference, None).await
    }

    /// `ctr images pull --hosts-dir HOSTS_DIR [--user USER:PASSWORD] REF`.
    pub async fn pull_as(
        &self,
        hosts_dir: &Path,
        reference: &str,
        user: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a")
            .arg(&self.socket)
            .args(["images", "pull", "--hosts-dir"])
            .arg(hosts_dir);
        if let Some(u) = user {
            cmd.args(["--user", u]);
        }
        run(cmd.arg(reference)).await
    }

    /// Digests of the blobs in its content store.
    pub async fn content_digests(&self) -> anyhow::Result<Vec<String>> {
        let out = run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["content", "ls", "-q"]))
        .await?;
        let mut v: Vec<String> = out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| l.starts_with("sha256:"))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Stops containerd.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `skopeo copy` of `docker://REF` into an OCI layout at `dest`, with a registries.conf and
/// optionally an auth file (containers-auth.json).
pub async fn skopeo_pull(
    registries_conf: &Path,
    reference: &str,
    dest: &Path,
    authfile: Option<&Path>,
) -> anyhow::Result<()> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--registries-conf")
        .arg(registries_conf)
        .args(["copy", "--src-tls-verify=false"]);
    if let Some(a) = authfile {
        cmd.arg("--src-authfile").arg(a);
    }
    cmd.arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:v1", dest.display()));
    run(&mut cmd).await.map(drop)
}

/// Runs `BIN init RUNTIME` under `root`; returns its output.
pub async fn pollen_init(
    bin: &Path,
    runtime: &str,
    root: &Path,
    registry: &str,
    mirror: &str,
) -> anyhow::Result<String> {
    run(Command::new(bin)
        .args([
            "init",
            runtime,
            "--registry",
            registry,
            "--mirror",
            mirror,
            "--config-root",
        ])
        .arg(root))
    .await
}

/// Loopback TCP listeners refused (RST) by iptables until dropped. Each rule matches the
/// listener's address as well as its port: the same port number is often in use on another
/// 127.0.0.x address by a concurrent test, which must not be cut off.
pub struct BlockedPorts(Vec<SocketAddr>);

fn iptables(op: &str, addr: SocketAddr) -> bool {
    std::process::Command::new("iptables")
        .args([op, "INPUT", "-i", "lo", "-p", "tcp", "-d"])
        .arg(addr.ip().to_string())
        .arg("--dport")
        .arg(addr.port().to_string())
        .args(["-j", "REJECT", "--reject-with", "tcp-reset"])
        .status()
        .is_ok_and(|s| s.success())
}

impl BlockedPorts {
    /// Packets the blocking rules have rejected so far: the proof that something tried to
    /// reach a blocked port and was turned away.
    pub fn rejected_packets(&self) -> anyhow::Result<u64> {
        let out = std::process::Command::new("iptables")
            .args(["-L", "INPUT", "-v", "-n", "-x"])
            .output()
            .context("cannot run iptables -L")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut total = 0;
        for line in text.lines().filter(|l| l.contains("REJECT")) {
            let ours = self.0.iter().any(|a| {
                line.contains(&format!(" {} ", a.ip()))
                    && line.contains(&format!(" dpt:{} ", a.port()))
            });
            if ours {
                total += line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .with_context(|| format!("unexpected iptables line {line:?}"))?;
            }
        }
        Ok(total)
    }

    /// Rejects (TCP reset) every connection to `addrs` on loopback until dropped.
    pub fn block(addrs: &[SocketAddr]) -> anyhow::Result<Self> {
        let mut done = Self(Vec::new());
        for a in addrs {
            if !iptables("-I", *a) {
                bail!("iptables could not block {a}");
            }
            done.0.push(*a);
        }
        Ok(done)
    }
}

impl Drop for BlockedPorts {
    fn drop(&mut self) {
        for a in &self.0 {
            iptables("-D", *a);
        }
    }
}

/// An htpasswd file (bcrypt, as the registry requires) with one user.
pub async fn htpasswd(path: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    let out = run(Command::new("htpasswd").args(["-Bbn", user, password])).await?;
    let line = out.lines().next().context("htpasswd printed nothing")?;
    Ok(std::fs::write(path, format!("{line}\n"))?)
}

/// A containers-auth.json giving `user:password` for each of `hosts`. (containers/image looks
/// credentials up by the host it contacts, so a mirror needs its own entry, as on a real node.)
pub fn authfile(path: &Path, hosts: &[&str], user: &str, password: &str) -> anyhow::Result<()> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auths: serde_json::Map<String, serde_json::Value> = hosts
        .iter()
        .map(|h| (h.to_string(), serde_json::json!({ "auth": token })))
        .collect();
    Ok(std::fs::write(
        path,
        serde_json::json!({ "auths": auths }).to_string(),
    )?)
}
