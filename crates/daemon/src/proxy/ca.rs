//! The proxy's certificate authority: signs a certificate for each intercepted host, so a
//! client that trusts this CA (`pollen ca export`) accepts the proxy in the middle of its TLS.
//!
//! The CA is the operator's (`ca_cert`/`ca_key`) or one Pollen generates on first start under
//! `<data_dir>/proxy/` (key readable by its owner only). Host certificates share one key pair
//! made at start, are valid for a year from yesterday, and are cached per host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

use crate::config::DaemonConfig;

/// Why the CA could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Only one of `ca_cert` and `ca_key` is set.
    #[error("proxy.ca_cert and proxy.ca_key must be given together")]
    Incomplete,
    /// A certificate or key is not usable.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(what: &str) -> impl FnOnce(rcgen::Error) -> CaError + '_ {
    move |e| CaError::Invalid(format!("{what}: {e}"))
}

/// Where the CA comes from, per the config: the operator's files or the generated pair.
fn ca_paths(cfg: &DaemonConfig) -> Result<(PathBuf, PathBuf, bool), CaError> {
    match (&cfg.proxy.ca_cert, &cfg.proxy.ca_key) {
        (Some(c), Some(k)) => Ok((c.clone(), k.clone(), false)),
        (None, None) => {
            let dir = cfg.data_dir.join("proxy");
            Ok((dir.join("ca.pem"), dir.join("ca.key"), true))
        }
        _ => Err(CaError::Incomplete),
    }
}

/// The CA's certificate (PEM), without making one: `None` when Pollen owns the CA and the
/// daemon has not made it yet (where `cfg` says it would).
pub fn existing_cert(cfg: &DaemonConfig) -> Result<Option<(PathBuf, String)>, CaError> {
    let (cert_path, _, generated) = ca_paths(cfg)?;
    if generated && !cert_path.exists() {
        return Ok(None);
    }
    let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    Ok(Some((cert_path, cert)))
}

/// The CA's certificate and key (PEM), generating and storing them when Pollen owns the CA
/// and none exists yet.
pub(crate) fn load_or_create(cfg: &DaemonConfig) -> Result<(String, String), CaError> {
    let (cert_path, key_path, generated) = ca_paths(cfg)?;
    if generated && !cert_path.exists() {
        let (cert, key) = generate()?;
        let dir = cert_path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        pollen_tls::write_new(&key_path, &key, 0o600)?;
        std::fs::write(&cert_path, &cert).map_err(io(&cert_path))?;
        tracing::info!(cert = %cert_path.display(), "generated the proxy's CA; `pollen ca export` prints it for nodes to trust");
    }
    let cert = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let key = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    Ok((cert, key))
}

impl From<pollen_tls::TlsError> for CaError {
    fn from(e: pollen_tls::TlsError) -> Self {
        match e {
            pollen_tls::TlsError::Io { path, source } => CaError::Io { path, source },
            other => CaError::Invalid(other.to_string()),
        }
    }
}

fn generate() -> Result<(String, String), CaError> {
    let (_, key, cert) = pollen_tls::new_ca("Pollen proxy CA", 3650)?;
    Ok((cert, key.serialize_pem()))
}

/// Signs host certificates and keeps a TLS server config per host.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    host_key: KeyPair,
    configs: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

/// Host configs kept at most; the cache starts over beyond this.
const MAX_CACHED_HOSTS: usize = 4096;

impl Ca {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key_pem).map_err(invalid("the proxy CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(invalid("the proxy CA certificate"))?;
        let ca_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::Invalid(format!("the proxy CA certificate: {e}")))?;
        let host_key = KeyPair::generate().map_err(invalid("generating the host key"))?;
        Ok(Self {
            issuer,
            ca_der,
            host_key,
            configs: Mutex::new(HashMap::new()),
        })
    }

    /// A TLS server config presenting a certificate for `host` (a name or an IP address).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let mut cache = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(host) {
            return Ok(c.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_string()])
            .map_err(invalid("a certificate for this host name"))?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params
            .signed_by(&self.host_key, &self.issuer)
            .map_err(invalid("signing a host certificate"))?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.host_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| CaError::Invalid(format!("host certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        if cache.len() >= MAX_CACHED_HOSTS {
            cache.clear();
        }
        cache.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_is_stored_once_and_signs_host_certificates() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = DaemonConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let (cert, key) = load_or_create(&cfg).expect("created");
        assert_eq!(
            load_or_create(&cfg).expect("loaded"),
            (cert.clone(), key.clone())
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("proxy/ca.key"))
                .expect("key")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the CA key is readable by others");
        let ca = Ca::new(&cert, &key).expect("ca");
        let a = ca.server_config("127.0.0.1").expect("ip host");
        ca.server_config("registry.example").expect("dns host");
        let again = ca.server_config("127.0.0.1").expect("cached");
        assert!(Arc::ptr_eq(&a, &again), "host configs are not cached");
        let half = DaemonConfig {
            proxy: crate::config::ProxyConfig {
                ca_cert: Some("x".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(load_or_create(&half), Err(CaError::Incomplete)));
    }

    #[test]
    fn an_unreadable_ca_file_is_named_with_the_os_error_as_its_cause() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = DaemonConfig {
            data_dir: dir.path().to_path_buf(),
            proxy: crate::config::ProxyConfig {
                ca_cert: Some(dir.path().join("absent.pem")),
                ca_key: Some(dir.path().join("absent.key")),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = load_or_create(&cfg).expect_err("no such files");
        assert!(e.to_string().contains("absent"), "{e}");
        let cause = std::error::Error::source(&e).expect("the OS error");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|io| io.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
