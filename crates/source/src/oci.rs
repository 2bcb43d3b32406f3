//! The `oci://` origin: files kept in a container registry as an OCI artifact (pushed by ORAS,
//! a ModelPack model, any manifest whose layers are files).
//!
//! `oci://REGISTRY/REPOSITORY(:TAG|@sha256:…)[/FILE]`: FILE is a layer's title
//! (`org.opencontainers.image.title`) or its digest. A download of one file resolves the tag
//! to the manifest's digest once (so every peer reads the same version) and is
//! content-addressed by the layer's digest, which the registry publishes: the bytes are checked
//! against it before the output is written, and the task is the one a mirror pull of the same
//! blob shares. Listing the artifact gives each layer as a file (`pollen get --recursive`).
//!
//! The manifest is fetched with the registry's token flow (anonymous, as a public pull is);
//! every address asked, the token service's included, passes the origin guard first. Blobs are
//! read through the HTTP origin with the token the registry granted, following its redirects
//! (to a CDN) under the guard.

use async_trait::async_trait;
use pollen_oci::{Artifact, ImageReference, Registry};

use crate::error::SourceError;
use crate::http::ApiClients;
use crate::origin_guard::{OriginGuard, OriginPolicy};
use crate::source::{Listed, Listing, OriginResponse, ReadRequest, Resolved, Source};

/// The `oci://` origin's settings.
#[derive(Clone, Debug, Default)]
pub struct OciSettings {
    /// Registries reached over plain HTTP (`host` or `host:port`); every other over HTTPS.
    pub plain_http: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Read timeout.
    pub read_timeout: std::time::Duration,
    /// Extra trusted roots (PEM).
    pub extra_roots: Vec<Vec<u8>>,
}

/// An `oci://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OciPath {
    reference: ImageReference,
    /// A layer's title or digest; empty: the whole artifact.
    file: String,
}

impl OciPath {
    fn parse(url: &str) -> Result<Self, SourceError> {
        let bad = |reason: &str| {
            SourceError::Unsupported {
            url: url.to_string(),
            reason: format!(
                "{reason} (oci://REGISTRY/REPOSITORY:TAG[/FILE] or oci://REGISTRY/REPOSITORY@sha256:…[/FILE])"
            ),
        }
        };
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| bad("not an oci:// URL"))?;
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("no repository"))?;
        // The repository ends at the segment that carries its tag or digest; what follows is
        // the file. Without either, the whole path is the repository at `latest`.
        let segments: Vec<&str> = path.split('/').collect();
        let end = segments
            .iter()
            .position(|s| s.contains(':') || s.contains('@'))
            .unwrap_or(segments.len() - 1);
        let (repo, file) = segments.split_at(end + 1);
        let reference = ImageReference::parse(&format!("{registry}/{}", repo.join("/")))
            .map_err(|e| bad(&e.to_string()))?;
        if reference.registry != registry {
            return Err(bad("the registry must be named"));
        }
        let file = file.join("/");
        if file.split('/').any(|c| matches!(c, "." | "..")) {
            return Err(bad("a file name may not hold . or .."));
        }
        Ok(Self { reference, file })
    }

    /// The URL of `file` in the artifact pinned to `manifest`.
    fn pinned(&self, manifest: &pollen_core::ContentDigest, file: &str) -> String {
        let r = &self.reference;
        format!("oci://{}/{}@{manifest}/{file}", r.registry, r.repository)
    }
}

/// The `oci://` origin.
#[derive(Clone)]
pub struct OciSource {
    settings: OciSettings,
    guard: OriginGuard,
    clients: ApiClients,
}

impl std::fmt::Debug for OciSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSource")
            .field("plain_http", &self.settings.plain_http)
            .finish_non_exhaustive()
    }
}

