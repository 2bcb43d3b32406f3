//! Which request headers carry credentials. A download sent with any of them is private (see
//! `task_id`): its copy is shared only among callers of the same upstream.

/// Whether a header named `name` carries credentials: `Authorization`, `Proxy-Authorization`,
/// `Cookie`, or a name that says token, secret, password, API key or auth
/// (`X-Auth-Token`, `Private-Token`, `X-Api-Key`, `X-Amz-Security-Token` …).
pub fn is_credential_header(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["token", "secret", "password", "api-key", "apikey", "auth"]
        .iter()
        .any(|w| n.contains(w))
}

/// Whether any of `names` carries credentials.
pub fn any_credentials<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    names.into_iter().any(is_credential_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_told_from_other_headers() {
        for n in [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "X-Auth-Token",
            "PRIVATE-TOKEN",
            "x-api-key",
            "X-Amz-Security-Token",
        ] {
            assert!(is_credential_header(n), "{n}");
        }
        for n in [
            "Accept",
            "Range",
            "User-Agent",
            "X-Request-Id",
            "Content-Type",
        ] {
            assert!(!is_credential_header(n), "{n}");
        }
        assert!(any_credentials(["Accept", "authorization"]));
        assert!(!any_credentials(["Accept"]));
    }
}
