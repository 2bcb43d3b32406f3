//! The `[tls]` table of a role's config: where its certificates are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The name every daemon's certificate carries, checked by the daemons that fetch from it.
pub const DEFAULT_PEER_NAME: &str = "pollen-peer";

/// Certificates for mutual TLS. With this table present, a role only talks to roles that
/// present a certificate signed by `ca_cert`, and presents its own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate (PEM); peers' certificates must chain to it.
    pub ca_cert: PathBuf,
    /// This role's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// This role's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Daemons only: the DNS name (subject alternative name) every daemon's certificate
    /// carries; a daemon checks it on each parent's certificate, since parents are reached
    /// by IP address. Default `pollen-peer` (what `pollen certs dev` puts in).
    #[serde(default = "default_peer_name")]
    pub peer_name: String,
}

fn default_peer_name() -> String {
    DEFAULT_PEER_NAME.to_string()
}

impl TlsConfig {
    /// The three files, with the default peer name.
    pub fn new(ca_cert: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self {
            ca_cert,
            cert,
            key,
            peer_name: default_peer_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_name_has_a_default_and_unknown_keys_are_refused() {
        let c: TlsConfig =
            toml::from_str("ca_cert = \"ca.pem\"\ncert = \"d.pem\"\nkey = \"d.key\"").expect("ok");
        assert_eq!(c.peer_name, DEFAULT_PEER_NAME);
        assert!(toml::from_str::<TlsConfig>("ca_cert = \"a\"\ncert = \"b\"").is_err());
        assert!(
            toml::from_str::<TlsConfig>("ca_cert = \"a\"\ncert = \"b\"\nkey = \"c\"\nx = 1")
                .is_err()
        );
    }
}
