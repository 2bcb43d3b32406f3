//! Response bodies of the proxy and mirror: one boxed type for fixed bytes, streams relayed
//! from an upstream, and streams read from the piece store, plus the error replies they share.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Every response body the proxy sends.
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// A body of fixed bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// A body fed through a channel; an `Err` item aborts the response (the client sees the
/// connection close before the announced length), which is how a failed check is reported
/// once the status line has gone out.
pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    let stream = futures::StreamExt::map(
        ReceiverStream::new(rx),
        |r: Result<Bytes, std::io::Error>| r.map(Frame::data),
    );
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

/// A plain-text error reply for proxy clients.
pub(crate) fn text_error(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error in the OCI distribution format (`{"errors":[{"code":…,"message":…}]}`), which
/// registry clients print to their users.
pub(crate) fn oci_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
