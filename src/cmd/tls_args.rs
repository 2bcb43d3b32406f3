//! The `--tls-*` flags the manager, the scheduler and the daemon share, merged over a config's
//! `[tls]`.

use std::path::PathBuf;

use clap::Args;
use pollen_tls::TlsConfig;

/// Mutual TLS flags; each overrides the same key of the config's `[tls]` table.
#[derive(Args, Debug, Default)]
pub struct TlsArgs {
    /// Cluster CA certificate (PEM) for mutual TLS; with --tls-cert and --tls-key, only
    /// roles presenting a certificate it signed are let in (`pollen certs dev` makes a
    /// throwaway set).
    #[arg(long, env = "POLLEN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This role's certificate (PEM) for mutual TLS.
    #[arg(long, env = "POLLEN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This role's private key (PEM) for mutual TLS.
    #[arg(long, env = "POLLEN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The config's `[tls]` with the flags applied; the flags alone must name all three files.
    pub fn apply(&self, from_file: Option<TlsConfig>) -> anyhow::Result<Option<TlsConfig>> {
        let any = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        match (from_file, any) {
            (cfg, false) => Ok(cfg),
            (Some(mut cfg), true) => {
                if let Some(v) = &self.tls_ca {
                    cfg.ca_cert = v.clone();
                }
                if let Some(v) = &self.tls_cert {
                    cfg.cert = v.clone();
                }
                if let Some(v) = &self.tls_key {
                    cfg.key = v.clone();
                }
                Ok(Some(cfg))
            }
            (None, true) => match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
                (Some(ca), Some(cert), Some(key)) => {
                    Ok(Some(TlsConfig::new(ca.clone(), cert.clone(), key.clone())))
                }
                _ => anyhow::bail!("mutual TLS needs all of --tls-ca, --tls-cert and --tls-key"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_alone_must_be_complete() {
        let p = |s: &str| Some(PathBuf::from(s));
        let none = TlsArgs::default();
        assert_eq!(none.apply(None).expect("off"), None);
        let partial = TlsArgs {
            tls_ca: p("ca.pem"),
            ..Default::default()
        };
        assert!(partial.apply(None).is_err());
        let file = TlsConfig::new("a".into(), "b".into(), "c".into());
        let merged = partial.apply(Some(file)).expect("merged").expect("on");
        assert_eq!(merged.ca_cert, PathBuf::from("ca.pem"));
        assert_eq!(merged.key, PathBuf::from("c"));
        let full = TlsArgs {
            tls_ca: p("x"),
            tls_cert: p("y"),
            tls_key: p("z"),
        };
        assert_eq!(
            full.apply(None).expect("on").expect("on").cert,
            PathBuf::from("y")
        );
    }
}
