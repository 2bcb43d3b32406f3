//! Image references: `[registry/]repository[:tag][@sha256:digest]`.
//!
//! Normalised as Docker does: without a registry, `docker.io`; a one-part repository on
//! `docker.io` gets `library/`; without tag or digest, the tag `latest`. The first part of
//! the name is a registry when it contains `.` or `:`, or is `localhost`.

use std::fmt;
use std::sync::OnceLock;

use pollen_core::ContentDigest;
use regex::Regex;

/// The registry of references that name none.
pub const DOCKER_HUB: &str = "docker.io";

/// Longest reference accepted, in bytes (a repository name is at most 255).
const MAX_REFERENCE: usize = 512;

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Empty, too long, or not shaped like a reference.
    #[error(
        "{0:?} is not an image reference (expected [registry/]repository[:tag][@sha256:digest])"
    )]
    Malformed(String),
    /// The registry part is not a host name with an optional port.
    #[error("{0:?} is not a registry host[:port]")]
    Registry(String),
    /// The repository name breaks the distribution spec's grammar (lower case, digits,
    /// separators; at most 255 bytes).
    #[error("{0:?} is not a valid repository name")]
    Repository(String),
    /// The tag breaks the grammar (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    #[error("{0:?} is not a valid tag")]
    Tag(String),
    /// The digest is not `sha256:` and 64 hex digits.
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
}

fn repository_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
        )
        .expect("static regex")
    })
}

fn registry_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$",
        )
        .expect("static regex")
    })
}

fn tag_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"))
}

/// Whether `name` is a repository name the distribution spec allows (at most 255 bytes).
pub fn is_repository_name(name: &str) -> bool {
    name.len() <= 255 && repository_pattern().is_match(name)
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// Registry host and optional port, e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository, e.g. `library/alpine`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Manifest digest; when given, it decides what is fetched (the tag is informative).
    pub digest: Option<ContentDigest>,
}

impl ImageReference {
    /// Parses and normalises `text`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let malformed = || ReferenceError::Malformed(text.to_string());
        if text.is_empty() || text.len() > MAX_REFERENCE || text.trim() != text {
            return Err(malformed());
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                let digest = d
                    .parse::<ContentDigest>()
                    .ok()
                    .filter(|_| d.starts_with("sha256:") && d.trim() == d)
                    .ok_or_else(|| ReferenceError::Digest(d.to_string()))?;
                (r, Some(digest))
            }
            None => (text, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !tag_pattern().is_match(t) {
                return Err(ReferenceError::Tag(t.to_string()));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !registry_pattern().is_match(first) {
                    return Err(ReferenceError::Registry(first.to_string()));
                }
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if repository.is_empty() {
            return Err(malformed());
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !is_repository_name(&repository) {
            return Err(ReferenceError::Repository(repository));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when known, else the tag.
    /// Whether the registry is on this machine (`localhost`, `127.0.0.1`, `[::1]`), which is
    /// reached over plain HTTP as Docker does.
    pub fn is_loopback_registry(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h);
        matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }

    /// What goes after `/manifests/` for this image: its digest when it has one, else its tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The host serving the registry API (`docker.io`'s is `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl std::str::FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ImageReference {
    /// The full normalised form, e.g. `docker.io/library/alpine:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(s: &str) -> String {
        ImageReference::parse(s).expect(s).to_string()
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn references_are_normalised_as_docker_does() {
        assert_eq!(parsed("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(parsed("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(parsed("org/app"), "docker.io/org/app:latest");
        assert_eq!(parsed("ghcr.io/org/app:v1"), "ghcr.io/org/app:v1");
        assert_eq!(parsed("localhost/app"), "localhost/app:latest");
        assert_eq!(parsed("localhost:5000/a/b:1.0"), "localhost:5000/a/b:1.0");
        assert_eq!(
            parsed(&format!("app@{D}")),
            format!("docker.io/library/app@{D}")
        );
        assert_eq!(
            parsed(&format!("reg.io:443/app:v2@{D}")),
            format!("reg.io:443/app:v2@{D}")
        );
        let r = ImageReference::parse("localhost:5000/x").expect("ok");
        assert_eq!(
            (r.registry.as_str(), r.manifest_reference()),
            ("localhost:5000", "latest".into())
        );
        assert_eq!(
            ImageReference::parse("alpine").expect("ok").api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let e = |s: &str| ImageReference::parse(s).expect_err(s);
        assert!(matches!(e(""), ReferenceError::Malformed(_)));
        assert!(matches!(e(" alpine"), ReferenceError::Malformed(_)));
        assert!(matches!(e("Alpine"), ReferenceError::Repository(_)));
        assert!(matches!(e("alpine:"), ReferenceError::Tag(_)));
        assert!(matches!(e("alpine:-x"), ReferenceError::Tag(_)));
        assert!(matches!(e("alpine@sha256:abc"), ReferenceError::Digest(_)));
        assert!(matches!(e("alpine@md5:00"), ReferenceError::Digest(_)));
        assert!(matches!(
            e("bad_host.io:x/app"),
            ReferenceError::Registry(_)
        ));
        assert!(matches!(e("reg.io/"), ReferenceError::Malformed(_)));
        assert!(matches!(e("a//b"), ReferenceError::Repository(_)));
        assert!(matches!(e(&"a".repeat(600)), ReferenceError::Malformed(_)));
        assert!(!is_repository_name(&"a".repeat(256)));
    }

    proptest! {
        #[test]
        fn valid_references_round_trip(
            registry in prop_oneof![Just(String::new()), "[a-z]{1,8}\\.[a-z]{2,3}(:[0-9]{2,4})?/"],
            parts in prop::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", 1..4),
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}"),
            digest in prop::option::of(any::<[u8; 32]>()),
        ) {
            let mut text = format!("{registry}{}", parts.join("/"));
            if let Some(t) = &tag { text.push(':'); text.push_str(t); }
            if let Some(d) = &digest { text.push('@'); text.push_str(&ContentDigest(*d).to_string()); }
            let r = ImageReference::parse(&text).expect("valid");
            prop_assert_eq!(ImageReference::parse(&r.to_string()).expect("canonical"), r.clone());
            prop_assert_eq!(r.tag.as_deref(), tag.as_deref().or(digest.map_or(Some("latest"), |_| None)));
        }

        #[test]
        fn anything_else_parses_or_is_refused_without_panicking(text in ".{0,80}") {
            if let Ok(r) = ImageReference::parse(&text) {
                prop_assert_eq!(ImageReference::parse(&r.to_string()).expect("canonical"), r);
            }
        }
    }
}
