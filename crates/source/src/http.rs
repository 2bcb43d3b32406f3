//! HTTP(S) origin with Range support.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use crate::error::SourceError;

/// A client for HTTP and HTTPS origins.
#[derive(Clone, Debug)]
pub struct HttpSource {
    client: reqwest::Client,
}

/// An origin response whose body is read chunk by chunk.
pub struct OriginResponse {
    /// Total content length, as the origin reported it.
    pub total_length: u64,
    /// Offset of the first body byte in the content.
    pub start: u64,
    /// Origin `ETag`.
    pub etag: Option<String>,
    /// Origin `Last-Modified`.
    pub last_modified: Option<String>,
    body: reqwest::Response,
}

impl OriginResponse {
    /// The next body chunk; `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        self.body
            .chunk()
            .await
            .map_err(|e| SourceError::Body(e.to_string()))
    }
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// A reqwest client with Pollen's user agent, timeouts, trusted roots (built-in web PKI plus
/// `extra_roots`, PEM bundles) and redirect policy. The proxy relays requests with one that
/// follows no redirects.
pub fn client(
    connect_timeout: Duration,
    read_timeout: Duration,
    extra_roots: &[Vec<u8>],
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, SourceError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .read_timeout(read_timeout)
        .redirect(redirects)
        .user_agent(concat!("pollen/", env!("CARGO_PKG_VERSION")));
    for pem in extra_roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| SourceError::Protocol(format!("invalid CA certificate: {e}")))?;
        if certs.is_empty() {
            return Err(SourceError::Protocol(
                "invalid CA certificate: no PEM certificate found".into(),
            ));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| SourceError::Protocol(error_chain(&e)))
}

impl HttpSource {
    /// A client with connect and read timeouts that trusts the built-in web PKI roots plus
    /// `extra_roots` (PEM bundles, e.g. an internal CA that signs the origin's certificate).
    pub fn new(
        connect_timeout: Duration,
        read_timeout: Duration,
        extra_roots: &[Vec<u8>],
    ) -> Result<Self, SourceError> {
        let client = client(
            connect_timeout,
            read_timeout,
            extra_roots,
            reqwest::redirect::Policy::default(),
        )?;
        Ok(Self { client })
    }

    /// Requests `url` from byte `start` on (the whole content when `start` is zero), passing
    /// the caller's headers through. With `if_range` (an ETag or Last-Modified recorded
    /// earlier), a Range request is sent as conditional: an origin whose content changed
    /// answers with the whole new content (`start` 0 in the response) instead of a range.
    pub async fn fetch(
        &self,
        url: &str,
        headers: &[(String, String)],
        start: u64,
        if_range: Option<&str>,
    ) -> Result<OriginResponse, SourceError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| SourceError::InvalidHeader(k.clone()))?;
            let value = HeaderValue::from_str(v.trim())
                .map_err(|_| SourceError::InvalidHeader(format!("{k}: {v}")))?;
            map.append(name, value);
        }
        if start > 0 {
            map.insert(
                RANGE,
                HeaderValue::from_str(&format!("bytes={start}-"))
                    .map_err(|_| SourceError::InvalidHeader("range".into()))?,
            );
            if let Some(v) = if_range.and_then(|v| HeaderValue::from_str(v).ok()) {
                map.insert(reqwest::header::IF_RANGE, v);
            }
        }
        let resp = self
            .client
            .get(url)
            .headers(map)
            .send()
            .await
            .map_err(|e| SourceError::Connect {
                url: url.to_string(),
                reason: error_chain(&e),
            })?;
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
        Ok(OriginResponse {
            total_length,
            start: body_start,
            etag,
            last_modified,
            body: resp,
        })
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
}
