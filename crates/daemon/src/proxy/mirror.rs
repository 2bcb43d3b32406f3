//! The OCI distribution mirror (`/v2/…`): which registry a request is for, which requests are
//! relayed (the `/v2/` ping, manifests, tags, blob HEADs — never cached), and which go through
//! P2P (blob GETs by sha256 digest).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use pollen_core::ContentDigest;

use super::blob::{self, BlobRequest};
use super::body::{oci_error, Body};
use super::upstream::{control_header, forward_headers, registry_base, relay};
use super::ProxyState;

/// What a `/v2/` path asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/v2/`: the API version check (and where auth challenges start).
    Base,
    /// `/v2/NAME/blobs/DIGEST`.
    Blob { digest: &'a str },
    /// Manifests, tags, referrers, uploads: relayed.
    Other,
}

/// Why a `/v2/` path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RouteError {
    Name(String),
    Path(String),
}

/// Parses the path of a `/v2/` request.
pub(crate) fn route(path: &str) -> Result<Route<'_>, RouteError> {
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Route::Base),
        Some(r) => r
            .strip_prefix('/')
            .ok_or_else(|| RouteError::Path(path.into()))?,
        None => return Err(RouteError::Path(path.into())),
    };
    let (name, kind, tail) = ["blobs", "manifests", "tags", "referrers"]
        .iter()
        .filter_map(|k| {
            let marker = format!("/{k}/");
            rest.rfind(&marker)
                .map(|i| (&rest[..i], *k, &rest[i + marker.len()..]))
        })
        .max_by_key(|(name, _, _)| name.len())
        .ok_or_else(|| RouteError::Path(path.into()))?;
    if !pollen_oci::is_repository_name(name) {
        return Err(RouteError::Name(name.into()));
    }
    if tail.is_empty() {
        return Err(RouteError::Path(path.into()));
    }
    Ok(match kind {
        "blobs" if !tail.starts_with("uploads") => Route::Blob { digest: tail },
        _ => Route::Other,
    })
}

/// The query string without containerd's `ns` parameter (which is for the mirror only).
pub(crate) fn query_without_ns(q: Option<&str>) -> (Option<String>, String) {
    let Some(q) = q else {
        return (None, String::new());
    };
    let mut ns = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        if k == "ns" {
            ns = Some(v.into_owned());
        } else {
            rest.append_pair(&k, &v);
        }
    }
    let rest = rest.finish();
    (
        ns,
        if rest.is_empty() {
            rest
        } else {
            format!("?{rest}")
        },
    )
}

/// Namespace prefix that names the registry inside the repository path, for clients that can
/// neither send `?ns=` nor a header (CRI-O, Podman): `/v2/pollen-registry/SCHEME/HOST_PORT/…`,
/// the port after the last `_` (see `pollen init crio`).
const REGISTRY_PREFIX: &str = "/v2/pollen-registry/";

/// `(scheme://host[:port], /v2/REST)` when the path carries the registry.
pub(crate) fn registry_in_path(path: &str) -> Option<Result<(String, String), String>> {
    let rest = path.strip_prefix(REGISTRY_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let (scheme, host, tail) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    if !matches!(scheme, "http" | "https")
        || host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c))
    {
        return Some(Err(format!(
            "{REGISTRY_PREFIX}{scheme}/{host}: expected pollen-registry/http|https/HOST[_PORT]"
        )));
    }
    let host = match host.rsplit_once('_') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            format!("{h}:{p}")
        }
        _ => host.to_string(),
    };
    Some(Ok((format!("{scheme}://{host}"), format!("/v2/{tail}"))))
}

/// Answers a `/v2/` request; on a listener `bound` to one registry, for that registry
/// whatever the request names.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    bound: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let (ns, query) = query_without_ns(req.uri().query());
    let in_path = match bound {
        Some(_) => None,
        None => registry_in_path(req.uri().path()),
    };
    let (registry, path) = match (bound, in_path) {
        (Some(r), _) => (r.to_string(), req.uri().path().to_string()),
        (None, Some(Ok(found))) => found,
        (None, Some(Err(e))) => return oci_error(StatusCode::BAD_REQUEST, "NAME_INVALID", &e),
        (None, None) => match registry_base(
            ns.as_deref(),
            control_header(req.headers(), "registry"),
            &state.cfg,
        ) {
            Ok(r) => (r, req.uri().path().to_string()),
            Err(e) => return oci_error(StatusCode::BAD_REQUEST, "UNSUPPORTED", &e),
        },
    };
    let route = match route(&path) {
        Ok(r) => r,
        Err(RouteError::Name(n)) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                &format!("invalid repository name {n:?}"),
            )
        }
        Err(RouteError::Path(p)) => {
            return oci_error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                &format!("no such registry endpoint {p:?}"),
            )
        }
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the Pollen mirror is read-only; push to the registry itself",
        );
    }
    let url = format!("{registry}{path}{query}");
    if let (Route::Blob { digest }, &Method::GET) = (&route, req.method()) {
        match digest.parse::<ContentDigest>() {
            Ok(d) => {
                let blob = BlobRequest {
                    url,
                    digest: d,
                    headers: req.headers().clone(),
                };
                return blob::serve(state, blob).await;
            }
            // A well-formed digest of another algorithm is the registry's business.
            Err(pollen_core::DigestError::UnsupportedAlgorithm(_)) if digest.contains(':') => {}
            Err(e) => return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", &e.to_string()),
        }
    }
    let method = req.method().clone();
    if route == Route::Base {
        return ping(&state, method, &url, forward_headers(req.headers())).await;
    }
    relay(&state, method, &url, forward_headers(req.headers()), None).await
}

