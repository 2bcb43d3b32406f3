//! HTTP(S) origin with Range support.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use crate::error::SourceError;
use crate::origin_guard::{refusal_in, GuardedResolver, OriginGuard, OriginPolicy};
use crate::source::{OriginResponse, ReadRequest, Source};

/// A client for HTTP and HTTPS origins, one connection pool per guard policy.
#[derive(Clone, Debug)]
pub struct HttpSource {
    guard: OriginGuard,
    local_user: reqwest::Client,
    fleet: reqwest::Client,
}

/// A failed request as a [`SourceError`]: the guard's refusal when it refused (final, never
/// retried), otherwise a connect error.
pub fn connect_error(url: &str, e: reqwest::Error) -> SourceError {
    if let Some(r) = refusal_in(&e) {
        return SourceError::Refused(r.to_string());
    }
    SourceError::Connect {
        url: url.to_string(),
        source: root_cause(e),
    }
}

/// The cause worth showing of a failed request: the I/O error at the root of reqwest's chain
/// ("Connection refused (os error 111)"), without the layers that repeat the URL and say
/// "error" again; the request error itself when there is none (a timeout, a TLS failure).
fn root_cause(e: reqwest::Error) -> crate::error::Cause {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut io = None;
    while let Some(c) = cur {
        if let Some(i) = c.downcast_ref::<std::io::Error>() {
            // "Connection refused (os error 111)": the number tells a reader nothing more.
            let text = i.to_string();
            let text = match text.rfind(" (os error ") {
                Some(at) if text.ends_with(')') => text[..at].to_string(),
                _ => text,
            };
            io = Some(std::io::Error::new(i.kind(), text));
        }
        cur = c.source();
    }
    match io {
        Some(i) if !e.is_timeout() => Box::new(i),
        _ => Box::new(e),
    }
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// The `Range` header asking for bytes `start` to `end` (exclusive; `None`: to the end), or
/// none when that is the whole content.
fn range_header(start: u64, end: Option<u64>) -> Option<String> {
    match end {
        Some(end) if end > start => Some(format!("bytes={start}-{}", end - 1)),
        _ if start > 0 => Some(format!("bytes={start}-")),
        _ => None,
    }
}

/// How many redirects a guarded client follows.
const MAX_REDIRECTS: usize = 10;

/// Whether a guarded client follows redirects (each hop checked by the guard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirects {
    /// Up to ten, every hop's address checked.
    Follow,
    /// None: the response is handed back as it is (the proxy's relay).
    Keep,
}

/// A reqwest client with Pollen's user agent, timeouts, trusted roots (built-in web PKI plus
/// `extra_roots`, PEM bundles), and the origin guard on every address it connects to: its
/// resolver drops refused addresses and every redirect's IP literal is checked. The proxy
/// relays requests with one that follows no redirects.
pub fn client(
    connect_timeout: Duration,
    read_timeout: Duration,
    extra_roots: &[Vec<u8>],
    redirects: Redirects,
    guard: &OriginGuard,
    policy: OriginPolicy,
) -> Result<reqwest::Client, SourceError> {
    let redirect_policy = match redirects {
        Redirects::Keep => reqwest::redirect::Policy::none(),
        Redirects::Follow => {
            let guard = guard.clone();
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                match guard.check_url(attempt.url(), policy) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        }
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .redirect(redirect_policy)
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            guard: guard.clone(),
            policy,
        }))
        .user_agent(concat!("pollen/", env!("CARGO_PKG_VERSION")));
    for pem in extra_roots {
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| SourceError::Client {
                what: "an extra CA certificate is not valid PEM".into(),
                source: Some(Box::new(e)),
            })?;
        if certs.is_empty() {
            return Err(SourceError::Client {
                what: "an extra CA certificate file holds no PEM certificate".into(),
                source: None,
            });
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder.build().map_err(|e| SourceError::Client {
        what: "the HTTP client".into(),
        source: Some(Box::new(e)),
    })
}

/// What an origin that speaks an HTTP API keeps: its API clients (redirects not followed),
/// one per guard policy, and an HTTP origin for bodies (redirects followed, each hop guarded).
#[derive(Clone, Debug)]
pub struct ApiClients {
    /// Reads bodies.
    pub http: HttpSource,
    local_user: reqwest::Client,
    fleet: reqwest::Client,
}

