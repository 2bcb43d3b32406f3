//! The origin guard: which addresses a fetch may connect to.
//!
//! A URL handed to a daemon may come from another host: the scheduler relays a peer's task to a
//! seed, the manager sends preheat jobs, a container asks the proxy. Without a guard such a URL
//! reaches what only this node can reach: the cloud metadata service (169.254.169.254 hands out
//! the instance's credentials), other link-local services, and this node's own loopback
//! services. The guard checks every address a fetch would connect to before any connection is
//! tried: an IP literal in the URL or in any redirect, and every address a host name resolves
//! to (the resolver of every guarded client filters them, so a name that resolves to a
//! refused address, or a redirect to one, is refused too).
//!
//! Two levels, chosen by who ordered the fetch:
//! - [`OriginPolicy::LocalUser`] (a local `pollen get`, a local container through the proxy):
//!   cloud metadata and link-local addresses are refused. Loopback is allowed: the user can
//!   reach it anyway.
//! - [`OriginPolicy::Fleet`] (a seed peer, a download ordered by the scheduler or the manager):
//!   also loopback, unspecified and this node's own interface addresses.
//!
//! An allow-list (`origin_allow`, addresses or CIDR networks) lifts every rule for the
//! addresses it names; the demo and tests allow-list their loopback origins.
//!
//! Non-goals: private-range (RFC 1918) addresses are allowed, since internal registries and
//! object stores live there; an egress proxy set by `HTTPS_PROXY` resolves names itself, so
//! through one only IP literals are checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Who ordered a fetch, which decides how strict the guard is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OriginPolicy {
    /// A user of this node (local API, proxy): metadata and link-local addresses refused.
    LocalUser,
    /// Another host (scheduler, manager) or any fetch of a seed: also loopback, unspecified and
    /// this node's own addresses.
    Fleet,
}

impl OriginPolicy {
    /// The policy of a fetch: the fleet rules on a seed peer (whoever asked: a seed's task
    /// URLs come from other hosts) and for any download another host ordered; the local
    /// user's otherwise.
    pub fn of(seed: bool, ordered_by_fleet: bool) -> Self {
        if seed || ordered_by_fleet {
            OriginPolicy::Fleet
        } else {
            OriginPolicy::LocalUser
        }
    }
}

/// The rule that refused an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardRule {
    /// A cloud provider's instance metadata service.
    CloudMetadata,
    /// A link-local address (169.254.0.0/16, fe80::/10).
    LinkLocal,
    /// A loopback address (127.0.0.0/8, ::1), under the fleet policy.
    Loopback,
    /// An unspecified address (0.0.0.0/8, ::), which reaches this node, under the fleet policy.
    Unspecified,
    /// One of this node's own interface addresses, under the fleet policy.
    OwnAddress,
}

impl GuardRule {
    fn describe(self) -> &'static str {
        match self {
            GuardRule::CloudMetadata => "a cloud metadata service address",
            GuardRule::LinkLocal => "a link-local address",
            GuardRule::Loopback => "a loopback address, refused for seed peers and for downloads another host ordered",
            GuardRule::Unspecified => "an unspecified address (it reaches this node), refused for seed peers and for downloads another host ordered",
            GuardRule::OwnAddress => "one of this node's own addresses, refused for seed peers and for downloads another host ordered",
        }
    }
}

/// An address the guard refused, with the rule that refused it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("origin guard refused {host} ({addr}): it is {}; list it in origin_allow (--origin-allow {addr}) to allow it", rule.describe())]
pub struct GuardRefusal {
    /// The host as the URL named it.
    pub host: String,
    /// The address refused.
    pub addr: IpAddr,
    /// Why.
    pub rule: GuardRule,
}

/// An allow-list entry that is neither an address nor a CIDR network.
#[derive(Debug, thiserror::Error)]
#[error("origin_allow entry {0:?} is not an IP address or a CIDR network (e.g. 127.0.0.1 or 10.0.0.0/8)")]
pub struct BadAllowEntry(pub String);

/// Well-known instance metadata addresses outside the link-local range (those inside it are
/// refused as link-local anyway, but named as metadata in the refusal).
const METADATA: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)), // AWS, GCP, Azure, OCI, OpenStack
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),   // AWS ECS task credentials
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)), // Alibaba Cloud
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),   // Azure wire server
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)), // AWS over IPv6
];

