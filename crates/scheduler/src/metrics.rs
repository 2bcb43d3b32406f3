//! The scheduler's Prometheus metrics (OpenMetrics text, `pollen scheduler
//! --metrics-listen`): what it refused and why, the hosts it blocked, the grants it signed,
//! the peers it sent to the origin, and what it holds. Labels are bounded enums, never a
//! host, task or URL.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// A seed claim without the seed role or a live seed join token.
    SeedClaim,
    /// A host id spoken for over a connection whose certificate does not prove it.
    HostBinding,
    /// A host session under a live session's host id, from elsewhere.
    Takeover,
    /// A register naming a host whose session came from another address.
    RegisterOrigin,
    /// A register past `max_peers_per_host`.
    PeerCap,
    /// A malformed register (no task, a task id that is not its request's).
    BadRegister,
    /// A load report for a host without a session, or from another address.
    LoadReport,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeedClaim => "seed_claim",
            Self::HostBinding => "host_binding",
            Self::Takeover => "takeover",
            Self::RegisterOrigin => "register_origin",
            Self::PeerCap => "peer_cap",
            Self::BadRegister => "bad_register",
            Self::LoadReport => "load_report",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(e, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

/// The scheduler's counters and gauges.
pub struct SchedulerMetrics {
    registry: Registry,
    refusals: Family<RefusalLabels, Counter>,
    /// Hosts blocked fleet-wide for bad data.
    pub hosts_blocked: Counter,
    /// Upload grants signed for private tasks.
    pub grants: Counter,
    /// Peers sent to the origin.
    pub back_to_source: Counter,
    /// Peers registered.
    pub registers: Counter,
    tasks: Gauge,
    hosts: Gauge,
    blocked_now: Gauge,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pollen_scheduler");
        let m = Self {
            refusals: Family::default(),
            hosts_blocked: Counter::default(),
            grants: Counter::default(),
            back_to_source: Counter::default(),
            registers: Counter::default(),
            tasks: Gauge::default(),
            hosts: Gauge::default(),
            blocked_now: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "refusals",
            "Requests refused, by reason",
            m.refusals.clone(),
        );
        for (name, help, counter) in [
            (
                "hosts_blocked",
                "Hosts blocked fleet-wide after bad data reported by other hosts",
                &m.hosts_blocked,
            ),
            (
                "upload_grants",
                "Upload grants signed for private tasks",
                &m.grants,
            ),
            (
                "back_to_source",
                "Peers sent to read the origin",
                &m.back_to_source,
            ),
            ("registers", "Peers registered", &m.registers),
        ] {
            registry.register(name, help, counter.clone());
        }
        for (name, help, gauge) in [
            ("tasks", "Tasks held", &m.tasks),
            ("hosts", "Hosts with an open session", &m.hosts),
            (
                "blocked_hosts",
                "Hosts blocked fleet-wide now",
                &m.blocked_now,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        Self { registry, ..m }
    }
}

impl SchedulerMetrics {
    /// Counts a refusal.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Refusals counted for `reason` so far.
    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refusals.get_or_create(&RefusalLabels { reason }).get()
    }

    /// The OpenMetrics text, with the gauges set to `tasks`, `hosts` and `blocked`.
    pub fn render(&self, tasks: usize, hosts: usize, blocked: usize) -> String {
        self.tasks.set(tasks as i64);
        self.hosts.set(hosts as i64);
        self.blocked_now.set(blocked as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_reason_and_rendered() {
        let m = SchedulerMetrics::default();
        m.refused(Refusal::SeedClaim);
        m.refused(Refusal::SeedClaim);
        m.refused(Refusal::PeerCap);
        m.grants.inc();
        assert_eq!(m.refusals(Refusal::SeedClaim), 2);
        let text = m.render(3, 2, 1);
        assert!(
            text.contains("pollen_scheduler_refusals_total{reason=\"seed_claim\"} 2"),
            "{text}"
        );
        assert!(text.contains("pollen_scheduler_refusals_total{reason=\"peer_cap\"} 1"));
        assert!(text.contains("pollen_scheduler_upload_grants_total 1"));
        assert!(text.contains("pollen_scheduler_tasks 3"));
        assert!(text.contains("pollen_scheduler_blocked_hosts 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