/// The `/v2/` version check, relayed so the client sees the registry's auth challenge. When
/// the registry cannot be reached the mirror still answers that it speaks the API: a client
/// that finds its mirror "down" stops using it for the whole pull, and every blob request
/// falls back to the registry by itself anyway.
async fn ping(
    state: &ProxyState,
    method: Method,
    url: &str,
    headers: hyper::HeaderMap,
) -> Response<Body> {
    if let Some(refused) = super::upstream::guard_refusal(state, url) {
        return refused;
    }
    match state
        .relay_client
        .request(method, url)
        .headers(headers)
        .send()
        .await
    {
        Ok(resp) => super::upstream::from_upstream(resp),
        Err(e) => {
            tracing::warn!(%url, error = %pollen_core::error_kind::Chain(&e), "registry unreachable for the /v2/ check; answering it locally");
            let mut r = Response::new(super::body::full("{}"));
            r.headers_mut().insert(
                "docker-distribution-api-version",
                hyper::header::HeaderValue::from_static("registry/2.0"),
            );
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_blob_manifest_or_base() {
        assert_eq!(route("/v2/"), Ok(Route::Base));
        assert_eq!(route("/v2"), Ok(Route::Base));
        assert_eq!(
            route("/v2/library/alpine/blobs/sha256:ab"),
            Ok(Route::Blob {
                digest: "sha256:ab"
            })
        );
        assert_eq!(route("/v2/a/b/manifests/v1"), Ok(Route::Other));
        assert_eq!(route("/v2/a/tags/list"), Ok(Route::Other));
        assert_eq!(route("/v2/a/blobs/uploads/"), Ok(Route::Other));
        // A repository may itself be called "blobs".
        assert_eq!(route("/v2/x/blobs/manifests/v1"), Ok(Route::Other));
    }

    #[test]
    fn malformed_paths_and_names_are_refused() {
        assert!(matches!(
            route("/v2/UPPER/blobs/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            route("/v2/a/../b/blobs/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(
            route("/v2/a//b/blobs/x"),
            Err(RouteError::Name(_))
        ));
        assert!(matches!(route("/v2/a/blobs/"), Err(RouteError::Path(_))));
        assert!(matches!(route("/v2/nothing"), Err(RouteError::Path(_))));
        assert!(matches!(route("/v3/a/blobs/x"), Err(RouteError::Path(_))));
        assert!(matches!(route("/v2x"), Err(RouteError::Path(_))));
    }

    #[test]
    fn registry_can_ride_in_the_path() {
        assert_eq!(
            registry_in_path("/v2/pollen-registry/http/127.0.0.1_5000/test/app/blobs/sha256:x"),
            Some(Ok((
                "http://127.0.0.1:5000".to_string(),
                "/v2/test/app/blobs/sha256:x".to_string()
            )))
        );
        assert_eq!(
            registry_in_path("/v2/pollen-registry/https/ghcr.io/o/r/manifests/1"),
            Some(Ok((
                "https://ghcr.io".to_string(),
                "/v2/o/r/manifests/1".to_string()
            )))
        );
        assert!(matches!(
            registry_in_path("/v2/pollen-registry/ftp/h/x"),
            Some(Err(_))
        ));
        assert!(matches!(
            registry_in_path("/v2/pollen-registry/http/H%20/x"),
            Some(Err(_))
        ));
        assert_eq!(registry_in_path("/v2/library/alpine/manifests/1"), None);
    }

    #[test]
    fn ns_is_taken_out_of_the_query() {
        let (ns, q) = query_without_ns(Some("ns=127.0.0.1%3A5000&n=10"));
        assert_eq!(ns.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(q, "?n=10");
        assert_eq!(query_without_ns(None), (None, String::new()));
    }
}
