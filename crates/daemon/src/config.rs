//! Daemon configuration: typed, with documented defaults, readable from TOML.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A cloud's bucket origin settings by key. Shown with their keys only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BucketOptions(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for BucketOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Hugging Face Hub origins (`hf://owner/repo[@revision]/path`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubOrigin {
    /// The hub's base URL (a mirror that speaks its API works too). Default: `HF_ENDPOINT`,
    /// else `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// A file holding the token for private and gated repositories (read at start). Default:
    /// the `HF_TOKEN` environment variable, else no token.
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for HubOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOrigin")
            .field("endpoint", &self.endpoint)
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// Everything a daemon needs to run. Every field has a default, so an empty TOML file works.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Scheduler gRPC URL (e.g. `http://127.0.0.1:8002`). None: always fetch from the origin.
    pub scheduler: Option<String>,
    /// Manager gRPC URL (e.g. `http://manager:65003`). With it, the manager says which
    /// schedulers to use (and `scheduler`, if set, serves only until it first answers).
    pub manager: Option<String>,
    /// Scheduler cluster to be placed in, whatever the manager's scopes say. Default 0: let
    /// the manager choose.
    pub scheduler_cluster_id: i64,
    /// For a seed peer: the seed-peer cluster it belongs to; the cluster's `load_limit`
    /// replaces `max_upload_connections`. Default 0: none.
    pub seed_peer_cluster_id: i64,
    /// Hostname reported to the manager (its clusters' hostname scopes match it). Default:
    /// the machine's.
    pub hostname: Option<String>,
    /// Where content files and the metadata store live. Default `/var/lib/pollen/daemon`.
    pub data_dir: PathBuf,
    /// Seed peer: the scheduler sends it to the origin for new tasks. Default false.
    pub seed: bool,
    /// Upload server address. Default `0.0.0.0:4100`.
    pub upload_listen: SocketAddr,
    /// IP other peers should connect to; default: the upload address, or the address the
    /// scheduler sees when that is unspecified.
    pub advertise_ip: Option<String>,
    /// Unix socket of the local API. Default `/run/pollen/daemon.sock`. Its directory is made
    /// 0750 and the socket 0660, both in `api_group`; an existing directory another user owns
    /// or may write is refused.
    pub api_socket: PathBuf,
    /// Group (name or id) whose members may use the local API (`pollen get`) besides root;
    /// outputs are written with each caller's own rights. Default `pollen`; a group that does
    /// not exist leaves the socket to the daemon's own user and group.
    pub api_group: String,
    /// Data centre of this host; the scheduler prefers parents in the same one. Default "".
    pub idc: String,
    /// Location as `region|zone|rack` (most general first); parents sharing a longer prefix
    /// are preferred. Default "".
    pub location: String,
    /// Upload limit in bytes per second; 0 is unlimited. Default 0.
    pub upload_rate_limit: u64,
    /// Download limit (peers and origin together) in bytes per second; 0 is unlimited.
    pub download_rate_limit: u64,
    /// Back-to-source limit in bytes per second; 0 is unlimited.
    pub back_to_source_rate_limit: u64,
    /// Download limit of each task (peers and origin together) in bytes per second, so one
    /// large download cannot take the whole `download_rate_limit`; 0 is unlimited. Default 0.
    pub task_download_rate_limit: u64,
    /// Limit in bytes per second on prefetch (downloads nobody waits for, such as the rest
    /// of a blob after a Range request); prefetch also waits while any foreground download
    /// runs. 0 is unlimited. Default 0.
    pub prefetch_rate_limit: u64,
    /// Most pieces fetched at once over every task (from parents and the origin); 0 is no
    /// cap. Default 0.
    pub max_concurrent_download_pieces: usize,
    /// Most pieces sent at once over every upload connection; 0 is no cap (each connection
    /// sends one piece at a time, so `max_upload_connections` bounds it). Default 0.
    pub max_concurrent_upload_pieces: usize,
    /// Most concurrent upload connections. Default 64.
    pub max_upload_connections: usize,
    /// TCP congestion control of the upload connections (Linux `TCP_CONGESTION`, e.g.
    /// "cubic"); empty keeps the system's default. Default empty. A host's uplink carries
    /// one or two connections per child; where the system's default is BBR (v1) and the
    /// uplink's bottleneck is a plain FIFO (no `fq`/`fq_codel` there), BBR shares it very
    /// unevenly and the starved children finish last, and "cubic" shares it evenly. But
    /// CUBIC collapses on a lossy link (20 % loss: 107 s against BBR's 8.5 s in
    /// `tests/resilience.rs`), so the system's choice stands unless set here
    /// (docs/benchmarks-history.md, "Upload congestion control"). A name the kernel refuses
    /// is logged and the default is used.
    pub upload_congestion_control: String,
    /// An upload connection that sends no complete request this long after opening is
    /// closed, so idle sockets (a flood) cannot hold the slots children need. Default 10s.
    #[serde(with = "pollen_core::duration::humane")]
    pub upload_first_request_timeout: Duration,
    /// An upload connection silent this long between requests is closed. Default 120s.
    #[serde(with = "pollen_core::duration::humane")]
    pub upload_idle_timeout: Duration,
    /// An upload connection whose peer takes no bytes this long while a frame or a slice
    /// waits to be sent is closed, so a reader that never reads cannot hold an upload slot.
    /// Waits on this daemon's own upload rate limit do not count. Default 60s.
    #[serde(with = "pollen_core::duration::humane")]
    pub upload_write_timeout: Duration,
    /// Most parents downloaded from at once per task. Default 16: a peer that joins early
    /// must be able to take later peers as parents too (they hold slices the seed gave
    /// them), and with `slices_in_flight` each extra parent costs one slice in flight.
    pub max_parents: usize,
    /// Slices (256 KiB each) one download keeps in flight, spread over its parents: each is
    /// asked for at most this many divided by the number of parents (at least one), and
    /// never more than `connections_per_parent` x `pipeline_depth`. With one or two parents
    /// each gets a deep pipeline (loopback and LAN speed); with many, one slice each, so no
    /// slice waits behind another at a busy parent while other parents sit idle. Default 8;
    /// 0 gives every parent its whole pipeline.
    pub slices_in_flight: usize,
    /// Slice requests (256 KiB each) kept in flight per parent connection. Default 2: enough
    /// to keep a connection busy without tying slices to a slow parent.
    pub pipeline_depth: usize,
    /// Data-plane connections opened to each ordinary parent (a seed parent always gets one).
    /// Default 2: on a fast LAN or loopback one connection cannot keep up with the disk.
    /// With many parents `slices_in_flight` leaves each one slice at a time anyway, which is
    /// what lets each slice arrive, and be passed on, soonest on slow links (see
    /// docs/benchmarks-history.md, "Spreading slices over the parents").
    pub connections_per_parent: usize,
    /// How long a download waits for a usable parent before going to the origin itself.
    /// Default 15s.
    #[serde(with = "pollen_core::duration::humane")]
    pub parent_wait: Duration,
    /// A parent that sends nothing for this long (a stopped process, a black-holed link) is
    /// given up and reported; its pieces come from elsewhere. Default 15s.
    #[serde(with = "pollen_core::duration::humane")]
    pub parent_stall_timeout: Duration,
    /// Hard-link finished downloads to their output path when it is on the data directory's
    /// filesystem, instead of copying them. Default false: the output is a copy (a
    /// copy-on-write clone where the filesystem makes `copy_file_range` one, as btrfs and XFS
    /// do), the user's own to edit. With true the output is the cached copy itself: an edit
    /// changes its size or modification time, and the cache then re-reads it before handing it
    /// out or serving it, and drops and fetches it again if it changed.
    pub output_hardlink: bool,
    /// Extra CA certificates (PEM files) trusted for HTTPS origins, beside the built-in web
    /// PKI roots. Default none.
    pub origin_ca_certs: Vec<PathBuf>,
    /// Addresses and CIDR networks the origin guard lets through whatever its rules say
    /// (e.g. `["127.0.0.1", "10.0.0.0/8"]`). The guard refuses, for every download, cloud
    /// metadata and link-local addresses (after DNS, and through redirects), and for a seed
    /// peer and every download the scheduler or the manager ordered also loopback,
    /// unspecified and this node's own addresses. Default none.
    pub origin_allow: Vec<String>,
    /// Directories whose files may be read as `file:///path` origins (symbolic links are
    /// resolved first, so a link cannot lead outside them). The daemon often runs with more
    /// rights than whoever gives it a URL: list only what may be shared. Default none
    /// (`file://` origins refused).
    pub origin_file_roots: Vec<PathBuf>,
    /// Settings of `s3://bucket/key` origins over the standard `AWS_*` environment: the
    /// `object_store` crate's S3 keys (`endpoint`, `region`, `access_key_id`,
    /// `secret_access_key`, `session_token`, `allow_http`, `virtual_hosted_style_request`, …).
    /// A seed fetches with its own; peers need none. Default none (the environment alone).
    pub origin_s3: BucketOptions,
    /// Settings of `gs://bucket/key` origins over the `GOOGLE_*` environment (the crate's GCS
    /// keys: `service_account_key`, `service_account`, `base_url`, `skip_signature`, …).
    /// Default none.
    pub origin_gcs: BucketOptions,
    /// Settings of `azblob://container/key` origins over the `AZURE_*` environment (the
    /// crate's Azure keys: `account_name`, `access_key`, `sas_token`, `endpoint`,
    /// `client_id`, …). Default none.
    pub origin_azure: BucketOptions,
    /// The Hugging Face Hub that `hf://` URLs are read from, and its token. A seed reads
    /// files with its own token; a daemon that lists a repository or resolves a revision
    /// (`pollen get hf://…`) asks the hub for metadata with its own.
    pub origin_hf: HubOrigin,
    /// An origin that sends nothing for this long (before its headers or between body bytes)
    /// is given up and the transfer retried from the first missing piece; a slow but steady
    /// origin is never cut off. Default 30s.
    #[serde(with = "pollen_core::duration::humane")]
    pub origin_read_timeout: Duration,
    /// Connect timeout for the scheduler, parents and origins. Default 3s.
    #[serde(with = "pollen_core::duration::humane")]
    pub connect_timeout: Duration,
    /// A seed's join token (a file holding it alone), shown to the manager and schedulers
    /// to be let in as a seed on a plain-TCP port: from the manager's `initial-join-token`
    /// or `POST /api/v1/join-tokens` with role `seed`. Not needed under mutual TLS with the
    /// seed role in the certificate, and never sent by a daemon that is not a seed. Default
    /// none.
    pub join_token_file: Option<PathBuf>,
    /// The join token itself, for a program that embeds a seed (wins over the file; never
    /// read from or written to a config file).
    #[serde(skip)]
    pub join_token: Option<pollen_core::join::JoinToken>,
    /// Mutual TLS with the scheduler and other daemons (`[tls]` table: `ca_cert`, `cert`,
    /// `key`, `peer_name`): the upload port then serves only daemons presenting a certificate
    /// signed by `ca_cert`, parents must present one carrying `peer_name`, and the scheduler
    /// URL must be `https://`. Default: off.
    pub tls: Option<pollen_tls::TlsConfig>,
    /// The registry mirror and HTTP(S) proxy (`[proxy]` table).
    pub proxy: ProxyConfig,
    /// Garbage collection of the cache (`[gc]` table).
    pub gc: GcConfig,
}

