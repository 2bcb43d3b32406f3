//! Certificate files turned into TLS configurations: a server side that demands a client
//! certificate signed by the cluster CA, a client side that presents this role's certificate
//! and trusts only that CA, and the same for tonic's gRPC channel.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("cannot use {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificates do not make a TLS configuration (e.g. the key does not match).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// One role's loaded certificates.
pub struct Material {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    peer_name: ServerName<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// A server configuration for an HTTPS port that browsers and API clients reach (no client
/// certificate asked for): the certificate chain and key in `cert` and `key` (PEM), HTTP/1.1.
pub fn https_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain = certs(cert, &cert_pem)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(config_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Material {
    /// Reads and checks the files `cfg` names.
    pub fn load(cfg: &TlsConfig) -> Result<Self, TlsError> {
        let ca_pem = read(&cfg.ca_cert)?;
        let cert_pem = read(&cfg.cert)?;
        let key_pem = read(&cfg.key)?;
        let mut roots = RootCertStore::empty();
        for ca in certs(&cfg.ca_cert, &ca_pem)? {
            roots.add(ca).map_err(|e| TlsError::Pem {
                path: cfg.ca_cert.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let chain = certs(&cfg.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: cfg.key.clone(),
            reason: format!("no usable private key: {e}"),
        })?;
        let peer_name = ServerName::try_from(cfg.peer_name.clone()).map_err(|e| {
            TlsError::Config(format!("peer_name {:?} is not a name: {e}", cfg.peer_name))
        })?;
        let material = Self {
            ca_pem,
            cert_pem,
            key_pem,
            roots: Arc::new(roots),
            chain,
            key,
            peer_name,
        };
        material.server_config(&[])?;
        material.client_config()?;
        Ok(material)
    }

    /// A server configuration that refuses clients without a certificate signed by the CA,
    /// offering the given ALPN protocols (`h2` for gRPC).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(config_error)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(config_error)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A client configuration that trusts only the CA and presents this role's certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(config_error)?;
        Ok(Arc::new(config))
    }

    /// The name checked on every parent's certificate.
    /// The host id this certificate is bound to (`urn:pollen:host:ID`), if it names one.
    pub fn host_id(&self) -> Option<String> {
        self.chain.first().and_then(crate::role::host_of)
    }

    /// The name every daemon's certificate carries and every parent is checked against.
    pub fn peer_name(&self) -> &ServerName<'static> {
        &self.peer_name
    }

    /// The same trust and identity for a tonic channel (the scheduler's name comes from its
    /// URL).
    pub fn tonic_client(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}
