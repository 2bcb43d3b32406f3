//! `pollen init containerd|docker|crio|podman`: points a container runtime at the local
//! daemon's registry mirror by writing (or merging into) the runtime's own config files.
//!
//! Idempotent: a file that already says what Pollen would write is left alone. A file that
//! changes is first copied to `<file>.pollen-backup`. `--dry-run` prints what would be written
//! and touches nothing. The command ends by saying what the operator must restart.

mod config_file;
mod containerd;
mod containers;
mod docker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use config_file::Change;

/// Which runtime to configure.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Runtime {
    /// containerd: one `hosts.toml` per registry under its certs.d directory.
    Containerd,
    /// Docker Engine: `registry-mirrors` in daemon.json (Docker Hub only).
    Docker,
    /// CRI-O: a drop-in under /etc/containers/registries.conf.d.
    Crio,
    /// Podman (and skopeo, buildah): the same drop-in as CRI-O.
    Podman,
}

/// `pollen init` flags.
#[derive(Args, Debug)]
pub struct InitArgs {
    /// The runtime to configure.
    #[arg(value_enum)]
    pub runtime: Runtime,
    /// Registries to mirror through Pollen: `host[:port]` (reached over https) or a URL such as
    /// `http://registry.local:5000`; repeatable [default: docker.io]. `REGISTRY=ADDRESS` sends
    /// that registry's pulls to the daemon's mirror listener bound to it (the daemon's
    /// `--registry-mirror REGISTRY=ADDRESS`) instead of `--mirror`: needed by CRI-O, Podman,
    /// skopeo and buildah for a registry that asks for credentials.
    #[arg(long = "registry", value_name = "REGISTRY[=ADDRESS]")]
    pub registries: Vec<String>,
    /// Address of the daemon's mirror (its `--proxy-listen`) [default: 127.0.0.1:4001].
    #[arg(long, default_value = "127.0.0.1:4001")]
    pub mirror: String,
    /// Directory the runtime's config lives under; the runtime's own defaults are used below
    /// it (e.g. `<root>/etc/containerd/certs.d`). For tests and image builds [default: /].
    #[arg(long, default_value = "/")]
    pub config_root: PathBuf,
    /// Print what would be written; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A registry as the operator named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Registry {
    /// `host[:port]` as it appears in image references.
    pub host: String,
    /// `scheme://host[:port]` the registry is reached at.
    pub url: String,
    /// `host:port` of the daemon's mirror listener bound to this registry, if it has one.
    pub own_mirror: Option<String>,
}

impl Registry {
    fn parse(s: &str) -> anyhow::Result<Self> {
        let (s, own_mirror) = match s.split_once('=') {
            Some((r, m)) => (r, Some(mirror_url(m)?)),
            None => (s, None),
        };
        let s = s.trim().trim_end_matches('/');
        let (scheme, host) = match s.split_once("://") {
            Some((sc, h)) if sc == "http" || sc == "https" => (sc, h),
            Some((sc, _)) => anyhow::bail!("registry {s:?}: use http:// or https://, not {sc}://"),
            None => ("https", s),
        };
        if host.is_empty()
            || host.contains('/')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            anyhow::bail!("registry {s:?} is not host[:port] or a URL without a path");
        }
        let url = if host == "docker.io" {
            "https://registry-1.docker.io".to_string()
        } else {
            format!("{scheme}://{host}")
        };
        Ok(Self {
            host: host.to_string(),
            url,
            own_mirror,
        })
    }

    /// The mirror this registry's pulls go to: its own listener, else the shared `mirror`.
    pub(crate) fn mirror<'a>(&'a self, shared: &'a str) -> &'a str {
        self.own_mirror.as_deref().unwrap_or(shared)
    }
}

fn mirror_url(mirror: &str) -> anyhow::Result<String> {
    let m = mirror.trim().trim_end_matches('/');
    let m = m.strip_prefix("http://").unwrap_or(m);
    if m.contains("://") || m.contains('/') || m.is_empty() {
        anyhow::bail!("--mirror {mirror:?}: give the daemon's proxy address as host:port");
    }
    Ok(m.to_string())
}

pub(crate) async fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let registries = if args.registries.is_empty() {
        vec![Registry::parse("docker.io")?]
    } else {
        args.registries
            .iter()
            .map(|r| Registry::parse(r))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mirror = mirror_url(&args.mirror)?;
    let files = match args.runtime {
        Runtime::Containerd => containerd::plan(&args.config_root, &registries, &mirror)?,
        Runtime::Docker => docker::plan(&args.config_root, &registries, &mirror)?,
        Runtime::Crio | Runtime::Podman => {
            containers::plan(&args.config_root, &registries, &mirror)?
        }
    };
    let mut changed = false;
    for f in &files {
        match f.apply(args.dry_run)? {
            Change::Unchanged => println!("{}: already configured", f.path.display()),
            Change::Written { backup } => {
                changed = true;
                let verb = if args.dry_run { "would write" } else { "wrote" };
                match backup {
                    Some(b) => println!(
                        "{verb} {} (previous version kept as {})",
                        f.path.display(),
                        b.display()
                    ),
                    None => println!("{verb} {}", f.path.display()),
                }
                if args.dry_run {
                    println!("--- {} ---\n{}", f.path.display(), f.content);
                }
            }
        }
    }
    let next = match args.runtime {
        Runtime::Containerd => containerd::NEXT_STEP,
        Runtime::Docker => docker::NEXT_STEP,
        Runtime::Crio => containers::NEXT_STEP_CRIO,
        Runtime::Podman => containers::NEXT_STEP_PODMAN,
    };
    if changed || args.dry_run {
        println!("{next}");
    }
    for r in registries.iter().filter(|r| r.own_mirror.is_some()) {
        println!(
            "The daemon must serve {}'s mirror: start it with --registry-mirror {}={} (or [[proxy.registry_mirrors]] in its config).",
            r.host,
            r.url,
            r.mirror(&mirror)
        );
        if matches!(args.runtime, Runtime::Crio | Runtime::Podman) {
            println!(
                "containers/image sends {}'s credentials to it only, never to a mirror: store them for the mirror too (podman login --tls-verify=false {}, or the same entry under that key in the auth file).",
                r.host,
                r.mirror(&mirror)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_parse_from_hosts_and_urls() {
        let r = Registry::parse("127.0.0.1:5000").expect("host");
        assert_eq!(r.url, "https://127.0.0.1:5000");
        let r = Registry::parse("http://127.0.0.1:5000/").expect("url");
        assert_eq!(
            (r.host.as_str(), r.url.as_str()),
            ("127.0.0.1:5000", "http://127.0.0.1:5000")
        );
        assert_eq!(
            Registry::parse("docker.io").expect("hub").url,
            "https://registry-1.docker.io"
        );
        assert!(Registry::parse("ftp://x").is_err());
        assert!(Registry::parse("http://x/path").is_err());
        assert!(Registry::parse("a b").is_err());
        let r = Registry::parse("http://127.0.0.1:5000=127.0.0.1:4002").expect("own mirror");
        assert_eq!(r.url, "http://127.0.0.1:5000");
        assert_eq!(r.mirror("127.0.0.1:4001"), "127.0.0.1:4002");
        assert_eq!(
            Registry::parse("docker.io").expect("hub").mirror("m:1"),
            "m:1"
        );
        assert!(Registry::parse("http://r=http://x/y").is_err());
        assert!(mirror_url("http://127.0.0.1:4001").is_ok());
        assert!(mirror_url("https://x/y").is_err());
    }
}
