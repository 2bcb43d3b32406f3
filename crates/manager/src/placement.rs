//! Which scheduler cluster serves a daemon.
//!
//! A daemon pinned to a cluster (`scheduler_cluster_id`) always gets that cluster. Otherwise
//! every cluster with at least one active scheduler is scored against the daemon by its
//! scopes, and the best wins:
//!
//! | scope            | matches when                                   | score            |
//! |------------------|------------------------------------------------|------------------|
//! | `cidrs`          | the daemon's IP is in one of the networks       | 4 + prefix/128   |
//! | `hostname_regex` | it matches the whole hostname                   | 3                |
//! | `idc`            | the daemon's IDC is one of the `|`-listed IDCs  | 2                |
//! | `location`       | shares leading `|`-separated parts               | 1 x share        |
//!
//! Networks weigh most because they are what an operator knows for certain about a host;
//! a longer prefix is a more deliberate choice. A cluster whose scopes name nothing the
//! daemon matches scores 0; with every score 0 the default cluster serves, and failing that
//! the oldest cluster that can serve at all.

use std::net::IpAddr;

use crate::store::clusters::SchedulerCluster;

/// What placement knows of a daemon.
pub struct Daemon<'a> {
    pub ip: Option<IpAddr>,
    pub hostname: &'a str,
    pub idc: &'a str,
    pub location: &'a str,
    pub pinned: Option<i64>,
}

/// How well `c`'s scopes match `d` (0: not at all).
pub fn score(c: &SchedulerCluster, d: &Daemon<'_>) -> f64 {
    let s = &c.scopes;
    let mut total = 0.0;
    if let Some(ip) = d.ip {
        let best = s
            .cidrs
            .iter()
            .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
            .filter(|n| n.contains(&ip))
            .map(|n| n.prefix_len())
            .max();
        if let Some(p) = best {
            total += 4.0 + f64::from(p) / 128.0;
        }
    }
    if !s.hostname_regex.is_empty() && !d.hostname.is_empty() {
        if let Ok(re) = crate::rest::validate::hostname_regex(&s.hostname_regex) {
            if re.is_match(d.hostname) {
                total += 3.0;
            }
        }
    }
    if !d.idc.is_empty() && s.idc.split('|').any(|i| i.trim() == d.idc) {
        total += 2.0;
    }
    if !s.location.is_empty() && !d.location.is_empty() {
        let want: Vec<&str> = s.location.split('|').collect();
        let shared = want
            .iter()
            .zip(d.location.split('|'))
            .take_while(|(a, b)| a.trim() == b.trim())
            .count();
        total += shared as f64 / want.len() as f64;
    }
    total
}

/// The cluster for `d` among `clusters` that `can_serve` (have an active scheduler).
pub fn choose(
    clusters: &[SchedulerCluster],
    d: &Daemon<'_>,
    can_serve: impl Fn(i64) -> bool,
) -> Option<i64> {
    if let Some(id) = d.pinned {
        return clusters.iter().find(|c| c.id == id).map(|c| c.id);
    }
    let serving: Vec<&SchedulerCluster> = clusters.iter().filter(|c| can_serve(c.id)).collect();
    let best = serving
        .iter()
        .map(|c| (score(c, d), *c))
        .filter(|(s, _)| *s > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.id.cmp(&a.1.id)));
    if let Some((_, c)) = best {
        return Some(c.id);
    }
    serving
        .iter()
        .find(|c| c.is_default)
        .or_else(|| serving.first())
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::clusters::{ClusterScopes, SchedulerClusterConfig};

    fn cluster(id: i64, scopes: ClusterScopes, is_default: bool) -> SchedulerCluster {
        SchedulerCluster {
            id,
            name: format!("c{id}"),
            bio: String::new(),
            scopes,
            config: SchedulerClusterConfig::default(),
            is_default,
            seed_peer_cluster_ids: vec![],
            created_at: 0,
            updated_at: 0,
        }
    }

    fn daemon<'a>(ip: &str, hostname: &'a str) -> Daemon<'a> {
        Daemon {
            ip: ip.parse().ok(),
            hostname,
            idc: "",
            location: "",
            pinned: None,
        }
    }

    fn all(_: i64) -> bool {
        true
    }

    #[test]
    fn networks_then_hostnames_decide_and_the_default_takes_the_rest() {
        let clusters = [
            cluster(1, ClusterScopes::default(), true),
            cluster(
                2,
                ClusterScopes {
                    cidrs: vec!["10.0.0.0/8".into()],
                    ..Default::default()
                },
                false,
            ),
            cluster(
                3,
                ClusterScopes {
                    cidrs: vec!["10.2.0.0/16".into()],
                    ..Default::default()
                },
                false,
            ),
            cluster(
                4,
                ClusterScopes {
                    hostname_regex: "gpu-[0-9]+".into(),
                    ..Default::default()
                },
                false,
            ),
        ];
        assert_eq!(choose(&clusters, &daemon("10.1.1.1", "x"), all), Some(2));
        assert_eq!(choose(&clusters, &daemon("10.2.1.1", "x"), all), Some(3));
        assert_eq!(
            choose(&clusters, &daemon("192.168.1.1", "gpu-7"), all),
            Some(4)
        );
        assert_eq!(
            choose(&clusters, &daemon("192.168.1.1", "cpu-7"), all),
            Some(1)
        );
        assert_eq!(
            choose(&clusters, &daemon("10.2.1.1", "x"), |id| id != 3),
            Some(2),
            "a cluster with no active scheduler serves nobody"
        );
        let mut pinned = daemon("10.2.1.1", "gpu-1");
        pinned.pinned = Some(1);
        assert_eq!(
            choose(&clusters, &pinned, |_| false),
            Some(1),
            "a pin always wins"
        );
        pinned.pinned = Some(99);
        assert_eq!(choose(&clusters, &pinned, all), None);
    }

    #[test]
    fn idc_and_location_break_ties() {
        let clusters = [
            cluster(
                1,
                ClusterScopes {
                    idc: "fra1|fra2".into(),
                    ..Default::default()
                },
                false,
            ),
            cluster(
                2,
                ClusterScopes {
                    location: "eu|ams".into(),
                    ..Default::default()
                },
                false,
            ),
        ];
        let mut d = daemon("", "");
        d.idc = "fra2";
        assert_eq!(choose(&clusters, &d, all), Some(1));
        d.idc = "";
        d.location = "eu|ams|rack4";
        assert_eq!(choose(&clusters, &d, all), Some(2));
        d.location = "us|nyc";
        assert_eq!(
            choose(&clusters, &d, all),
            Some(1),
            "no match: the oldest serves"
        );
    }
}