/// When cached tasks are evicted. A task being downloaded is never evicted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often the cache is checked; 0 turns collection off. Default 60s.
    #[serde(with = "pollen_core::duration::humane")]
    pub interval: Duration,
    /// Tasks unused for longer than this are evicted; 0 keeps them. Default 24h.
    #[serde(with = "pollen_core::duration::humane")]
    pub task_ttl: Duration,
    /// Most bytes of content the cache keeps (least recently used evicted first); 0 is no
    /// quota. Default 0.
    pub quota: u64,
    /// Percent of the data directory's filesystem in use above which tasks are evicted,
    /// least recently used first. Default 90.
    pub disk_high_watermark: u8,
    /// Eviction for disk space stops at this percent. Default 80.
    pub disk_low_watermark: u8,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            task_ttl: Duration::from_secs(24 * 3600),
            quota: 0,
            disk_high_watermark: 90,
            disk_low_watermark: 80,
        }
    }
}

/// The daemon's registry mirror and HTTP(S) proxy, one port for both.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address of the mirror and proxy; None turns both off. Default `127.0.0.1:4001`
    /// (loopback only: the proxy is not an open relay).
    pub listen: Option<SocketAddr>,
    /// Registry used for `/v2/` requests that name none (no `?ns=`, no `X-Pollen-Registry`),
    /// which is what Docker's `registry-mirrors` and a CRI-O/Podman mirror send.
    /// Default `https://registry-1.docker.io`.
    pub default_registry: String,
    /// Mirror listeners bound to one registry each: every `/v2/` request on one goes to its
    /// registry, the `/v2/` check included, so a client that names no registry in that check
    /// (CRI-O, Podman, skopeo, buildah) meets the right registry's auth challenge, and token
    /// scopes name the real repository. Written by `pollen init … --registry REG=ADDR`; see
    /// docs/OPERATIONS.md. Default none.
    pub registry_mirrors: Vec<RegistryMirror>,
    /// Registries reached over plain HTTP when a request names them by host only (`?ns=`),
    /// and by `oci://` origins: `host` (any port) or `host:port`. Default `localhost`, `127.0.0.1`, `::1`, as Docker
    /// does; every other registry is reached over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Most client connections served at once; more wait for a free slot. Default 1024.
    pub max_connections: usize,
    /// A client must send its request headers within this long. Default 30s.
    #[serde(with = "pollen_core::duration::humane")]
    pub header_read_timeout: Duration,
    /// A P2P blob that makes no progress for this long is served from the registry instead.
    /// Default 60s.
    #[serde(with = "pollen_core::duration::humane")]
    pub stall_timeout: Duration,
    /// On a Range request for a blob not held yet, also fetch the whole blob into the cache
    /// in the background. Default false.
    pub prefetch: bool,
    /// Which proxied URLs go through P2P; the first rule that matches decides, and a URL no
    /// rule matches is relayed untouched. Default none.
    pub rules: Vec<ProxyRule>,
    /// `CONNECT` targets (regexes over `host:port`) whose TLS the proxy terminates with its CA,
    /// so their URLs can meet the rules; every other target is tunnelled untouched.
    /// Default none.
    pub intercept_hosts: Vec<String>,
    /// Refuse (403) `CONNECT` to targets `intercept_hosts` does not match, instead of
    /// tunnelling them. Default false.
    pub refuse_other_connect: bool,
    /// CA certificate (PEM) that signs intercepted hosts' certificates; with `ca_key`. Default:
    /// one Pollen generates on first start under `<data_dir>/proxy/` (`pollen ca export`
    /// prints it, for the node to trust).
    pub ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM). Default: generated with the CA.
    pub ca_key: Option<PathBuf>,
}

