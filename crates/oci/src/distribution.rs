//! Just enough of the OCI distribution API to preheat an image: fetch its manifest (through
//! the registry's Basic or Bearer token auth), follow a multi-platform index to the platforms
//! wanted, and list the blobs a pull would fetch (configs and layers). Manifests fetched by
//! digest are checked against it; bodies are bounded before they are read.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use pollen_core::ContentDigest;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::platform::Platform;
use crate::reference::ImageReference;

/// Largest manifest or index read (the spec suggests registries accept at least 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;
/// Most manifests followed from one index.
const MAX_INDEX_ENTRIES: usize = 256;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach registry {registry}")]
    Http {
        /// The registry.
        registry: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("registry answered HTTP {status} for {url}")]
    Status {
        /// The status code.
        status: u16,
        /// The URL asked.
        url: String,
    },
    /// Authentication failed or needs credentials that were not given.
    #[error("registry authentication: {0}")]
    Auth(String),
    /// A manifest is too large, not JSON of the expected shape, or not what its digest says.
    #[error("manifest {what}: {reason}")]
    Manifest {
        /// Which manifest.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A URL the client was to ask is one it may not (an origin guard said why).
    #[error("{url} may not be asked: {reason}")]
    Refused {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No image in the index is for the platform asked for.
    #[error("no image for {wanted} in {reference} (it has: {available})")]
    Platform {
        /// The reference.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
}

/// Registry credentials, for Basic auth or to obtain a Bearer token.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One blob a pull fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Its digest (what the registry serves it under, and the swarm's task id).
    pub digest: ContentDigest,
    /// Its size in bytes, as the manifest says.
    pub size: u64,
    /// Its media type (a config or a layer type).
    pub media_type: String,
}

/// What an image reference resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The blobs, each once, in manifest order.
    pub blobs: Vec<Blob>,
    /// The platforms the blobs are for (empty for a single-platform image).
    pub platforms: Vec<Platform>,
}

/// A check every URL the registry client is about to ask passes first (an origin guard):
/// `Err` says why it may not be asked.
pub type UrlCheck = std::sync::Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A registry's API endpoint and how to authenticate to it.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    /// `scheme://host[:port]`.
    pub base: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that worked, once one was needed.
    pub authorization: Option<String>,
    check: Option<UrlCheck>,
}

/// One layer of an artifact (an ORAS or ModelPack manifest): a file the artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob.
    pub blob: Blob,
    /// Its `org.opencontainers.image.title` annotation (a file name), if it has one.
    pub title: Option<String>,
}

/// What an artifact's manifest lists.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest's own digest (what pins this version of the artifact).
    pub manifest_digest: ContentDigest,
    /// Its layers, in manifest order.
    pub layers: Vec<Layer>,
}

/// The annotation that names a layer's file.
const TITLE: &str = "org.opencontainers.image.title";

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// The parameters of a `WWW-Authenticate` challenge: its scheme and `key="value"` pairs.
fn parse_challenge(header: &str) -> Option<(String, BTreeMap<String, String>)> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            }
            None => after.split_at(after.find(',').unwrap_or(after.len())),
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some((scheme.to_ascii_lowercase(), params))
}

