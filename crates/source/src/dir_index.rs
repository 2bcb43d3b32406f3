//! Listing an HTTP directory index (what nginx's `autoindex`, Apache's `mod_autoindex` and
//! `python3 -m http.server` serve for a directory URL): the files below it, for `pollen get
//! --recursive http://host/dir/`.
//!
//! The page comes from the origin and is not trusted: only links that resolve to a URL below
//! the listed directory count (a parent link, another host, a query such as Apache's sort
//! links are skipped), every page is read bounded, and the walk stops at a depth and a number
//! of pages. A file's size is not known from the page (it shows when its download starts).

use std::collections::{BTreeSet, VecDeque};

use crate::error::SourceError;
use crate::http::{connect_error, HttpSource};
use crate::origin_guard::OriginPolicy;
use crate::source::{Listed, Listing};

/// Largest index page read.
const MAX_PAGE: usize = 8 << 20;
/// Deepest directory followed below the listed one.
const MAX_DEPTH: usize = 32;
/// Most directory pages read in one listing.
const MAX_PAGES: usize = 10_000;

/// The `href` values of the `<a>`, `<link>`… elements of `html`, entities `&amp;`, `&lt;`,
/// `&gt;`, `&quot;` and `&#39;` decoded.
pub fn links(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("href") {
        let mut i = from + at + 4;
        from = i;
        // The attribute name must stand alone (not `data-href`).
        let before = (from - 4).checked_sub(1).map(|b| bytes[b]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            continue;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let (start, end) = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let Some(len) = html[i + 1..].find(q as char) else {
                    break;
                };
                (i + 1, i + 1 + len)
            }
            Some(_) => {
                let len = html[i..]
                    .find(|c: char| c.is_ascii_whitespace() || c == '>')
                    .unwrap_or(html.len() - i);
                (i, i + len)
            }
            None => break,
        };
        out.push(unescape(&html[start..end]));
        from = end;
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// Where `href` on the page of `dir` leads, when that is below `root` (the listed
/// directory) and names content: its URL. `None` for everything else.
fn below(root: &url::Url, dir: &url::Url, href: &str) -> Option<url::Url> {
    let mut u = dir.join(href).ok()?;
    if u.query().is_some() {
        return None;
    }
    u.set_fragment(None);
    let inside = u.scheme() == root.scheme()
        && u.host_str() == root.host_str()
        && u.port_or_known_default() == root.port_or_known_default()
        && u.path().starts_with(root.path())
        && u.path().len() > root.path().len();
    inside.then_some(u)
}

/// `url`'s path below `root`'s, percent-decoded.
fn relative(root: &url::Url, url: &url::Url) -> Option<String> {
    let rest = url.path().strip_prefix(root.path())?;
    let decoded: Option<Vec<String>> = rest
        .split('/')
        .map(|seg| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })
        .collect();
    Some(decoded?.join("/"))
}

/// Reads the index page at `url`, bounded.
async fn page(
    http: &HttpSource,
    url: &url::Url,
    policy: OriginPolicy,
) -> Result<String, SourceError> {
    let mut resp = http
        .client(policy)
        .get(url.clone())
        .send()
        .await
        .map_err(|e| connect_error(url.as_str(), e))?;
    if !resp.status().is_success() {
        return Err(SourceError::Status {
            status: resp.status().as_u16(),
            url: url.to_string(),
        });
    }
    let html = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
    if !html {
        return Err(SourceError::Unsupported {
            url: url.to_string(),
            reason: "the server answered with no HTML directory index".into(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| connect_error(url.as_str(), e))?
    {
        if body.len() + chunk.len() > MAX_PAGE {
            return Err(SourceError::Protocol(format!(
                "the directory index at {url} is larger than {MAX_PAGE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The files below the directory `url` (which ends with `/`), walking its subdirectories'
/// index pages, at most `limit` of them.
pub(crate) async fn list(
    http: &HttpSource,
    url: &str,
    policy: OriginPolicy,
    limit: usize,
) -> Result<Listing, SourceError> {
    use crate::source::Source as _;
    http.check(url, policy)?;
    let root = url::Url::parse(url).map_err(|e| SourceError::Unsupported {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !root.path().ends_with('/') || root.query().is_some() {
        return Err(SourceError::Unsupported {
            url: url.to_string(),
            reason: "a directory to list is a URL ending with / and no query".into(),
        });
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut dirs = VecDeque::from([(root.clone(), 0usize)]);
    let mut listing = Listing::default();
    let mut pages = 0;
    while let Some((dir, depth)) = dirs.pop_front() {
        pages += 1;
        if pages > MAX_PAGES {
            return Err(SourceError::Protocol(format!(
                "{url} holds more than {MAX_PAGES} directories"
            )));
        }
        let html = page(http, &dir, policy).await?;
        for href in links(&html) {
            let Some(target) = below(&root, &dir, &href) else {
                continue;
            };
            if !seen.insert(target.path().to_string()) {
                continue;
            }
            if target.path().ends_with('/') {
                if depth < MAX_DEPTH {
                    dirs.push_back((target, depth + 1));
                }
                continue;
            }
            let Some(path) = relative(&root, &target) else {
                continue;
            };
            if listing.objects.len() == limit {
                listing.truncated = true;
                return Ok(listing);
            }
            listing.objects.push(Listed {
                url: target.to_string(),
                path,
                size: 0,
                version: None,
                digest: None,
            });
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_read_from_every_quoting_and_entities_decoded() {
        let html = r#"<a href="a.bin">a</a><A HREF='b%20c.bin'>b</A>
            <a href=sub/>sub</a><a data-href="no">x</a><a href = "x?C=N&amp;O=D">s</a>
            <a href="unterminated"#;
        assert_eq!(
            links(html),
            ["a.bin", "b%20c.bin", "sub/", "x?C=N&O=D"].map(String::from)
        );
    }

    #[test]
    fn only_links_below_the_listed_directory_count() {
        let root = url::Url::parse("http://h:8/m/").expect("url");
        let sub = root.join("w/").expect("url");
        let ok = |dir: &url::Url, href: &str| below(&root, dir, href).map(|u| u.to_string());
        assert_eq!(ok(&root, "a.bin").as_deref(), Some("http://h:8/m/a.bin"));
        assert_eq!(ok(&sub, "b.bin").as_deref(), Some("http://h:8/m/w/b.bin"));
        assert_eq!(ok(&sub, "/m/c.bin").as_deref(), Some("http://h:8/m/c.bin"));
        for bad in [
            "../x",
            "../../etc/passwd",
            "/etc/passwd",
            "http://169.254.169.254/latest/",
            "https://h:8/m/a.bin",
            "http://h:9/m/a.bin",
            "?C=N;O=D",
            "./",
            "",
        ] {
            assert_eq!(ok(&root, bad), None, "{bad}");
        }
        let u = url::Url::parse("http://h:8/m/w/b%20c.bin").expect("url");
        assert_eq!(relative(&root, &u).as_deref(), Some("w/b c.bin"));
    }
}
