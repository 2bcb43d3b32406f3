//! A proxied GET that a rule sends through P2P: the URL's task is started (or joined), the
//! response goes out once the content length is known, and the body streams as pieces land.
//! If the P2P download fails before that, the request is simply relayed to the origin; if it
//! fails later, the rest comes from the origin (see [`super::pump`]).

use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderValue, ETAG, LAST_MODIFIED, RANGE};
use hyper::{Method, Response};
use pollen_core::TaskKey;
use tracing::{info, warn};

use super::body::Body;
use super::pump;
use super::upstream::{control_header, forward_headers, relay};
use super::ProxyState;
use crate::download::task_spec::TaskSpec;
use crate::download::watch::DownloadWatch;

/// Client headers that do not travel with the task (they describe this one request).
fn task_headers(fwd: &HeaderMap) -> Vec<(String, String)> {
    fwd.iter()
        .filter(|(k, _)| {
            let n = k.as_str();
            n != "range" && n != "accept-encoding" && !n.starts_with("if-")
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

fn spec_for(url: &str, h: &HeaderMap, headers: Vec<(String, String)>) -> Option<TaskSpec> {
    let filtered = control_header(h, "filtered-query-params")
        .map(|v| {
            v.split(['&', ','])
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let key = TaskKey {
        url: url.to_string(),
        digest: None,
        tag: control_header(h, "tag").unwrap_or("").to_string(),
        application: control_header(h, "application").unwrap_or("").to_string(),
        filtered_query: filtered,
        private: false,
        version: String::new(),
    };
    TaskSpec::new(key, headers).ok()
}

/// Waits until the task's length is known; None when the download failed or stalled first.
async fn content_length(state: &ProxyState, watch: &mut DownloadWatch) -> Option<u64> {
    let stall = state.cfg.stall_timeout;
    loop {
        if let Some(e) = state.conductor.store.get(&watch.id) {
            return Some(e.layout().content_length());
        }
        if let Some(outcome) = watch.result.borrow().clone() {
            if let Err(e) = outcome {
                warn!(error = %pollen_core::error_kind::Chain(&e), "P2P download failed before it started; relaying to the origin");
            }
            return state
                .conductor
                .store
                .get(&watch.id)
                .map(|e| e.layout().content_length());
        }
        if !watch.progressed_within(stall).await {
            return None;
        }
    }
}

/// Serves `request_url` (as the client asked for it) through P2P, fetching `origin_url`.
pub(crate) async fn serve(
    state: Arc<ProxyState>,
    method: Method,
    origin_url: String,
    client_headers: &HeaderMap,
) -> Response<Body> {
    let fwd = forward_headers(client_headers);
    let p2p_refused =
        control_header(client_headers, "use-p2p").is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if method != Method::GET || client_headers.contains_key(RANGE) || p2p_refused {
        return relay(&state, method, &origin_url, fwd, None).await;
    }
    let headers = task_headers(&fwd);
    let Some(spec) = spec_for(&origin_url, client_headers, headers.clone()) else {
        return relay(&state, method, &origin_url, fwd, None).await;
    };
    let task_id = spec.id;
    let mut watch = state.conductor.start(spec);
    let Some(length) = content_length(&state, &mut watch).await else {
        return relay(&state, method, &origin_url, fwd, None).await;
    };
    info!(url = %origin_url, length, "proxying through P2P");
    let mut resp = pump::respond(
        state.clone(),
        watch,
        origin_url,
        None,
        headers,
        Some(length),
    );
    if let Some(meta) = state
        .conductor
        .store
        .get(&task_id)
        .map(|e| e.snapshot().meta)
    {
        for (name, value) in [(ETAG, meta.etag), (LAST_MODIFIED, meta.last_modified)] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                resp.headers_mut().insert(name, v);
            }
        }
    }
    resp
}
