//! Roles bound to certificates: what a host may claim to be.
//!
//! Under mutual TLS any host holding a certificate from the cluster CA gets in; what it may
//! claim once in (to be a seed peer, whose reports of a task's facts count and who receives
//! trigger headers; to be a scheduler, who directs placement) is written in its certificate as
//! URI subject alternative names `urn:pollen:role:NAME`. A seed claim, a scheduler
//! registration or a manager session without the matching role is refused. A certificate
//! without any role URI is an ordinary peer's.
//!
//! A certificate may also name the one host it was issued to, `urn:pollen:host:HOST_ID`
//! (`pollen certs issue --host-id`): a daemon holding it takes that host id, and a
//! scheduler or manager refuses a session, register or report for any other host id over
//! that connection, and, once a host id was proven so, refuses it over connections that do
//! not prove it.
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

/// The URI prefix naming the host a certificate was issued to (`urn:pollen:host:HOST_ID`).
pub const HOST_URI_PREFIX: &str = "urn:pollen:host:";

/// The URI subject alternative names of a certificate (DER); none when it does not parse.
fn san_uris(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect()
}

/// The roles named in a certificate (DER); none when it names none or does not parse.
pub fn roles_of(cert: &CertificateDer<'_>) -> ProvenRoles {
    ProvenRoles(
        san_uris(cert)
            .iter()
            .filter_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX).and_then(Role::parse))
            .collect(),
    )
}

/// Whether `id` may be a host id bound in a certificate: 1 to 255 visible ASCII characters.
pub fn valid_host_id(id: &str) -> bool {
    (1..=255).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The host id a certificate (DER) was issued to, if it names one (and only one).
pub fn host_of(cert: &CertificateDer<'_>) -> Option<String> {
    let mut hosts = san_uris(cert)
        .into_iter()
        .filter_map(|uri| uri.strip_prefix(HOST_URI_PREFIX).map(str::to_string));
    match (hosts.next(), hosts.next()) {
        (Some(h), None) if valid_host_id(&h) => Some(h),
        _ => None,
    }
}