/// The guard: the allow-list, and the rules of each policy.
#[derive(Clone, Debug, Default)]
pub struct OriginGuard {
    allow: Arc<Vec<IpNet>>,
}

impl OriginGuard {
    /// A guard that lets the listed addresses and networks through whatever the rules say.
    pub fn new(allow: &[String]) -> Result<Self, BadAllowEntry> {
        let nets = allow
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadAllowEntry(s.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allow: Arc::new(nets),
        })
    }

    /// Checks one address that `host` stands for.
    pub fn check(
        &self,
        host: &str,
        addr: IpAddr,
        policy: OriginPolicy,
    ) -> Result<(), GuardRefusal> {
        let addr = addr.to_canonical();
        if self.allow.iter().any(|n| n.contains(&addr)) {
            return Ok(());
        }
        let refuse = |rule| {
            Err(GuardRefusal {
                host: host.to_string(),
                addr,
                rule,
            })
        };
        if METADATA.contains(&addr) {
            return refuse(GuardRule::CloudMetadata);
        }
        if is_link_local(addr) {
            return refuse(GuardRule::LinkLocal);
        }
        if policy == OriginPolicy::LocalUser {
            return Ok(());
        }
        if addr.is_loopback() {
            return refuse(GuardRule::Loopback);
        }
        if is_unspecified(addr) {
            return refuse(GuardRule::Unspecified);
        }
        if own_addresses().contains(&addr) {
            return refuse(GuardRule::OwnAddress);
        }
        Ok(())
    }

    /// Checks the host of a URL when it is an IP literal (names are checked when resolved).
    pub fn check_url(&self, url: &url::Url, policy: OriginPolicy) -> Result<(), GuardRefusal> {
        let addr = match url.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
            _ => return Ok(()),
        };
        self.check(&addr.to_string(), addr, policy)
    }

    /// Keeps the resolved addresses of `host` that pass; refuses when none does.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
        policy: OriginPolicy,
    ) -> Result<Vec<SocketAddr>, GuardRefusal> {
        let mut kept = Vec::new();
        let mut first_refusal = None;
        for a in addrs {
            match self.check(host, a.ip(), policy) {
                Ok(()) => kept.push(a),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match first_refusal {
            // A name that resolves to a refused address among good ones is a rebinding trick
            // or a misconfiguration; refusing it whole is the safe reading.
            Some(r) => Err(r),
            None => Ok(kept),
        }
    }
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_unspecified(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.octets()[0] == 0,
        IpAddr::V6(a) => a.is_unspecified(),
    }
}

/// This node's interface addresses, read afresh (interfaces come and go).
fn own_addresses() -> Vec<IpAddr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    ifaddrs
        .filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Why [`OriginGuard::resolve`] found no address to dial.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name did not resolve.
    #[error("{0}")]
    Lookup(std::io::Error),
    /// The guard refused what it resolved to.
    #[error(transparent)]
    Refused(GuardRefusal),
}

impl OriginGuard {
    /// Resolves `host:port` and keeps what the guard lets through (for dialling a raw TCP
    /// target, such as a proxy tunnel's).
    pub async fn resolve(
        &self,
        target: &str,
        policy: OriginPolicy,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let host = target
            .rsplit_once(':')
            .map_or(target, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let addrs = tokio::net::lookup_host(target)
            .await
            .map_err(ResolveError::Lookup)?;
        let kept = self
            .filter(host, addrs, policy)
            .map_err(ResolveError::Refused)?;
        if kept.is_empty() {
            return Err(ResolveError::Lookup(std::io::Error::other(
                "the name resolved to no address",
            )));
        }
        Ok(kept)
    }
}

/// A reqwest resolver that resolves with the system and drops what the guard refuses.
#[derive(Clone, Debug)]
pub(crate) struct GuardedResolver {
    pub guard: OriginGuard,
    pub policy: OriginPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = this.guard.filter(&host, addrs, this.policy)?;
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The guard's refusal somewhere in an error's chain, if it is there.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a GuardRefusal> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<GuardRefusal>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn metadata_and_link_local_are_refused_for_everyone() {
        let g = OriginGuard::default();
        for p in [OriginPolicy::LocalUser, OriginPolicy::Fleet] {
            let r = g.check("h", ip("169.254.169.254"), p).unwrap_err();
            assert_eq!(r.rule, GuardRule::CloudMetadata);
            assert_eq!(
                g.check("h", ip("::ffff:169.254.169.254"), p)
                    .unwrap_err()
                    .rule,
                GuardRule::CloudMetadata,
                "an IPv4-mapped IPv6 address is the IPv4 address"
            );
            assert_eq!(
                g.check("h", ip("fd00:ec2::254"), p).unwrap_err().rule,
                GuardRule::CloudMetadata
            );
            assert_eq!(
                g.check("h", ip("169.254.1.2"), p).unwrap_err().rule,
                GuardRule::LinkLocal
            );
            assert_eq!(
                g.check("h", ip("fe80::1"), p).unwrap_err().rule,
                GuardRule::LinkLocal
            );
            assert!(g.check("h", ip("10.1.2.3"), p).is_ok());
            assert!(g.check("h", ip("93.184.216.34"), p).is_ok());
        }
    }

