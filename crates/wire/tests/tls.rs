//! Mutual TLS on the data plane: a client with a certificate from the cluster CA gets
//! pieces intact; a client without one, with one from another CA, or expecting another
//! name gets nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pollen_core::{Bitfield, PieceDigest, RateLimiter, TaskId, SLICE_LENGTH};
use pollen_tls::{make_dev_certs, Material};
use pollen_wire::{
    ClientTls, PieceClient, PieceProvider, PieceResponse, ServedSlice, UploadServer, UploadStats,
};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_util::sync::CancellationToken;

// Slices of the full length, the largest a client accepts.
const PIECE: usize = SLICE_LENGTH as usize;
const PIECES: u32 = 3;

struct OneFile {
    file: Arc<std::fs::File>,
}

impl PieceProvider for OneFile {
    fn bitfield(&self, _task: &TaskId) -> Option<Bitfield> {
        let mut b = Bitfield::new(PIECES);
        (0..PIECES).for_each(|n| b.set(n));
        Some(b)
    }

    fn slice(&self, _task: &TaskId, number: u32) -> Option<ServedSlice> {
        (number < PIECES).then(|| ServedSlice {
            file: self.file.clone(),
            offset: u64::from(number) * PIECE as u64,
            length: PIECE as u32,
            piece: number,
            hashes: Some(vec![PieceDigest::of(b"").0].into()),
        })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    data: Vec<u8>,
    addr: std::net::SocketAddr,
    stats: Arc<UploadStats>,
    stop: CancellationToken,
    ours: Material,
    /// Certificates of another cluster's CA.
    theirs: pollen_tls::DevCerts,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let ours = make_dev_certs(&dir.path().join("ours"), &[]).expect("certs");
    let theirs = make_dev_certs(&dir.path().join("theirs"), &[]).expect("certs");
    let ours = Material::load(&ours.daemon_config()).expect("load");
    let data: Vec<u8> = (0..PIECE * PIECES as usize)
        .map(|i| (i % 251) as u8)
        .collect();
    let path = dir.path().join("content");
    std::fs::write(&path, &data).expect("write");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(UploadStats::default());
    let server = UploadServer::new(
        listener,
        Arc::new(OneFile {
            file: Arc::new(std::fs::File::open(&path).expect("open")),
        }),
        RateLimiter::new(None),
        stats.clone(),
        8,
    )
    .with_tls(ours.server_config(&[]).expect("server config"));
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    Setup {
        _dir: dir,
        data,
        addr,
        stats,
        stop,
        ours,
        theirs,
    }
}

/// Asks for the bitfield and every piece; the bytes received, or the first error.
async fn fetch_all(s: &Setup, tls: Option<&ClientTls>) -> Result<Vec<u8>, String> {
    let mut c = PieceClient::connect_with(s.addr, Duration::from_secs(5), tls)
        .await
        .map_err(|e| e.to_string())?;
    let task = TaskId([3; 32]);
    c.request_bitfield(task).await.map_err(|e| e.to_string())?;
    match c.next_response().await.map_err(|e| e.to_string())? {
        PieceResponse::Bitfield(b) => assert_eq!(b.count(), PIECES),
        other => return Err(format!("expected a bitfield, got {other:?}")),
    }
    let mut got = Vec::new();
    for n in 0..PIECES {
        c.request_slice(task, n).await.map_err(|e| e.to_string())?;
    }
    for n in 0..PIECES {
        match c.next_response().await.map_err(|e| e.to_string())? {
            PieceResponse::Slice { header: h, .. } => assert_eq!(h.slice, n),
            other => return Err(format!("expected piece {n}, got {other:?}")),
        }
        let mut buf = vec![0u8; PIECE];
        c.read_payload(&mut buf).await.map_err(|e| e.to_string())?;
        got.extend_from_slice(&buf);
    }
    Ok(got)
}

fn peer_name() -> ServerName<'static> {
    ServerName::try_from("pollen-peer").expect("name")
}

#[tokio::test]
async fn a_client_with_a_cluster_certificate_gets_every_piece_intact() {
    let s = setup().await;
    let tls = ClientTls::new(s.ours.client_config().expect("client"), peer_name());
    let got = fetch_all(&s, Some(&tls)).await.expect("fetched over TLS");
    assert!(got == s.data, "the bytes received differ from the file");
    assert_eq!(
        s.stats.bytes.load(Ordering::Relaxed),
        s.data.len() as u64,
        "every piece byte is counted once"
    );
    s.stop.cancel();
}

/// A client that trusts the cluster's CA (so it never gives up on the server's certificate
/// itself) and shows `cert`, a (chain, key) pair of PEM files, or no certificate.
fn trusting_client(
    s: &Setup,
    cert: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> ClientTls {
    let ca_pem = std::fs::read(s._dir.path().join("ours/ca.pem")).expect("ca");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(c.expect("pem")).expect("root");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(chain)
                    .expect("chain")
                    .map(|c| c.expect("pem"))
                    .collect(),
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
    };
    ClientTls::new(Arc::new(config), peer_name())
}

/// Waits until the server has counted `n` refused connections (it counts after the client
/// may already have seen its error).
async fn refusals_reach(s: &Setup, n: u64) {
    for _ in 0..500 {
        if s.stats.protocol_errors.load(Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the server counted {} refused connections, not {n}",
        s.stats.protocol_errors.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn clients_without_a_cluster_certificate_get_nothing() {
    let s = setup().await;
    // Each outsider trusts the cluster's CA or speaks no TLS at all, so the refusal can only
    // come from the server; each one adds exactly one refused connection to its count.
    let plain = fetch_all(&s, None).await;
    assert!(plain.is_err(), "a plain client was served");
    refusals_reach(&s, 1).await;

    let rogue = trusting_client(&s, Some(&s.theirs.daemon));
    let e = fetch_all(&s, Some(&rogue))
        .await
        .map(|b| b.len())
        .expect_err("a client with another CA's certificate was served");
    refusals_reach(&s, 2).await;

    let anonymous = trusting_client(&s, None);
    let e2 = fetch_all(&s, Some(&anonymous))
        .await
        .map(|b| b.len())
        .expect_err("a client without a certificate was served");
    refusals_reach(&s, 3).await;

    assert_eq!(
        s.stats.protocol_errors.load(Ordering::Relaxed),
        3,
        "one refusal per outsider ({e}; {e2})"
    );
    assert_eq!(
        s.stats.bytes.load(Ordering::Relaxed),
        0,
        "piece bytes were sent"
    );
    // The same trusting client with a certificate from the cluster's CA is served: what
    // refused the others was their certificate, not the client's set-up.
    let ours = s._dir.path().join("ours");
    let member = trusting_client(
        &s,
        Some(&(ours.join("daemon.pem"), ours.join("daemon.key"))),
    );
    let got = fetch_all(&s, Some(&member))
        .await
        .expect("a member is served");
    assert!(got == s.data);
    s.stop.cancel();
}

#[tokio::test]
async fn a_parent_whose_certificate_lacks_the_peer_name_is_refused() {
    let s = setup().await;
    let name = ServerName::try_from("someone-else").expect("name");
    let tls = ClientTls::new(s.ours.client_config().expect("client"), name);
    let e = fetch_all(&s, Some(&tls))
        .await
        .map(|b| b.len())
        .expect_err("name checked");
    assert!(e.contains("certificate"), "{e}");
    s.stop.cancel();
}
