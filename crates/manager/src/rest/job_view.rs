//! What a viewer may see of a job. A job that carries credentials (a registry user name,
//! credential headers) or whose URLs carry a signature or token (a presigned object URL)
//! reaches content not everyone may: its URLs, image, per-peer URLs and error messages are
//! shown whole only to the user who created it and to admins. Everyone else with read access
//! to jobs sees the origin's scheme and host, and `<private>` for the rest.

use pollen_core::credentials::is_credential_header;

use crate::auth::{Principal, Role};
use crate::store::jobs::{Job, JobArgs};

/// What replaces the path and query of a private job's URLs for other viewers.
pub const HIDDEN: &str = "<private>";
/// What replaces a private job's error messages (which quote its URLs) for other viewers.
pub const HIDDEN_ERROR: &str = "<private: shown to the job's owner and admins>";

/// Whether a query parameter named `key` carries a secret (signatures, credentials, tokens).
fn secret_query_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["signature", "credential", "token", "secret", "password"]
        .iter()
        .any(|w| k.contains(w))
        || k == "sig"
        || k.ends_with("key")
}

/// Whether `u`'s query carries a secret (a presigned URL's signature, a token).
pub fn url_carries_secret(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| u.query_pairs().any(|(k, _)| secret_query_key(&k)))
}

/// Whether a job with `args` reaches private content.
pub fn is_private(args: &JobArgs) -> bool {
    !args.username.is_empty()
        || args
            .headers
            .iter()
            .any(|h| is_credential_header(h.split(':').next().unwrap_or("")))
        || args.urls.iter().any(|u| url_carries_secret(u))
}

/// `u` with only its scheme and host kept.
pub fn hide(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(p) if p.has_host() => format!(
            "{}://{}/{HIDDEN}",
            p.scheme(),
            p.host_str().unwrap_or_default()
        ),
        _ if u.is_empty() => String::new(),
        // An image reference: keep the registry host.
        _ => match u.split_once('/') {
            Some((host, _)) if host.contains('.') || host.contains(':') => {
                format!("{host}/{HIDDEN}")
            }
            _ => HIDDEN.to_string(),
        },
    }
}

/// `job` as `who` may see it.
pub fn for_viewer(mut job: Job, who: &Principal) -> Job {
    if who.role == Role::Admin || job.user_id == Some(who.user_id) || !is_private(&job.args) {
        return job;
    }
    job.args.urls = job.args.urls.iter().map(|u| hide(u)).collect();
    job.args.image = hide(&job.args.image);
    // Errors quote the URLs they failed on.
    let hide_error = |e: &mut String| {
        if !e.is_empty() {
            *e = HIDDEN_ERROR.to_string();
        }
    };
    hide_error(&mut job.error);
    for r in &mut job.results {
        r.url = hide(&r.url);
        hide_error(&mut r.error);
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_signed_urls_make_a_job_private() {
        let plain = JobArgs {
            urls: vec!["https://cdn.example/model.bin?version=3".into()],
            ..Default::default()
        };
        assert!(!is_private(&plain));
        for args in [
            JobArgs {
                username: "ci".into(),
                ..Default::default()
            },
            JobArgs {
                headers: vec!["Authorization: <redacted>".into()],
                ..Default::default()
            },
            JobArgs {
                urls: vec![
                    "https://b.s3.amazonaws.com/k?X-Amz-Signature=ab&X-Amz-Credential=c".into(),
                ],
                ..Default::default()
            },
            JobArgs {
                urls: vec!["https://store/x?sig=abc".into()],
                ..Default::default()
            },
        ] {
            assert!(is_private(&args), "{args:?}");
        }
    }

    #[test]
    fn hidden_urls_keep_only_the_origin() {
        assert_eq!(
            hide("https://b.s3.amazonaws.com/secret/path?X-Amz-Signature=ab"),
            "https://b.s3.amazonaws.com/<private>"
        );
        assert_eq!(
            hide("registry.corp:5000/team/app:1"),
            "registry.corp:5000/<private>"
        );
        assert_eq!(hide("team/app:1"), "<private>");
        assert_eq!(hide(""), "");
    }
}
