//! A throwaway CA and certificates for a test cluster (`pollen certs dev`): one certificate
//! for the manager, one for schedulers and one shared by every daemon, each valid as a TLS
//! server and client.
//! For production, issue certificates from your own PKI with the same names.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::config::{TlsConfig, DEFAULT_PEER_NAME};
use crate::material::TlsError;
use crate::role::{Role, HOST_URI_PREFIX};

/// How long the generated certificates are valid.
const VALID_DAYS: i64 = 90;

/// The files `make_dev_certs` wrote.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// The CA certificate every role trusts.
    pub ca_cert: PathBuf,
    /// The CA's key (kept to sign more certificates by hand; no role needs it).
    pub ca_key: PathBuf,
    /// Manager certificate and key.
    pub manager: (PathBuf, PathBuf),
    /// Scheduler certificate and key.
    pub scheduler: (PathBuf, PathBuf),
    /// Daemon certificate and key (shared by every ordinary daemon of the test cluster).
    pub daemon: (PathBuf, PathBuf),
    /// Seed daemon certificate and key: the daemon's names plus the seed role.
    pub seed: (PathBuf, PathBuf),
}

impl DevCerts {
    /// The `[tls]` table for the manager.
    pub fn manager_config(&self) -> TlsConfig {
        TlsConfig::new(
            self.ca_cert.clone(),
            self.manager.0.clone(),
            self.manager.1.clone(),
        )
    }

    /// The `[tls]` table for a scheduler.
    pub fn scheduler_config(&self) -> TlsConfig {
        TlsConfig::new(
            self.ca_cert.clone(),
            self.scheduler.0.clone(),
            self.scheduler.1.clone(),
        )
    }

    /// The `[tls]` table for a seed daemon.
    pub fn seed_config(&self) -> TlsConfig {
        TlsConfig::new(
            self.ca_cert.clone(),
            self.seed.0.clone(),
            self.seed.1.clone(),
        )
    }

    /// The `[tls]` table for a daemon.
    pub fn daemon_config(&self) -> TlsConfig {
        TlsConfig::new(
            self.ca_cert.clone(),
            self.daemon.0.clone(),
            self.daemon.1.clone(),
        )
    }
}

fn failed(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Config(format!("{what}: {e}"))
}

/// Valid from yesterday (clock skew) for `days`.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// A new self-signed CA, allowed to sign leaf certificates only, valid for `days`: its
/// parameters (for an [`Issuer`]), its key, and its certificate as PEM.
pub fn new_ca(
    common_name: &str,
    days: i64,
) -> Result<(CertificateParams, KeyPair, String), TlsError> {
    let key = KeyPair::generate().map_err(failed("generating the CA key"))?;
    let mut ca = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Pollen");
    ca.distinguished_name = name;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, days);
    let cert = ca.self_signed(&key).map_err(failed("signing the CA"))?;
    Ok((ca, key, cert.pem()))
}

/// Writes `text` to a new file with permissions `mode` (0o600 for a private key); an
/// existing file is an error, never overwritten.
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// Writes a new CA and certificates for the manager, schedulers and daemons into `dir`
/// (created if missing; existing files are never overwritten). Every certificate names
/// `localhost`, `127.0.0.1`, `::1` and every entry of `hosts` (names or IP addresses, e.g.
/// the scheduler's); the daemon's also names `pollen-peer`, which daemons check on parents.
pub fn make_dev_certs(dir: &Path, hosts: &[String]) -> Result<DevCerts, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (ca, ca_key, ca_pem) = new_ca("Pollen dev CA", VALID_DAYS)?;
    let files = DevCerts {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        manager: (dir.join("manager.pem"), dir.join("manager.key")),
        scheduler: (dir.join("scheduler.pem"), dir.join("scheduler.key")),
        daemon: (dir.join("daemon.pem"), dir.join("daemon.key")),
        seed: (dir.join("seed.pem"), dir.join("seed.key")),
    };
    write_new(&files.ca_key, &ca_key.serialize_pem(), 0o600)?;
    write_new(&files.ca_cert, &ca_pem, 0o644)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(hosts.iter().cloned());
    for (role, paths, extra, roles) in [
        ("manager", &files.manager, None, &[Role::Manager][..]),
        ("scheduler", &files.scheduler, None, &[Role::Scheduler][..]),
        (
            "daemon",
            &files.daemon,
            Some(DEFAULT_PEER_NAME),
            &[Role::Peer][..],
        ),
        (
            "seed",
            &files.seed,
            Some(DEFAULT_PEER_NAME),
            &[Role::Peer, Role::Seed][..],
        ),
    ] {
        let mut sans = names.clone();
        sans.extend(extra.map(str::to_string));
        issue_leaf(&issuer, &format!("pollen {role}"), sans, roles, None, paths)?;
    }
    Ok(files)
}

