//! Where a request goes when Pollen does not serve it from P2P, and how it is relayed there:
//! the registry a mirror request names, the headers that may cross the proxy, and a relay that
//! streams the upstream's answer back unchanged (status, headers, body).

use std::net::IpAddr;

use futures::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HOST};
use hyper::{Method, Response, StatusCode};
use tracing::warn;
use url::Url;

use super::body::{self, Body};
use super::ProxyState;
use pollen_core::error_kind::Chain;
use pollen_source::refusal_in;

use crate::config::ProxyConfig;

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Pollen's own per-request control headers, and Dragonfly's of the same meaning.
pub(crate) fn is_control_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-pollen-") || n.starts_with("x-dragonfly-")
}

/// The value of a control header, `X-Pollen-<suffix>` first, then `X-Dragonfly-<suffix>`.
pub(crate) fn control_header<'a>(h: &'a HeaderMap, suffix: &str) -> Option<&'a str> {
    [
        format!("x-pollen-{suffix}"),
        format!("x-dragonfly-{suffix}"),
    ]
    .iter()
    .find_map(|n| h.get(n.as_str()))
    .and_then(|v| v.to_str().ok())
    .map(str::trim)
    .filter(|v| !v.is_empty())
}

/// The client's request headers that go upstream: all but hop-by-hop ones (and those the
/// `Connection` header names), `Host`, and Pollen's control headers.
pub(crate) fn forward_headers(h: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        let n = k.as_str();
        if *k == HOST
            || HOP_BY_HOP.contains(&n)
            || named.iter().any(|c| c == n)
            || is_control_header(k)
        {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// The upstream's response headers that go back to the client.
fn response_headers(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.len());
    for (k, v) in h {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out.append(k.clone(), v.clone());
        }
    }
    out
}

/// The registry a `/v2/` request is for, as `scheme://host[:port]`: the `X-Pollen-Registry`
/// (or `X-Dragonfly-Registry`) header, else containerd's `?ns=` host, else the configured
/// default. A bare host gets `http` when it is listed as insecure, `https` otherwise.
pub(crate) fn registry_base(
    ns: Option<&str>,
    header: Option<&str>,
    cfg: &ProxyConfig,
) -> Result<String, String> {
    let given = header.or(ns);
    let Some(given) = given else {
        return normalise_base(&cfg.default_registry)
            .map_err(|e| format!("the configured default registry is invalid: {e}"));
    };
    if given.contains("://") {
        return normalise_base(given);
    }
    let host = if given == "docker.io" || given == "index.docker.io" {
        "registry-1.docker.io"
    } else {
        given
    };
    let scheme = if is_insecure(host, &cfg.insecure_registries) {
        "http"
    } else {
        "https"
    };
    normalise_base(&format!("{scheme}://{host}"))
}