impl Registry {
    /// The registry `reference` names, over plain HTTP when `insecure`.
    pub fn for_reference(
        reference: &ImageReference,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> Result<Self, DistributionError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| DistributionError::Http {
                registry: reference.registry.clone(),
                source,
            })?;
        Ok(Self::with_client(
            reference,
            insecure,
            credentials,
            http,
            None,
        ))
    }

    /// The registry `reference` names, asked through `http`, every URL passing `check`
    /// before it is asked.
    pub fn with_client(
        reference: &ImageReference,
        insecure: bool,
        credentials: Option<Credentials>,
        http: reqwest::Client,
        check: Option<UrlCheck>,
    ) -> Self {
        let scheme = if insecure { "http" } else { "https" };
        Self {
            http,
            base: format!("{scheme}://{}", reference.api_host()),
            credentials,
            authorization: None,
            check,
        }
    }

    fn checked(&self, url: &str) -> Result<(), DistributionError> {
        match &self.check {
            Some(check) => check(url).map_err(|reason| DistributionError::Refused {
                url: url.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn http_error(&self, e: reqwest::Error) -> DistributionError {
        DistributionError::Http {
            registry: self.base.clone(),
            source: e,
        }
    }

    /// The headers a blob fetch must carry for this registry (name, value): the
    /// `Authorization` it granted while resolving, if any.
    pub fn blob_headers(&self) -> Vec<(String, String)> {
        self.authorization
            .iter()
            .map(|a| ("Authorization".to_string(), a.clone()))
            .collect()
    }

    /// The URL a blob of `repository` is fetched from.
    pub fn blob_url(&self, repository: &str, digest: &ContentDigest) -> String {
        format!("{}/v2/{repository}/blobs/{digest}", self.base)
    }

    /// Answers a challenge: Basic with the credentials, or a Bearer token from the realm.
    async fn authenticate(
        &mut self,
        challenge: &str,
        repository: &str,
    ) -> Result<(), DistributionError> {
        let (scheme, params) = parse_challenge(challenge).ok_or_else(|| {
            DistributionError::Auth(format!("unreadable challenge {challenge:?}"))
        })?;
        let basic = |c: &Credentials| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        match scheme.as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    DistributionError::Auth("the registry wants a user name and password".into())
                })?;
                self.authorization = Some(basic(c));
                Ok(())
            }
            "bearer" => {
                let realm = params.get("realm").ok_or_else(|| {
                    DistributionError::Auth("Bearer challenge without a realm".into())
                })?;
                let mut url = url::Url::parse(realm)
                    .map_err(|e| DistributionError::Auth(format!("token realm {realm:?}: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    let scope = params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{repository}:pull"));
                    q.append_pair("scope", &scope);
                }
                self.checked(url.as_str())?;
                let mut req = self.http.get(url);
                if let Some(c) = &self.credentials {
                    req = req.header(AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|e| self.http_error(e))?;
                if !resp.status().is_success() {
                    return Err(DistributionError::Auth(format!(
                        "the token service answered HTTP {}",
                        resp.status().as_u16()
                    )));
                }
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_bounded(resp, 64 << 10)
                    .await
                    .map_err(|e| self.http_error(e))?;
                let t: Token = serde_json::from_slice(&body)
                    .map_err(|e| DistributionError::Auth(format!("token answer: {e}")))?;
                let token = t.token.or(t.access_token).ok_or_else(|| {
                    DistributionError::Auth("the token answer holds no token".into())
                })?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(DistributionError::Auth(format!(
                "unsupported scheme {other:?}"
            ))),
        }
    }

    /// Fetches a manifest or index, authenticating once if the registry asks.
    async fn manifest(
        &mut self,
        repository: &str,
        reference: &str,
    ) -> Result<Vec<u8>, DistributionError> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        self.checked(&url)?;
        for attempt in 0..2 {
            let mut req = self.http.get(&url).header(ACCEPT, MANIFEST_TYPES);
            if let Some(a) = &self.authorization {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| self.http_error(e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.authenticate(&challenge, repository).await?;
                continue;
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(DistributionError::Auth(
                    "the registry refused the credentials".into(),
                ));
            }
            if !resp.status().is_success() {
                return Err(DistributionError::Status {
                    status: resp.status().as_u16(),
                    url,
                });
            }
            if resp
                .content_length()
                .is_some_and(|l| l > MAX_MANIFEST as u64)
            {
                return Err(DistributionError::Manifest {
                    what: reference.into(),
                    reason: format!("larger than {MAX_MANIFEST} bytes"),
                });
            }
            return read_bounded(resp, MAX_MANIFEST)
                .await
                .map_err(|e| self.http_error(e));
        }
        Err(DistributionError::Auth(
            "the registry refused the credentials".into(),
        ))
    }
}

/// Reads a body of at most `limit` bytes (more is cut off, and then fails to parse).
async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            break;
        }
    }
    Ok(out)
}

fn parse_manifest(
    what: &str,
    body: &[u8],
    digest: Option<&ContentDigest>,
) -> Result<Manifest, DistributionError> {
    let bad = |reason: String| DistributionError::Manifest {
        what: what.to_string(),
        reason,
    };
    if let Some(d) = digest {
        if ContentDigest::of(body) != *d {
            return Err(bad(format!("its bytes do not match {d}")));
        }
    }
    serde_json::from_slice(body).map_err(|e| bad(e.to_string()))
}

fn blob_of(what: &str, d: &Descriptor) -> Result<Blob, DistributionError> {
    let digest = d.digest.parse().map_err(|_| DistributionError::Manifest {
        what: what.to_string(),
        reason: format!("{:?} is not a sha256 digest", d.digest),
    })?;
    Ok(Blob {
        digest,
        size: d.size,
        media_type: d.media_type.clone(),
    })
}

/// The index entries to follow: those for `platform`, or every real platform (attestation
/// entries, `unknown/unknown`, are skipped).
fn pick<'a>(
    reference: &ImageReference,
    entries: &'a [Descriptor],
    platform: Option<&Platform>,
) -> Result<Vec<&'a Descriptor>, DistributionError> {
    let real = |d: &&Descriptor| d.platform.as_ref().is_none_or(|p| p.os != "unknown");
    let chosen: Vec<&Descriptor> = entries
        .iter()
        .filter(real)
        .filter(|d| match (platform, &d.platform) {
            (None, _) => true,
            (Some(want), Some(have)) => want.matches(have),
            (Some(_), None) => false,
        })
        .take(MAX_INDEX_ENTRIES)
        .collect();
    if chosen.is_empty() {
        let available: Vec<String> = entries
            .iter()
            .filter(real)
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        return Err(DistributionError::Platform {
            reference: reference.to_string(),
            wanted: platform.map_or("any platform".into(), |p| p.to_string()),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        });
    }
    Ok(chosen)
}

