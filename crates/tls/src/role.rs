//! Roles bound to certificates: what a host may claim to be.
//!
//! Under mutual TLS any host holding a certificate from the cluster CA gets in; what it may
//! claim once in (to be a seed peer, whose reports of a task's facts count and who receives
//! trigger headers; to be a scheduler, who directs placement) is written in its certificate as
//! URI subject alternative names `urn:pollen:role:NAME`. A seed claim, a scheduler
//! registration or a manager session without the matching role is refused. A certificate
//! without any role URI is an ordinary peer's.
//!
//! `pollen certs dev` issues one certificate per role; a production PKI adds the same URIs.

use rustls::pki_types::CertificateDer;

/// The URI prefix of a role.
pub const ROLE_URI_PREFIX: &str = "urn:pollen:role:";

/// What a certificate lets its holder be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The control plane.
    Manager,
    /// A scheduler.
    Scheduler,
    /// A seed peer (reads origins for the fleet).
    Seed,
    /// An ordinary peer.
    Peer,
}

impl Role {
    /// The name in `urn:pollen:role:NAME`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Scheduler => "scheduler",
            Role::Seed => "seed",
            Role::Peer => "peer",
        }
    }

    /// The URI naming this role in a certificate.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }

    fn parse(name: &str) -> Option<Self> {
        [Role::Manager, Role::Scheduler, Role::Seed, Role::Peer]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// The roles a client proved with its certificate on one connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvenRoles(pub Vec<Role>);

impl ProvenRoles {
    /// Whether `role` is among them.
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }
}

/// The roles named in a certificate (DER); none when it names none or does not parse.
pub fn roles_of(cert: &CertificateDer<'_>) -> ProvenRoles {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else {
        return ProvenRoles::default();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return ProvenRoles::default();
    };
    ProvenRoles(
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX).and_then(Role::parse),
                _ => None,
            })
            .collect(),
    )
}
