//! The web console: three static files compiled into the binary and served by the manager.
//!
//! The console is a small page over the REST API, signed in by the session cookie. It loads
//! nothing from elsewhere (no CDN, no fonts), and the Content-Security-Policy says so: a
//! browser runs only the console's own script and talks only to this manager.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// Only this origin's script, style and API; never framed by another site.
const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/` and `/console` lead to the console.
pub async fn to_console() -> Redirect {
    Redirect::to("/console/")
}

/// The console's page.
pub async fn index() -> Response {
    asset("index.html")
}

/// One of the console's files by name.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

fn asset(name: &str) -> Response {
    let (body, kind) = match name {
        "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary; a browser asks again rather than run an old script
    // against a new API.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_its_files_with_a_strict_policy_and_nothing_else() {
        for name in ["index.html", "app.js", "app.css"] {
            let r = asset(name);
            assert_eq!(r.status(), StatusCode::OK, "{name}");
            let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap_or_default();
            assert!(csp.contains("default-src 'none'"), "{csp}");
        }
        for name in ["../Cargo.toml", "app.js.map", "", "%2e%2e"] {
            assert_eq!(asset(name).status(), StatusCode::NOT_FOUND, "{name}");
        }
    }

    #[test]
    fn loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX),
            ("app.js", SCRIPT),
            ("app.css", STYLE),
        ] {
            for needle in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(needle), "{name} mentions {needle}");
            }
        }
    }
}
