//! `CONNECT host:port`: intercepted when the target is listed (see [`super::intercept`]),
//! refused when the config says so, and otherwise tunnelled: the target is dialled first,
//! then the client's bytes and the target's are copied both ways untouched.

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pollen_source::ResolveError;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::body::{self, Body};
use super::ProxyState;

/// Dial timeout for a tunnel's target.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn connect(state: Arc<ProxyState>, req: Request<Incoming>) -> Response<Body> {
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return body::text_error(
            StatusCode::BAD_REQUEST,
            "pollen: CONNECT needs a host:port target",
        );
    };
    if req.uri().port_u16().is_none() {
        return body::text_error(
            StatusCode::BAD_REQUEST,
            "pollen: CONNECT needs a host:port target",
        );
    }
    if state.rules.intercepts(&target) {
        let s = state.clone();
        state.spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => super::intercept::serve(s, upgraded, target).await,
                Err(e) => warn!(%target, error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(body::empty());
    }
    if state.rules.refuses_other_connect() {
        return body::text_error(
            StatusCode::FORBIDDEN,
            &format!("pollen: CONNECT to {target} is not allowed by this proxy"),
        );
    }
    let addrs = match state
        .source
        .guard()
        .resolve(&target, state.origin_policy())
        .await
    {
        Ok(a) => a,
        Err(ResolveError::Refused(refusal)) => {
            warn!(%target, %refusal, "origin guard refused a CONNECT");
            return body::text_error(StatusCode::FORBIDDEN, &format!("pollen: {refusal}"));
        }
        Err(ResolveError::Lookup(e)) => {
            return body::text_error(
                StatusCode::BAD_GATEWAY,
                &format!("pollen: cannot resolve {target}: {e}"),
            )
        }
    };
    let upstream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return body::text_error(
                StatusCode::BAD_GATEWAY,
                &format!("pollen: cannot connect to {target}: {e}"),
            )
        }
        Err(_) => {
            return body::text_error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("pollen: connecting to {target} timed out"),
            )
        }
    };
    state.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => debug!(%target, up, down, "tunnel closed"),
                    Err(e) => debug!(%target, error = %e, "tunnel ended with an error"),
                }
            }
            Err(e) => warn!(%target, error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(body::empty())
}