/// A mirror listener bound to one registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryMirror {
    /// The registry: `scheme://host[:port]`, or `host[:port]` (https unless listed in
    /// `insecure_registries`); `docker.io` is Docker Hub.
    pub registry: String,
    /// Address the listener binds (port 0: any free port).
    pub listen: SocketAddr,
}

impl std::str::FromStr for RegistryMirror {
    type Err = String;

    /// `REGISTRY=ADDR`, as the `--registry-mirror` flag takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (registry, listen) = s.rsplit_once('=').ok_or_else(|| {
            format!(
                "{s:?}: expected REGISTRY=ADDRESS, e.g. http://registry.local:5000=127.0.0.1:4002"
            )
        })?;
        let listen = listen
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {listen:?} is not an address such as 127.0.0.1:4002"))?;
        let registry = registry.trim();
        if registry.is_empty() {
            return Err(format!("{s:?}: no registry before '='"));
        }
        Ok(Self {
            registry: registry.to_string(),
            listen,
        })
    }
}

/// One proxy rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyRule {
    /// Regex over the whole URL (`https://host:port/path?query`).
    pub regex: String,
    /// Relay matching URLs untouched instead of using P2P. Default false.
    pub direct: bool,
    /// Fetch a matching `http://` URL from the origin over https. Default false.
    pub use_tls: bool,
    /// Fetch matching URLs from this `host[:port]` instead of the one requested.
    pub redirect: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 4001))),
            default_registry: "https://registry-1.docker.io".into(),
            registry_mirrors: Vec::new(),
            insecure_registries: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            prefetch: false,
            rules: Vec::new(),
            intercept_hosts: Vec::new(),
            refuse_other_connect: false,
            ca_cert: None,
            ca_key: None,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            scheduler: None,
            manager: None,
            scheduler_cluster_id: 0,
            seed_peer_cluster_id: 0,
            hostname: None,
            data_dir: PathBuf::from("/var/lib/pollen/daemon"),
            seed: false,
            upload_listen: SocketAddr::from(([0, 0, 0, 0], 4100)),
            advertise_ip: None,
            api_socket: PathBuf::from("/run/pollen/daemon.sock"),
            api_group: "pollen".into(),
            idc: String::new(),
            location: String::new(),
            upload_rate_limit: 0,
            download_rate_limit: 0,
            back_to_source_rate_limit: 0,
            task_download_rate_limit: 0,
            prefetch_rate_limit: 0,
            max_concurrent_download_pieces: 0,
            max_concurrent_upload_pieces: 0,
            upload_congestion_control: String::new(),
            max_upload_connections: 64,
            upload_first_request_timeout: Duration::from_secs(10),
            upload_idle_timeout: Duration::from_secs(120),
            upload_write_timeout: Duration::from_secs(60),
            max_parents: 16,
            slices_in_flight: 8,
            pipeline_depth: 2,
            connections_per_parent: 2,
            parent_wait: Duration::from_secs(15),
            parent_stall_timeout: Duration::from_secs(15),
            output_hardlink: false,
            origin_ca_certs: Vec::new(),
            origin_allow: Vec::new(),
            origin_file_roots: Vec::new(),
            origin_s3: BucketOptions::default(),
            origin_gcs: BucketOptions::default(),
            origin_azure: BucketOptions::default(),
            origin_hf: HubOrigin::default(),
            origin_read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            join_token_file: None,
            join_token: None,
            tls: None,
            proxy: ProxyConfig::default(),
            gc: GcConfig::default(),
        }
    }
}

