//! Scheduler configuration: typed, with documented defaults, readable from TOML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::evaluator::EvaluatorConfig;

/// Scheduler settings. Every field has a default, so an empty TOML file works.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Parent selection (`[evaluator]` and `[evaluator.weights]` tables).
    pub evaluator: EvaluatorConfig,
    /// How long peers wait for a triggered seed before another seed is tried or they go to
    /// the origin. Default 30s.
    #[serde(with = "pollen_core::duration::humane")]
    pub seed_patience: Duration,
    /// A host that sent no load report for this long is considered gone: its peers stop
    /// being offered as parents and are forgotten. Default 60s.
    #[serde(with = "pollen_core::duration::humane")]
    pub host_ttl: Duration,
    /// A task with no peer activity for this long is forgotten, with its peers. Default 1h
    /// (finished peers stay offerable as parents meanwhile).
    #[serde(with = "pollen_core::duration::humane")]
    pub task_ttl: Duration,
    /// How often quiet hosts and tasks are collected. Default 10s.
    #[serde(with = "pollen_core::duration::humane")]
    pub gc_interval: Duration,
    /// Most daemon connections at once (each daemon keeps one); more wait to be accepted.
    /// Default 10000.
    pub max_connections: usize,
    /// A new connection must send the HTTP/2 preface (or, with TLS, finish its handshake)
    /// within this long, or it is closed. Default 10s.
    #[serde(with = "pollen_core::duration::humane")]
    pub connection_setup_timeout: Duration,
    /// Longest task content accepted from a peer reading the origin, in bytes; a longer
    /// report is refused (every peer of the task would allocate it). Default 4 TiB.
    pub max_content_length: u64,
    /// Most pieces a task may have (at most 65536). Default 65536.
    pub max_pieces: u32,
    /// A host reported for bad data (slices or hashes that failed verification) by this many
    /// other hosts, over any tasks, within `host_block_duration`, is offered to nobody as a
    /// parent for `host_block_duration`. More than one reporter is needed, so one lying
    /// peer cannot get an honest host blocked fleet-wide (it blocks the parent for its own
    /// downloads only). 0 turns it off. Default 2.
    pub host_block_reporters: u32,
    /// How long a bad-data report counts, and how long a blocked host stays blocked.
    /// Default 10m.
    #[serde(with = "pollen_core::duration::humane")]
    pub host_block_duration: Duration,
    /// How long an upload grant for a private task lasts (see `pollen_core::grant`): a child
    /// shows it to each parent when it connects, and is sent a fresh one with every offer of
    /// parents. Default 5m.
    #[serde(with = "pollen_core::duration::humane")]
    pub upload_grant_ttl: Duration,
    /// Most peers (downloads, one per task) one host may have registered at once; a register
    /// past it is refused with RESOURCE_EXHAUSTED and the daemon fetches that task from the
    /// origin. It bounds what one host can make the scheduler hold, and how many tasks (each
    /// of which may trigger a seed) it can open at once. 0 is no cap. Default 4096.
    pub max_peers_per_host: u32,
    /// Let any plain-TCP daemon claim to be a seed, without a join token: only for networks
    /// whose hosts are all trusted (the scheduler says so when it starts). Under mutual TLS
    /// the seed role in the certificate is still needed. Default false.
    pub open_join: bool,
    /// Under mutual TLS, refuse a host whose certificate does not name its host id
    /// (`urn:pollen:host:ID`, `pollen certs issue --host-id`), so that no daemon can speak
    /// for another. Without it, a host id proven once by a certificate is still reserved to
    /// that certificate. Default false.
    pub require_host_certificates: bool,
    /// Mutual TLS (`[tls]` table: `ca_cert`, `cert`, `key`): with it, only daemons presenting
    /// a certificate signed by `ca_cert` can connect. Default: off (plain gRPC).
    pub tls: Option<pollen_tls::TlsConfig>,
}

impl SchedulerConfig {
    /// The caps on what one task may make peers allocate.
    pub fn caps(&self) -> crate::task_facts::Caps {
        crate::task_facts::Caps {
            max_content_length: self.max_content_length,
            max_pieces: self.max_pieces,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            evaluator: EvaluatorConfig::default(),
            seed_patience: Duration::from_secs(30),
            host_ttl: Duration::from_secs(60),
            task_ttl: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(10),
            max_connections: 10_000,
            connection_setup_timeout: Duration::from_secs(10),
            max_content_length: 4 << 40,
            max_pieces: crate::piece_set::MAX_PIECES,
            max_peers_per_host: 4096,
            open_join: false,
            require_host_certificates: false,
            host_block_reporters: 2,
            host_block_duration: Duration::from_secs(600),
            upload_grant_ttl: Duration::from_secs(300),
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_unknown_keys_are_refused() {
        let c: SchedulerConfig = toml::from_str(
            "seed_patience = \"5s\"\n[evaluator]\ncandidate_limit = 4\n[evaluator.weights]\nidc = 0.5\n",
        )
        .expect("valid");
        assert_eq!(c.seed_patience, Duration::from_secs(5));
        assert_eq!(c.evaluator.candidate_limit, 4);
        assert_eq!(c.evaluator.weights.idc, 0.5);
        assert_eq!(c.evaluator.weights.load, 0.40);
        assert!(toml::from_str::<SchedulerConfig>("[evaluator]\nk = 3").is_err());
    }
}