impl ApiClients {
    /// Clients with these timeouts and extra roots, connecting only where `guard` lets them.
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        extra_roots: &[Vec<u8>],
        guard: &OriginGuard,
    ) -> Result<Self, SourceError> {
        let api = |policy| {
            client(
                connect_timeout,
                read_timeout,
                extra_roots,
                Redirects::Keep,
                guard,
                policy,
            )
        };
        Ok(Self {
            http: HttpSource::new(connect_timeout, read_timeout, extra_roots, guard.clone())?,
            local_user: api(OriginPolicy::LocalUser)?,
            fleet: api(OriginPolicy::Fleet)?,
        })
    }

    /// The API client for `policy`.
    pub fn api(&self, policy: OriginPolicy) -> &reqwest::Client {
        match policy {
            OriginPolicy::LocalUser => &self.local_user,
            OriginPolicy::Fleet => &self.fleet,
        }
    }
}

impl HttpSource {
    /// A client with connect and read timeouts that trusts the built-in web PKI roots plus
    /// `extra_roots` (PEM bundles, e.g. an internal CA that signs the origin's certificate),
    /// and connects only where `guard` lets it.
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        extra_roots: &[Vec<u8>],
        guard: OriginGuard,
    ) -> Result<Self, SourceError> {
        let make = |policy| {
            client(
                connect_timeout,
                read_timeout,
                extra_roots,
                Redirects::Follow,
                &guard,
                policy,
            )
        };
        Ok(Self {
            local_user: make(OriginPolicy::LocalUser)?,
            fleet: make(OriginPolicy::Fleet)?,
            guard,
        })
    }

    /// The guard this source fetches under.
    pub fn guard(&self) -> &OriginGuard {
        &self.guard
    }

    /// The client for `policy` (redirects followed, each hop guarded).
    pub(crate) fn client(&self, policy: OriginPolicy) -> &reqwest::Client {
        match policy {
            OriginPolicy::LocalUser => &self.local_user,
            OriginPolicy::Fleet => &self.fleet,
        }
    }
}

#[async_trait]
impl Source for HttpSource {
    /// Refuses `url` now, before any connection, when its host is an address `policy` refuses
    /// (names are checked as they resolve, during the fetch).
    fn check(&self, url: &str, policy: OriginPolicy) -> Result<(), SourceError> {
        let parsed = url::Url::parse(url).map_err(|e| SourceError::Connect {
            url: url.to_string(),
            source: Box::new(e),
        })?;
        self.guard
            .check_url(&parsed, policy)
            .map_err(|r| SourceError::Refused(r.to_string()))
    }

    /// Requests the bytes asked for (the whole content when that is all of it), passing the
    /// caller's headers through; a validator makes the Range request conditional (`If-Range`).
    /// Redirects are followed, each hop checked by the guard.
    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        let ReadRequest {
            url,
            headers,
            start,
            end,
            if_range,
            policy,
        } = req;
        self.check(url, policy)?;
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| SourceError::InvalidHeader(k.clone()))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| SourceError::InvalidHeader(format!("{k}: {v}")))?;
            map.append(name, value);
        }
        if let Some(range) = range_header(start, end) {
            map.insert(
                RANGE,
                HeaderValue::from_str(&range)
                    .map_err(|_| SourceError::InvalidHeader("range".into()))?,
            );
            if let Some(v) = if_range.and_then(|v| HeaderValue::from_str(v).ok()) {
                map.insert(reqwest::header::IF_RANGE, v);
            }
        }
        let client = match policy {
            OriginPolicy::LocalUser => &self.local_user,
            OriginPolicy::Fleet => &self.fleet,
        };
        let resp = client
            .get(url)
            .headers(map)
            .send()
            .await
            .map_err(|e| connect_error(url, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(SourceError::Status {
                status: status.as_u16(),
                url: url.to_string(),
            });
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        let (body_start, total_length) = if status == StatusCode::PARTIAL_CONTENT {
            header(CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| SourceError::Protocol("206 without a valid Content-Range".into()))?
        } else {
            let len = header(CONTENT_LENGTH)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    SourceError::Protocol("the origin did not send a Content-Length".into())
                })?;
            (0, len)
        };
        let body = resp.bytes_stream().map(|r| {
            r.map_err(|e| SourceError::Body {
                what: "the body broke".into(),
                source: Some(Box::new(e)),
            })
        });
        Ok(OriginResponse::new(
            total_length,
            body_start,
            etag,
            last_modified,
            Box::pin(body),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses_and_rejects_garbage() {
        assert_eq!(parse_content_range("bytes 10-19/100"), Some((10, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn range_headers_ask_for_exactly_the_bytes_wanted() {
        assert_eq!(range_header(0, None), None);
        assert_eq!(range_header(10, None).as_deref(), Some("bytes=10-"));
        assert_eq!(range_header(0, Some(10)).as_deref(), Some("bytes=0-9"));
        assert_eq!(range_header(4, Some(8)).as_deref(), Some("bytes=4-7"));
        // An empty span is no span: from `start` on.
        assert_eq!(range_header(4, Some(4)).as_deref(), Some("bytes=4-"));
    }
}
