//! Checks on what the API is asked to store, each with a message naming the field.

use super::error::ApiError;
use crate::store::clusters::{ClusterScopes, SchedulerClusterConfig};

/// Names of users, tokens and clusters: 1–64 of `A-Za-z0-9._-`, starting alphanumeric.
pub fn name(field: &str, v: &str) -> Result<(), ApiError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (got {v:?})"
        )))
    }
}

/// Free text (descriptions, emails): at most `max` characters.
/// The expiry (Unix seconds) of a token living `days` days from now (1-3650); none for one
/// that never expires.
pub fn expiry_in_days(days: Option<i64>) -> Result<Option<i64>, ApiError> {
    match days {
        None => Ok(None),
        Some(d) if (1..=3650).contains(&d) => Ok(Some(crate::db::now() + d * 86_400)),
        Some(_) => Err(ApiError::invalid(
            "expires_in_days must be between 1 and 3650",
        )),
    }
}

pub fn text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field} may have at most {max} characters"
        )));
    }
    Ok(())
}

/// Largest compiled size of a hostname pattern (keeps a hostile regex from eating memory).
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Compiles a scope's hostname pattern, anchored to the whole hostname.
pub fn hostname_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("scopes.hostname_regex is not a valid regular expression: {e}"))
}

pub fn scopes(s: &ClusterScopes) -> Result<(), ApiError> {
    if s.cidrs.len() > 256 {
        return Err(ApiError::invalid(
            "scopes.cidrs may list at most 256 networks",
        ));
    }
    for c in &s.cidrs {
        c.parse::<ipnet::IpNet>().map_err(|_| {
            ApiError::invalid(format!(
                "scopes.cidrs: {c:?} is not a network like 10.0.0.0/8 or fd00::/8"
            ))
        })?;
    }
    text("scopes.idc", &s.idc, 1024)?;
    text("scopes.location", &s.location, 1024)?;
    text("scopes.hostname_regex", &s.hostname_regex, 1024)?;
    if !s.hostname_regex.is_empty() {
        hostname_regex(&s.hostname_regex).map_err(ApiError::Invalid)?;
    }
    Ok(())
}

/// The scheduler evaluator's features (`pollen_scheduler::Weights::NAMES`; the manager does
/// not depend on the scheduler crate, so the list is repeated here).
pub const WEIGHT_NAMES: [&str; 8] = [
    "load",
    "pieces",
    "success",
    "speed",
    "host_type",
    "idc",
    "location",
    "proximity",
];

pub fn scheduler_config(c: &SchedulerClusterConfig) -> Result<(), ApiError> {
    if !(1..=64).contains(&c.candidate_parent_limit) {
        return Err(ApiError::invalid(
            "config.candidate_parent_limit must be between 1 and 64",
        ));
    }
    for (k, w) in &c.weights {
        if !WEIGHT_NAMES.contains(&k.as_str()) {
            return Err(ApiError::invalid(format!(
                "config.weights: unknown feature {k:?} (known: {})",
                WEIGHT_NAMES.join(", ")
            )));
        }
        if !w.is_finite() || *w < 0.0 {
            return Err(ApiError::invalid(format!(
                "config.weights.{k} must be a finite number >= 0"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_bounded() {
        assert!(name("name", "eu-west.1_a").is_ok());
        for bad in ["", "-x", "a b", "ä", &"a".repeat(65)] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_reject_bad_networks_and_patterns_with_the_field_named() {
        let mut s = ClusterScopes {
            cidrs: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            hostname_regex: "node-[0-9]+".into(),
            ..Default::default()
        };
        assert!(scopes(&s).is_ok());
        s.cidrs.push("10.0.0.0/33".into());
        assert!(scopes(&s).unwrap_err().to_string().contains("scopes.cidrs"));
        s.cidrs.pop();
        s.hostname_regex = "(".into();
        assert!(scopes(&s)
            .unwrap_err()
            .to_string()
            .contains("hostname_regex"));
        assert!(hostname_regex("node-[0-9]+").unwrap().is_match("node-12"));
        assert!(!hostname_regex("node-[0-9]+").unwrap().is_match("xnode-12"));
    }
}