pub use pollen_core::duration::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_mirrors_load_from_toml_and_the_flag_form() {
        let cfg: DaemonConfig = toml::from_str(
            "[[proxy.registry_mirrors]]\nregistry = \"http://r:5000\"\nlisten = \"127.0.0.1:4002\"\n",
        )
        .expect("toml");
        let want = RegistryMirror {
            registry: "http://r:5000".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 4002)),
        };
        assert_eq!(cfg.proxy.registry_mirrors, vec![want.clone()]);
        assert_eq!("http://r:5000=127.0.0.1:4002".parse(), Ok(want));
        for bad in [
            "http://r:5000",
            "=127.0.0.1:1",
            "r=notanaddr",
            "r=127.0.0.1",
        ] {
            assert!(bad.parse::<RegistryMirror>().is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_with_human_durations_loads_and_unknown_keys_are_refused() {
        let c: DaemonConfig = toml::from_str("seed = true\nparent_wait = \"2s\"").expect("valid");
        assert!(c.seed);
        assert_eq!(c.parent_wait, Duration::from_secs(2));
        assert_eq!(c.max_upload_connections, 64);
        assert_eq!(c.connections_per_parent, 2);
        let c: DaemonConfig =
            toml::from_str("connections_per_parent = 1\npipeline_depth = 1").expect("valid");
        assert_eq!((c.connections_per_parent, c.pipeline_depth), (1, 1));
        assert!(toml::from_str::<DaemonConfig>("sed = true").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
