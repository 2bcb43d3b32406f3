//! The client end of a gRPC link between roles (daemon to scheduler, daemon and scheduler to
//! manager). The URL's scheme and the `[tls]` table must agree: a role with certificates
//! never talks in the clear, and one without them is stopped at start with a message that
//! says what to give it, instead of retrying a link that can never come up.

use tonic::transport::{ClientTlsConfig, Endpoint};

/// Why a link to another role cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The URL does not parse.
    #[error("invalid {role} URL {url:?}: {reason}")]
    Url {
        /// What the URL points at ("scheduler", "manager").
        role: &'static str,
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificates are set but the URL is `http://`.
    #[error("with [tls] set, the {role} URL must start with https:// (got {url:?})")]
    PlainUrl {
        /// What the URL points at.
        role: &'static str,
        /// The URL given.
        url: String,
    },
    /// The URL is `https://` but no certificates are set.
    #[error(
        "{role} URL {url:?} is https:// but [tls] is not set: give this role the cluster's \
         ca_cert, cert and key (--tls-ca, --tls-cert, --tls-key)"
    )]
    NoCertificates {
        /// What the URL points at.
        role: &'static str,
        /// The URL given.
        url: String,
    },
}

/// An endpoint for `url` (the `role` it points at names it in errors), over mutual TLS with
/// `tls` when the URL is `https://`.
pub fn grpc_endpoint(
    role: &'static str,
    url: &str,
    tls: Option<ClientTlsConfig>,
) -> Result<Endpoint, LinkError> {
    let bad = |reason: String| LinkError::Url {
        role,
        url: url.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
    let https = match endpoint.uri().scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad("the scheme must be http:// or https://".into())),
    };
    match (tls, https) {
        (Some(tls), true) => endpoint.tls_config(tls).map_err(|e| bad(e.to_string())),
        (Some(_), false) => Err(LinkError::PlainUrl {
            role,
            url: url.to_string(),
        }),
        (None, true) => Err(LinkError::NoCertificates {
            role,
            url: url.to_string(),
        }),
        (None, false) => Ok(endpoint),
    }
}

/// `msg` as a request carrying `token` (if any) in the join-token metadata
/// ([`pollen_core::join::METADATA`]), for a call that claims a role.
pub fn with_join_token<T>(
    msg: T,
    token: Option<&pollen_core::join::JoinToken>,
) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = token.and_then(|t| t.secret().parse().ok()) {
        req.metadata_mut().insert(pollen_core::join::METADATA, v);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_and_the_certificates_must_agree() {
        let tls = || Some(ClientTlsConfig::new());
        assert!(grpc_endpoint("manager", "http://127.0.0.1:1", None).is_ok());
        assert!(grpc_endpoint("manager", "https://127.0.0.1:1", tls()).is_ok());
        let e = grpc_endpoint("manager", "https://127.0.0.1:1", None).expect_err("no certs");
        assert!(e.to_string().contains("[tls] is not set"), "{e}");
        let e = grpc_endpoint("scheduler", "http://127.0.0.1:1", tls()).expect_err("plain");
        assert!(e.to_string().contains("must start with https://"), "{e}");
        let e = grpc_endpoint("manager", "ftp://x:1", None).expect_err("scheme");
        assert!(e.to_string().contains("invalid manager URL"), "{e}");
        assert!(grpc_endpoint("manager", "not a url", None).is_err());
    }
}