fn normalise_base(s: &str) -> Result<String, String> {
    let u = Url::parse(s).map_err(|e| format!("{s:?} is not a registry address ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{s:?}: a registry is reached over http or https"));
    }
    let host = u.host_str().ok_or_else(|| format!("{s:?} has no host"))?;
    if u.path() != "/" && !u.path().is_empty() || u.query().is_some() || !u.username().is_empty() {
        return Err(format!(
            "{s:?}: a registry address is scheme://host[:port] only"
        ));
    }
    Ok(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// Whether `host[:port]` matches an insecure-registry entry (`host` matches any port).
fn is_insecure(host_port: &str, list: &[String]) -> bool {
    let (host, port) = split_host_port(host_port);
    list.iter().any(|entry| {
        let (h, p) = split_host_port(entry);
        same_host(h, host) && (p.is_none() || p == port)
    })
}

fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Splits `host:port`, `[v6]:port`, `v6` or `host`.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// A 403 naming the rule when the origin guard refuses `url`'s address (an IP literal; names
/// are checked by the relay client's resolver as they resolve).
pub(crate) fn guard_refusal(state: &ProxyState, url: &str) -> Option<Response<Body>> {
    let parsed = Url::parse(url).ok()?;
    let refusal = state
        .source
        .guard()
        .check_url(&parsed, state.origin_policy())
        .err()?;
    warn!(%url, %refusal, "origin guard refused a proxied request");
    Some(body::text_error(
        StatusCode::FORBIDDEN,
        &format!("pollen: {refusal}"),
    ))
}

/// Sends the request upstream and streams the answer back as it is. Redirects are not
/// followed here: the client sees them, as it would without Pollen (and its next request comes
/// through the guard again).
pub(crate) async fn relay(
    state: &ProxyState,
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: Option<Incoming>,
) -> Response<Body> {
    if let Some(refused) = guard_refusal(state, url) {
        return refused;
    }
    let mut req = state.relay_client.request(method, url).headers(headers);
    if let Some(b) = body {
        req = req.body(reqwest::Body::wrap_stream(b.into_data_stream()));
    }
    match req.send().await {
        Ok(resp) => from_upstream(resp),
        Err(e) if refusal_in(&e).is_some() => {
            let refusal = refusal_in(&e).map(ToString::to_string).unwrap_or_default();
            warn!(%url, %refusal, "origin guard refused a proxied request");
            body::text_error(StatusCode::FORBIDDEN, &format!("pollen: {refusal}"))
        }
        Err(e) => {
            warn!(%url, error = %Chain(&e), "upstream unreachable");
            body::text_error(
                StatusCode::BAD_GATEWAY,
                &format!("pollen: cannot reach {url}: {}", Chain(&e)),
            )
        }
    }
}

/// An upstream response turned into one for the client, body streamed.
pub(crate) fn from_upstream(resp: reqwest::Response) -> Response<Body> {
    let mut out = Response::new(body::empty());
    *out.status_mut() = resp.status();
    *out.headers_mut() = response_headers(resp.headers());
    let stream = resp
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    *out.body_mut() = BodyExt::boxed(http_body_util::StreamBody::new(stream));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProxyConfig {
        ProxyConfig::default()
    }

    #[test]
    fn registry_comes_from_header_then_ns_then_default() {
        let c = cfg();
        assert_eq!(
            registry_base(Some("127.0.0.1:5000"), None, &c).as_deref(),
            Ok("http://127.0.0.1:5000")
        );
        assert_eq!(
            registry_base(Some("ghcr.io"), None, &c).as_deref(),
            Ok("https://ghcr.io")
        );
        assert_eq!(
            registry_base(Some("docker.io"), None, &c).as_deref(),
            Ok("https://registry-1.docker.io")
        );
        assert_eq!(
            registry_base(Some("ghcr.io"), Some("https://mirror.example:8443/"), &c).as_deref(),
            Ok("https://mirror.example:8443")
        );
        assert_eq!(
            registry_base(None, None, &c).as_deref(),
            Ok("https://registry-1.docker.io")
        );
        assert!(registry_base(None, Some("ftp://x"), &c).is_err());
        assert!(registry_base(Some("a b"), None, &c).is_err());
        assert!(registry_base(None, Some("http://h/path"), &c).is_err());
    }

    #[test]
    fn insecure_entries_match_host_or_host_and_port() {
        let list = vec!["reg.local:5000".to_string(), "::1".to_string()];
        assert!(is_insecure("reg.local:5000", &list));
        assert!(!is_insecure("reg.local:5001", &list));
        assert!(is_insecure("[::1]:5000", &list));
        assert!(!is_insecure("other", &list));
    }

    #[test]
    fn hop_by_hop_host_and_control_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("host", "mirror:4001".parse().expect("v"));
        h.insert("connection", "keep-alive, x-secret".parse().expect("v"));
        h.insert("x-secret", "1".parse().expect("v"));
        h.insert("x-pollen-registry", "http://r".parse().expect("v"));
        h.insert("authorization", "Bearer t".parse().expect("v"));
        let out = forward_headers(&h);
        assert_eq!(out.len(), 1);
        assert_eq!(out["authorization"], "Bearer t");
    }
}