/// Resolves `reference` on `registry` to the blobs a pull fetches, for `platform` or, when
/// `None`, for every platform the image has.
pub async fn resolve(
    registry: &mut Registry,
    reference: &ImageReference,
    platform: Option<&Platform>,
) -> Result<Resolved, DistributionError> {
    let top = reference.manifest_reference();
    let body = registry.manifest(&reference.repository, &top).await?;
    let manifest = parse_manifest(&top, &body, reference.digest.as_ref())?;
    let mut images = Vec::new();
    let mut platforms = Vec::new();
    match &manifest.manifests {
        Some(entries) => {
            for entry in pick(reference, entries, platform)? {
                let digest: ContentDigest = blob_of(&top, entry)?.digest;
                let body = registry
                    .manifest(&reference.repository, &digest.to_string())
                    .await?;
                let child = parse_manifest(&entry.digest, &body, Some(&digest))?;
                if child.manifests.is_some() {
                    return Err(DistributionError::Manifest {
                        what: entry.digest.clone(),
                        reason: "an index inside an index".into(),
                    });
                }
                platforms.extend(entry.platform.clone());
                images.push((entry.digest.clone(), child));
            }
        }
        None => images.push((top.clone(), manifest)),
    }
    let mut blobs: Vec<Blob> = Vec::new();
    for (what, m) in &images {
        let config = m
            .config
            .as_ref()
            .ok_or_else(|| DistributionError::Manifest {
                what: what.clone(),
                reason: "no config".into(),
            })?;
        for d in std::iter::once(config).chain(m.layers.iter().flatten()) {
            let b = blob_of(what, d)?;
            if !blobs.iter().any(|x| x.digest == b.digest) {
                blobs.push(b);
            }
        }
    }
    Ok(Resolved { blobs, platforms })
}

/// Reads the manifest `reference` names as an artifact: its digest and its layers. An index
/// is refused (an artifact is one manifest; name one of the index's by digest).
pub async fn artifact(
    registry: &mut Registry,
    reference: &ImageReference,
) -> Result<Artifact, DistributionError> {
    let top = reference.manifest_reference();
    let body = registry.manifest(&reference.repository, &top).await?;
    let manifest = parse_manifest(&top, &body, reference.digest.as_ref())?;
    if manifest.manifests.is_some() {
        return Err(DistributionError::Manifest {
            what: top,
            reason: "an image index, not one artifact; name one of its manifests by digest".into(),
        });
    }
    let mut layers = Vec::new();
    for d in manifest.layers.iter().flatten() {
        layers.push(Layer {
            blob: blob_of(&top, d)?,
            title: d.annotations.as_ref().and_then(|a| a.get(TITLE)).cloned(),
        });
    }
    Ok(Artifact {
        manifest_digest: ContentDigest::of(&body),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_quoted_and_bare_values() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .expect("parsed");
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge("Basic realm=pollen-test").expect("parsed");
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "pollen-test"));
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    fn index() -> Vec<Descriptor> {
        let d = |os: &str, arch: &str| Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                arch: arch.into(),
                variant: None,
            }),
            annotations: None,
        };
        vec![
            d("linux", "amd64"),
            d("linux", "arm64"),
            d("unknown", "unknown"),
        ]
    }

    #[test]
    fn an_index_is_narrowed_to_the_platform_asked_for_and_attestations_are_skipped() {
        let r = ImageReference::parse("app").expect("ok");
        let entries = index();
        assert_eq!(pick(&r, &entries, None).expect("all").len(), 2);
        let arm: Platform = "linux/arm64".parse().expect("ok");
        let one = pick(&r, &entries, Some(&arm)).expect("arm");
        assert_eq!(one.len(), 1);
        let s390: Platform = "linux/s390x".parse().expect("ok");
        let e = pick(&r, &entries, Some(&s390)).expect_err("absent");
        assert!(e.to_string().contains("linux/amd64, linux/arm64"), "{e}");
    }

    #[test]
    fn a_manifest_that_is_not_its_digest_is_refused() {
        let body = br#"{"config":{"digest":"sha256:00","size":1}}"#;
        let wrong = ContentDigest::of(b"other");
        assert!(parse_manifest("m", body, Some(&wrong)).is_err());
        assert!(parse_manifest("m", body, Some(&ContentDigest::of(body))).is_ok());
        assert!(parse_manifest("m", b"not json", None).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_registry_keeps_the_client_error_as_its_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let reference = ImageReference::parse(&format!("127.0.0.1:{port}/a/b:v1")).expect("ref");
        let mut registry = Registry::for_reference(&reference, true, None).expect("client");
        let e = resolve(&mut registry, &reference, None)
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, DistributionError::Http { .. }), "{e:?}");
        let cause = std::error::Error::source(&e).expect("a cause");
        assert!(
            cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_connect()),
            "{cause:?}"
        );
        assert!(!e.to_string().contains(&cause.to_string()), "{e}");
    }
}
