//! Which proxied URLs go through P2P and which CONNECT targets are intercepted, compiled once
//! from the config so a bad regex stops the daemon at start with a clear message.

use regex::Regex;

use crate::config::{ProxyConfig, ProxyRule};

/// What to do with a proxied URL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Relay untouched.
    Relay,
    /// Through P2P, fetching the origin at this URL.
    P2p(String),
}

struct Rule {
    re: Regex,
    spec: ProxyRule,
}

/// The compiled rules and intercept list.
pub(crate) struct Rules {
    rules: Vec<Rule>,
    intercept: Vec<Regex>,
    refuse_other_connect: bool,
}

fn compile(what: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("{what} {pattern:?} is not a valid regex: {e}"))
}

impl Rules {
    pub fn new(cfg: &ProxyConfig) -> Result<Self, String> {
        let rules = cfg
            .rules
            .iter()
            .map(|r| {
                if let Some(to) = &r.redirect {
                    if to.is_empty() || to.contains('/') {
                        return Err(format!(
                            "proxy rule {:?}: redirect {to:?} must be host[:port]",
                            r.regex
                        ));
                    }
                }
                Ok(Rule {
                    re: compile("proxy rule", &r.regex)?,
                    spec: r.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let intercept = cfg
            .intercept_hosts
            .iter()
            .map(|h| compile("proxy.intercept_hosts entry", h))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rules,
            intercept,
            refuse_other_connect: cfg.refuse_other_connect,
        })
    }

    /// The first matching rule's decision for `url`; relay when none matches.
    pub fn decide(&self, url: &str) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.re.is_match(url)) else {
            return Decision::Relay;
        };
        if rule.spec.direct {
            return Decision::Relay;
        }
        let Ok(mut u) = url::Url::parse(url) else {
            return Decision::Relay;
        };
        if rule.spec.use_tls && u.scheme() == "http" {
            let _ = u.set_scheme("https");
            if u.port() == Some(80) {
                let _ = u.set_port(None);
            }
        }
        if let Some(to) = &rule.spec.redirect {
            let (host, port) = match to.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()),
                _ => (to.as_str(), None),
            };
            if u.set_host(Some(host)).is_err() || u.set_port(port).is_err() {
                return Decision::Relay;
            }
        }
        Decision::P2p(u.to_string())
    }

    /// Whether a CONNECT to `target` (`host:port`) is intercepted.
    pub fn intercepts(&self, target: &str) -> bool {
        self.intercept.iter().any(|re| re.is_match(target))
    }

    /// Whether a CONNECT no intercept entry matches is refused rather than tunnelled.
    pub fn refuses_other_connect(&self) -> bool {
        self.refuse_other_connect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: Vec<ProxyRule>) -> Rules {
        Rules::new(&ProxyConfig {
            rules: list,
            intercept_hosts: vec![r"^files\.example:443$".into()],
            ..Default::default()
        })
        .expect("valid")
    }

    #[test]
    fn first_matching_rule_decides() {
        let r = rules(vec![
            ProxyRule {
                regex: r"/skip/".into(),
                direct: true,
                ..Default::default()
            },
            ProxyRule {
                regex: r"\.bin$".into(),
                ..Default::default()
            },
            ProxyRule {
                regex: r"^http://plain/".into(),
                use_tls: true,
                redirect: Some("mirror.local:8443".into()),
                ..Default::default()
            },
        ]);
        assert_eq!(r.decide("https://h/skip/a.bin"), Decision::Relay);
        assert_eq!(
            r.decide("https://h/a.bin"),
            Decision::P2p("https://h/a.bin".into())
        );
        assert_eq!(
            r.decide("http://plain/x"),
            Decision::P2p("https://mirror.local:8443/x".into())
        );
        assert_eq!(r.decide("https://h/a.txt"), Decision::Relay);
        assert!(r.intercepts("files.example:443"));
        assert!(!r.intercepts("other:443"));
    }

    #[test]
    fn bad_rules_are_refused_at_start() {
        let bad = ProxyConfig {
            rules: vec![ProxyRule {
                regex: "(".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(Rules::new(&bad).is_err());
        let bad = ProxyConfig {
            intercept_hosts: vec!["[".into()],
            ..Default::default()
        };
        assert!(Rules::new(&bad).is_err());
    }
}