impl OciSource {
    /// A registry reader with `settings`, connecting only where `guard` lets it.
    pub fn new(settings: OciSettings, guard: &OriginGuard) -> Result<Self, SourceError> {
        Ok(Self {
            clients: ApiClients::new(
                settings.connect_timeout,
                settings.read_timeout,
                &settings.extra_roots,
                guard,
            )?,
            guard: guard.clone(),
            settings,
        })
    }

    fn plain_http(&self, registry: &str) -> bool {
        let host = |s: &str| {
            s.rsplit_once(':')
                .filter(|(h, p)| !h.ends_with(':') && p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(s.to_string(), |(h, _)| h.to_string())
        };
        let (h, p) = (host(registry), registry);
        self.settings
            .plain_http
            .iter()
            .any(|e| e.eq_ignore_ascii_case(p) || (host(e) == *e && e.eq_ignore_ascii_case(&h)))
    }

    fn registry(&self, p: &OciPath, policy: OriginPolicy) -> Registry {
        let http = self.clients.api(policy).clone();
        let guard = self.guard.clone();
        let check: pollen_oci::UrlCheck = std::sync::Arc::new(move |url: &str| {
            let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
            guard.check_url(&parsed, policy).map_err(|r| r.to_string())
        });
        Registry::with_client(
            &p.reference,
            self.plain_http(&p.reference.registry),
            None,
            http,
            Some(check),
        )
    }

    /// The artifact's manifest, and the registry client holding the token it took.
    async fn artifact(
        &self,
        url: &str,
        p: &OciPath,
        policy: OriginPolicy,
    ) -> Result<(Artifact, Registry), SourceError> {
        let mut registry = self.registry(p, policy);
        let artifact = pollen_oci::artifact(&mut registry, &p.reference)
            .await
            .map_err(|e| oci_error(url, e))?;
        Ok((artifact, registry))
    }

    /// The layer `p.file` names in `artifact`.
    fn layer<'a>(
        url: &str,
        p: &OciPath,
        artifact: &'a Artifact,
    ) -> Result<&'a pollen_oci::Layer, SourceError> {
        let by_title: Vec<_> = artifact
            .layers
            .iter()
            .filter(|l| l.title.as_deref() == Some(p.file.as_str()))
            .collect();
        let found = match by_title[..] {
            [one] => Some(one),
            [] => artifact
                .layers
                .iter()
                .find(|l| l.blob.digest.to_string() == p.file),
            _ => {
                return Err(SourceError::Protocol(format!(
                    "{url}: {} layers are titled {:?}; name one by its digest",
                    by_title.len(),
                    p.file
                )))
            }
        };
        found.ok_or_else(|| SourceError::NotFound {
            url: url.to_string(),
            what: format!(
                "no layer titled {:?} or of that digest (it has: {})",
                p.file,
                artifact
                    .layers
                    .iter()
                    .map(|l| l.title.clone().unwrap_or_else(|| l.blob.digest.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

fn oci_error(url: &str, e: pollen_oci::DistributionError) -> SourceError {
    use pollen_oci::DistributionError as D;
    match e {
        D::Status { status, .. } => SourceError::Status {
            status,
            url: url.to_string(),
        },
        D::Refused { reason, .. } => SourceError::Refused(reason),
        D::Http { source, .. } => SourceError::Connect {
            url: url.to_string(),
            source: Box::new(source),
        },
        other => SourceError::Protocol(format!("{url}: {other}")),
    }
}

#[async_trait]
impl Source for OciSource {
    fn check(&self, url: &str, policy: OriginPolicy) -> Result<(), SourceError> {
        let p = OciPath::parse(url)?;
        if p.file.is_empty() {
            return Err(SourceError::Unsupported {
                url: url.to_string(),
                reason: "names an artifact, not one of its files (use --recursive for all of it)"
                    .into(),
            });
        }
        self.clients
            .http
            .check(&self.registry(&p, policy).base, policy)
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        self.check(req.url, req.policy)?;
        let p = OciPath::parse(req.url)?;
        let (artifact, registry) = self.artifact(req.url, &p, req.policy).await?;
        let layer = Self::layer(req.url, &p, &artifact)?;
        let blob = registry.blob_url(&p.reference.repository, &layer.blob.digest);
        let auth = registry.blob_headers();
        self.clients
            .http
            .read(ReadRequest {
                url: &blob,
                headers: &auth,
                ..req
            })
            .await
    }

    async fn list(
        &self,
        url: &str,
        policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let p = OciPath::parse(url)?;
        let (artifact, _) = self.artifact(url, &p, policy).await?;
        let mut listing = Listing::default();
        for l in &artifact.layers {
            let name = l
                .title
                .clone()
                .unwrap_or_else(|| l.blob.digest.to_string().replace(':', "-"));
            let below = if p.file.is_empty() {
                Some(name.as_str())
            } else {
                name.strip_prefix(&p.file).and_then(|r| r.strip_prefix('/'))
            };
            let Some(rel) = below.filter(|r| !r.is_empty()) else {
                continue;
            };
            if listing.objects.len() == limit {
                listing.truncated = true;
                break;
            }
            let file = l.title.clone().unwrap_or_else(|| l.blob.digest.to_string());
            listing.objects.push(Listed {
                url: p.pinned(&artifact.manifest_digest, &file),
                path: rel.to_string(),
                size: l.blob.size,
                version: Some(l.blob.digest.to_string()),
                digest: Some(l.blob.digest),
            });
        }
        Ok(listing)
    }

    async fn resolve(&self, url: &str, policy: OriginPolicy) -> Result<Resolved, SourceError> {
        self.check(url, policy)?;
        let p = OciPath::parse(url)?;
        let (artifact, _) = self.artifact(url, &p, policy).await?;
        let layer = Self::layer(url, &p, &artifact)?;
        Ok(Resolved {
            url: p.pinned(&artifact.manifest_digest, &p.file),
            digest: Some(layer.blob.digest),
            size: Some(layer.blob.size),
            private: false,
            version: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_urls_name_a_repository_a_version_and_a_file() {
        let p = OciPath::parse("oci://reg.example:5000/org/model:v1/weights/a.bin").expect("url");
        assert_eq!(p.reference.registry, "reg.example:5000");
        assert_eq!(p.reference.repository, "org/model");
        assert_eq!(p.reference.tag.as_deref(), Some("v1"));
        assert_eq!(p.file, "weights/a.bin");
        let d = format!("sha256:{}", "ab".repeat(32));
        let p = OciPath::parse(&format!("oci://127.0.0.1:5000/m@{d}/{d}")).expect("by digest");
        assert_eq!(p.reference.digest.map(|x| x.to_string()), Some(d.clone()));
        assert_eq!(p.file, d);
        assert_eq!(
            p.pinned(&p.reference.digest.expect("digest"), "x"),
            format!("oci://127.0.0.1:5000/m@{d}/x")
        );
        let p = OciPath::parse("oci://ghcr.io/org/artifact").expect("no tag: latest");
        assert_eq!(
            (p.reference.repository.as_str(), p.reference.tag.as_deref()),
            ("org/artifact", Some("latest"))
        );
        assert!(p.file.is_empty());
        for bad in [
            "oci://",
            "oci://reg.example",
            "oci://reg.example/Upper:v1",
            "oci://reg.example/m:v1/../x",
            "oci://reg.example/m@sha256:zz/x",
            "http://reg.example/m:v1/x",
        ] {
            assert!(OciPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_http_is_only_for_the_registries_listed() {
        let s = OciSource::new(
            OciSettings {
                plain_http: vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "reg.local:5000".into(),
                ],
                ..Default::default()
            },
            &OriginGuard::default(),
        )
        .expect("source");
        assert!(s.plain_http("127.0.0.1:5000"));
        assert!(s.plain_http("localhost"));
        assert!(s.plain_http("reg.local:5000"));
        assert!(!s.plain_http("reg.local:5001"));
        assert!(!s.plain_http("ghcr.io"));
    }
}
