//! A registry token service, as the distribution token spec describes, for the mirror's
//! private-registry tests: Debian's `docker-registry` configured for token auth sends clients
//! here (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`); this service checks one
//! user's Basic credentials (GET) or OAuth password grant (POST) and issues a JWT signed with
//! an ES256 key whose certificate the registry trusts (`rootcertbundle`). A client without
//! credentials gets a token that grants nothing; wrong credentials get a 401.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rcgen::PublicKeyData as _;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The `service` the registry and its tokens name.
pub const SERVICE: &str = "pollen-test-registry";
/// The issuer the registry expects.
pub const ISSUER: &str = "pollen-test-token-service";
/// How long a token lasts, in seconds.
const TOKEN_TTL: u64 = 300;

/// A running token service; it stops when dropped.
pub struct TokenService {
    /// Where clients ask for tokens (`http://127.0.0.1:PORT/token`).
    pub realm: String,
    /// The certificate (PEM) of the signing key, for the registry's `rootcertbundle`.
    pub root_cert: PathBuf,
    /// Tokens issued that grant something (the right credentials were shown).
    pub granted: Arc<AtomicU64>,
    /// Requests refused for wrong credentials.
    pub refused: Arc<AtomicU64>,
    /// Every token that granted something, to look for where it must never be.
    pub tokens: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
    user: String,
    password: String,
    granted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tokens: Arc<Mutex<Vec<String>>>,
}

impl TokenService {
    /// Starts a token service on 127.0.0.1 that knows `user` with `password`; writes its
    /// certificate under `dir`.
    pub async fn start(dir: &Path, user: &str, password: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("token signing key")?;
        let cert = rcgen::CertificateParams::new(vec![ISSUER.to_string()])
            .context("token certificate")?
            .self_signed(&key)
            .context("token certificate")?;
        let root_cert = dir.join("token-root.pem");
        std::fs::write(&root_cert, cert.pem())?;
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("loading the token key: {e}"))?;
        let granted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let issuer = Arc::new(Issuer {
            key: signer,
            kid: libtrust_key_id(&key.subject_public_key_info()),
            user: user.into(),
            password: password.into(),
            granted: granted.clone(),
            refused: refused.clone(),
            tokens: tokens.clone(),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route("/token", axum::routing::any(token))
            .with_state(issuer);
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Ok(Self {
            realm: format!("http://{addr}/token"),
            root_cert,
            granted,
            refused,
            tokens,
            stop,
        })
    }

    /// The registry's `auth:` config section for this service.
    pub fn registry_auth_config(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.root_cert.display()
        )
    }
}

/// The key id libtrust (and so the registry) gives a public key: the first 240 bits of the
/// SHA-256 of its DER SubjectPublicKeyInfo, in base32, in groups of four joined by ':'.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let b32 = data_encoding::BASE32_NOPAD.encode(&digest[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// What a token request asked for and with which credentials.
#[derive(Default)]
struct Ask {
    scopes: Vec<String>,
    user: Option<(String, String)>,
}

fn parse_pairs(text: &str, ask: &mut Ask, form_user: &mut (Option<String>, Option<String>)) {
    for (k, v) in url::form_urlencoded::parse(text.as_bytes()) {
        match k.as_ref() {
            "scope" => ask
                .scopes
                .extend(v.split(' ').filter(|s| !s.is_empty()).map(String::from)),
            "username" => form_user.0 = Some(v.into_owned()),
            "password" => form_user.1 = Some(v.into_owned()),
            _ => {}
        }
    }
}

async fn read_ask(req: Request) -> Ask {
    let mut ask = Ask::default();
    let mut form_user = (None, None);
    if let Some(q) = req.uri().query() {
        parse_pairs(q, &mut ask, &mut form_user);
    }
    if let Some(basic) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
    {
        if let Some((u, p)) = basic.split_once(':') {
            ask.user = Some((u.into(), p.into()));
        }
    }
    if req.method() == axum::http::Method::POST {
        if let Ok(body) = axum::body::to_bytes(req.into_body(), 64 << 10).await {
            parse_pairs(&String::from_utf8_lossy(&body), &mut ask, &mut form_user);
        }
        if let (Some(u), Some(p)) = form_user {
            ask.user = Some((u, p));
        }
    }
    ask
}

async fn token(State(issuer): State<Arc<Issuer>>, req: Request) -> Response {
    let ask = read_ask(req).await;
    let subject = match &ask.user {
        Some((u, p)) if *u == issuer.user && *p == issuer.password => u.clone(),
        Some(_) => {
            issuer.refused.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::UNAUTHORIZED,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong credentials"}]}"#,
            )
                .into_response();
        }
        None => String::new(),
    };
    // The user may pull and push (the test pushes its image); nobody else gets anything.
    let access: Vec<serde_json::Value> = if subject.is_empty() {
        Vec::new()
    } else {
        ask.scopes
            .iter()
            .filter_map(|s| {
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let allowed: Vec<&str> = actions
                    .split(',')
                    .filter(|a| matches!(*a, "pull" | "push"))
                    .collect();
                (!allowed.is_empty())
                    .then(|| serde_json::json!({"type": kind, "name": name, "actions": allowed}))
            })
            .collect()
    };
    let grants = !access.is_empty();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + TOKEN_TTL,
        "nbf": now.saturating_sub(10),
        "iat": now,
        "jti": hex::encode(rand::random::<[u8; 12]>()),
        "access": access,
    });
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": issuer.kid});
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let Ok(sig) = issuer
        .key
        .sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes())
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response();
    };
    let jwt = format!("{signing_input}.{}", b64(sig.as_ref()));
    if grants {
        issuer.granted.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut t) = issuer.tokens.lock() {
            t.push(jwt.clone());
        }
    }
    let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": TOKEN_TTL});
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_twelve_groups_of_four() {
        let id = libtrust_key_id(b"any key");
        assert_eq!(id.len(), 12 * 4 + 11);
        assert!(id.split(':').all(|g| g.len() == 4));
    }
}