/// Signs a certificate for `sans` (names and addresses) carrying `roles` and, if given, the
/// host id it is bound to, valid as a TLS server and client; writes it and its new key to
/// `paths` (certificate, key), never over existing files.
fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    sans: Vec<String>,
    roles: &[Role],
    host_id: Option<&str>,
    (cert_path, key_path): &(PathBuf, PathBuf),
) -> Result<(), TlsError> {
    let mut params = CertificateParams::new(sans).map_err(failed("a host name"))?;
    let uris = roles
        .iter()
        .map(|r| r.uri())
        .chain(host_id.map(|h| format!("{HOST_URI_PREFIX}{h}")));
    for uri in uris {
        let uri = rcgen::string::Ia5String::try_from(uri).map_err(failed("a role or host URI"))?;
        params.subject_alt_names.push(rcgen::SanType::URI(uri));
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, VALID_DAYS);
    let key = KeyPair::generate().map_err(failed("generating a key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(failed("signing a certificate"))?;
    write_new(key_path, &key.serialize_pem(), 0o600)?;
    write_new(cert_path, &cert.pem(), 0o644)
}

/// What [`issue_host_cert`] makes.
#[derive(Clone, Debug)]
pub struct HostCert<'a> {
    /// The one host this certificate is for (`urn:pollen:host:HOST_ID`): the daemon holding it
    /// takes it as its host id, and nobody else can speak for that host over TLS.
    pub host_id: &'a str,
    /// The roles it carries (a daemon: `Peer`; a seed: `Peer` and `Seed`).
    pub roles: &'a [Role],
    /// Names and addresses it is valid for, besides `pollen-peer` for daemons.
    pub names: &'a [String],
}

/// Signs a certificate bound to one host with an existing CA (`ca_cert`, `ca_key`, PEM
/// files, such as those of `pollen certs dev`), valid 90 days; writes `out.pem` and
/// `out.key` (never over existing files) and returns their paths.
pub fn issue_host_cert(
    ca_cert: &Path,
    ca_key: &Path,
    cert: &HostCert<'_>,
    out: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    if !crate::role::valid_host_id(cert.host_id) {
        return Err(TlsError::Config(format!(
            "host id {:?} must be 1 to 255 visible ASCII characters",
            cert.host_id
        )));
    }
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| TlsError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let key = KeyPair::from_pem(&read(ca_key)?).map_err(failed("reading the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&read(ca_cert)?, key)
        .map_err(failed("reading the CA certificate"))?;
    let mut sans = cert.names.to_vec();
    if cert.roles.contains(&Role::Peer) {
        sans.push(DEFAULT_PEER_NAME.to_string());
    }
    let with_ext = |ext: &str| {
        let mut p = out.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let paths = (with_ext(".pem"), with_ext(".key"));
    issue_leaf(
        &issuer,
        &format!("pollen host {}", cert.host_id),
        sans,
        cert.roles,
        Some(cert.host_id),
        &paths,
    )?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::Material;

    #[test]
    fn dev_certs_load_and_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tmp");
        let certs = make_dev_certs(dir.path(), &["10.0.0.7".into()]).expect("made");
        Material::load(&certs.manager_config()).expect("manager certs load");
        Material::load(&certs.scheduler_config()).expect("scheduler certs load");
        Material::load(&certs.daemon_config()).expect("daemon certs load");
        Material::load(&certs.seed_config()).expect("seed certs load");
        // Each certificate carries its role, and only its own.
        let roles = |path: &PathBuf| {
            let pem = std::fs::read(path).expect("cert");
            let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .expect("one cert")
                .expect("pem");
            crate::role::roles_of(&der)
        };
        use rustls::pki_types::pem::PemObject as _;
        assert!(roles(&certs.seed.0).has(Role::Seed) && roles(&certs.seed.0).has(Role::Peer));
        assert!(!roles(&certs.daemon.0).has(Role::Seed));
        assert!(roles(&certs.scheduler.0).has(Role::Scheduler));
        assert!(!roles(&certs.scheduler.0).has(Role::Manager));
        assert!(roles(&certs.manager.0).has(Role::Manager));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&certs.daemon.1)
                .expect("key")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "a private key is readable by others");
        let again = make_dev_certs(dir.path(), &[]).expect_err("files exist");
        assert!(again.to_string().contains("ca.key"), "{again}");
    }

    #[test]
    fn a_host_certificate_names_its_host_and_roles_and_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        let certs = make_dev_certs(&dir.path().join("ca"), &[]).expect("made");
        let out = dir.path().join("node-7");
        let (cert, key) = issue_host_cert(
            &certs.ca_cert,
            &certs.ca_key,
            &HostCert {
                host_id: "node-7",
                roles: &[Role::Peer, Role::Seed],
                names: &["127.0.0.1".to_string()],
            },
            &out,
        )
        .expect("issued");
        Material::load(&TlsConfig::new(certs.ca_cert.clone(), cert.clone(), key))
            .expect("it loads and chains to the CA");
        use rustls::pki_types::pem::PemObject as _;
        let der_of = |path: &PathBuf| {
            let pem = std::fs::read(path).expect("cert");
            rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .expect("one cert")
                .expect("pem")
        };
        let der = der_of(&cert);
        assert_eq!(crate::role::host_of(&der).as_deref(), Some("node-7"));
        let roles = crate::role::roles_of(&der);
        assert!(roles.has(Role::Seed) && roles.has(Role::Peer) && !roles.has(Role::Scheduler));
        let shared = der_of(&certs.daemon.0);
        assert_eq!(
            crate::role::host_of(&shared),
            None,
            "a shared certificate names no host"
        );
        let bad = HostCert {
            host_id: "two words",
            roles: &[Role::Peer],
            names: &[],
        };
        assert!(
            issue_host_cert(&certs.ca_cert, &certs.ca_key, &bad, &dir.path().join("x")).is_err()
        );
        let again = HostCert {
            host_id: "node-7",
            roles: &[Role::Peer],
            names: &[],
        };
        assert!(
            issue_host_cert(&certs.ca_cert, &certs.ca_key, &again, &out).is_err(),
            "never over an existing file"
        );
    }

    #[test]
    fn a_missing_or_empty_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let certs = make_dev_certs(dir.path(), &[]).expect("made");
        let mut cfg = certs.daemon_config();
        cfg.key = dir.path().join("absent.key");
        let e = Material::load(&cfg).err().expect("missing key");
        assert!(e.to_string().contains("absent.key"), "{e}");
        // The OS's reason is the cause, not repeated in the error's own text.
        let cause = std::error::Error::source(&e).expect("the OS error");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|io| io.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(!e.to_string().contains(&cause.to_string()), "{e}");
        std::fs::write(dir.path().join("empty.pem"), "").expect("write");
        cfg = certs.daemon_config();
        cfg.cert = dir.path().join("empty.pem");
        let e = Material::load(&cfg).err().expect("empty cert");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