    #[test]
    fn loopback_and_own_addresses_are_refused_only_under_the_fleet_policy() {
        let g = OriginGuard::default();
        assert!(g
            .check("h", ip("127.0.0.1"), OriginPolicy::LocalUser)
            .is_ok());
        assert_eq!(
            g.check("h", ip("127.0.0.2"), OriginPolicy::Fleet)
                .unwrap_err()
                .rule,
            GuardRule::Loopback
        );
        assert_eq!(
            g.check("h", ip("::1"), OriginPolicy::Fleet)
                .unwrap_err()
                .rule,
            GuardRule::Loopback
        );
        assert_eq!(
            g.check("h", ip("0.0.0.0"), OriginPolicy::Fleet)
                .unwrap_err()
                .rule,
            GuardRule::Unspecified
        );
        if let Some(own) = own_addresses()
            .into_iter()
            .find(|a| !a.is_loopback() && !is_link_local(*a))
        {
            assert_eq!(
                g.check("h", own, OriginPolicy::Fleet).unwrap_err().rule,
                GuardRule::OwnAddress
            );
            assert!(g.check("h", own, OriginPolicy::LocalUser).is_ok());
        }
    }

    #[test]
    fn a_seed_or_a_fleet_order_gets_the_fleet_rules() {
        assert_eq!(OriginPolicy::of(false, false), OriginPolicy::LocalUser);
        assert_eq!(OriginPolicy::of(true, false), OriginPolicy::Fleet);
        assert_eq!(OriginPolicy::of(false, true), OriginPolicy::Fleet);
    }

    #[test]
    fn the_allow_list_lifts_every_rule_for_what_it_names_only() {
        let g =
            OriginGuard::new(&["127.0.0.1".into(), "169.254.169.254/32".into()]).expect("valid");
        assert!(g.check("h", ip("127.0.0.1"), OriginPolicy::Fleet).is_ok());
        assert!(g.check("h", ip("127.0.0.2"), OriginPolicy::Fleet).is_err());
        assert!(g
            .check("h", ip("169.254.169.254"), OriginPolicy::Fleet)
            .is_ok());
        assert!(g
            .check("h", ip("169.254.169.253"), OriginPolicy::Fleet)
            .is_err());
        assert!(OriginGuard::new(&["not-an-ip".into()]).is_err());
    }

    #[test]
    fn a_name_resolving_to_any_refused_address_is_refused_whole() {
        let g = OriginGuard::default();
        let addrs: Vec<SocketAddr> = vec![
            "93.184.216.34:80".parse().unwrap(),
            "169.254.169.254:80".parse().unwrap(),
        ];
        let r = g
            .filter("rebind.example", addrs, OriginPolicy::LocalUser)
            .unwrap_err();
        assert_eq!(r.host, "rebind.example");
        assert!(
            r.to_string().contains("cloud metadata")
                && r.to_string().contains("--origin-allow 169.254.169.254")
        );
    }

    #[test]
    fn url_literals_are_checked_and_names_left_to_the_resolver() {
        let g = OriginGuard::default();
        let u = |s: &str| url::Url::parse(s).expect("test url");
        assert!(g
            .check_url(
                &u("http://169.254.169.254/latest/meta-data/"),
                OriginPolicy::LocalUser
            )
            .is_err());
        assert!(g
            .check_url(&u("http://[::ffff:a9fe:a9fe]/"), OriginPolicy::LocalUser)
            .is_err());
        assert!(g
            .check_url(&u("http://[::1]:8080/"), OriginPolicy::Fleet)
            .is_err());
        assert!(g
            .check_url(&u("http://metadata.google.internal/"), OriginPolicy::Fleet)
            .is_ok());
    }
}
