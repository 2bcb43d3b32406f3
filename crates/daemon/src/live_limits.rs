//! The host's limits that its cluster's config may change while the daemon runs (dynamic
//! config from the manager): the three byte rates, and for a seed peer the upload connection
//! cap its seed-peer cluster's `load_limit` sets.
//!
//! The daemon's own settings (flags, config file) stand until the cluster sets a limit; a
//! limit the cluster stops setting falls back to the daemon's own. The limiters and the
//! upload server's places are the ones transfers already hold, so a new rate applies to
//! transfers in progress and a new cap to the next connection.

use std::sync::Arc;

use pollen_core::places::Places;
use pollen_core::RateLimiter;
use serde::{Deserialize, Serialize};
use tracing::info;

/// Limits a cluster sets: rates in bytes per second (0: unlimited), the upload connection
/// cap; `None`: the daemon's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ClusterLimits {
    pub upload_rate_limit: Option<u64>,
    pub download_rate_limit: Option<u64>,
    pub back_to_source_rate_limit: Option<u64>,
    pub max_upload_connections: Option<u32>,
}

impl From<pollen_proto::manager::PeerConfig> for ClusterLimits {
    fn from(c: pollen_proto::manager::PeerConfig) -> Self {
        Self {
            upload_rate_limit: c.upload_rate_limit,
            download_rate_limit: c.download_rate_limit,
            back_to_source_rate_limit: c.back_to_source_rate_limit,
            max_upload_connections: c.max_upload_connections,
        }
    }
}

/// One limit: the limiter transfers share and the daemon's own rate (0: unlimited).
struct Limit {
    limiter: RateLimiter,
    own: u64,
}

impl Limit {
    fn set(&self, cluster: Option<u64>) {
        self.limiter.set_rate(Some(cluster.unwrap_or(self.own)));
    }

    fn rate(&self) -> u64 {
        self.limiter.rate().unwrap_or(0)
    }
}

pub(crate) struct LiveLimits {
    upload: Limit,
    download: Limit,
    back_to_source: Limit,
    /// The upload server's places and the daemon's own cap.
    connections: (Arc<Places>, usize),
}

/// The limits in force: rates in bytes per second (0: unlimited), the upload connection cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InForce {
    pub upload: u64,
    pub download: u64,
    pub back_to_source: u64,
    pub upload_connections: usize,
}

impl LiveLimits {
    /// The limiters transfers use and the upload server's places, with the daemon's own
    /// rates and cap.
    pub fn new(
        (upload, own_upload): (RateLimiter, u64),
        (download, own_download): (RateLimiter, u64),
        (back_to_source, own_back_to_source): (RateLimiter, u64),
        connections: (Arc<Places>, usize),
    ) -> Self {
        Self {
            connections,
            upload: Limit {
                limiter: upload,
                own: own_upload,
            },
            download: Limit {
                limiter: download,
                own: own_download,
            },
            back_to_source: Limit {
                limiter: back_to_source,
                own: own_back_to_source,
            },
        }
    }

    /// Applies a cluster's limits (each `None` restores the daemon's own).
    pub fn apply(&self, c: &ClusterLimits) {
        let before = self.in_force();
        self.upload.set(c.upload_rate_limit);
        self.download.set(c.download_rate_limit);
        self.back_to_source.set(c.back_to_source_rate_limit);
        let (places, own) = &self.connections;
        places.set_cap(c.max_upload_connections.map_or(*own, |n| n as usize));
        let now = self.in_force();
        if now != before {
            info!(
                upload = now.upload,
                download = now.download,
                back_to_source = now.back_to_source,
                upload_connections = now.upload_connections,
                "limits from the cluster's config (bytes/s, 0: unlimited; connections at once)"
            );
        }
    }

    /// The limits in force now.
    pub fn in_force(&self) -> InForce {
        InForce {
            upload: self.upload.rate(),
            download: self.download.rate(),
            back_to_source: self.back_to_source.rate(),
            upload_connections: self.connections.0.cap(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_limit_overrides_the_daemons_own_until_it_is_withdrawn() {
        let upload = RateLimiter::new(Some(1000));
        let places = Arc::new(Places::new(64));
        let l = LiveLimits::new(
            (upload.clone(), 1000),
            (RateLimiter::unlimited(), 0),
            (RateLimiter::unlimited(), 0),
            (places.clone(), 64),
        );
        l.apply(&ClusterLimits {
            upload_rate_limit: Some(5000),
            download_rate_limit: Some(0),
            back_to_source_rate_limit: Some(7000),
            max_upload_connections: Some(3),
        });
        assert_eq!(
            upload.rate(),
            Some(5000),
            "transfers holding it see the new rate"
        );
        assert_eq!(
            places.cap(),
            3,
            "the upload server's places follow the cluster"
        );
        assert_eq!(
            l.in_force(),
            InForce {
                upload: 5000,
                download: 0,
                back_to_source: 7000,
                upload_connections: 3,
            }
        );
        l.apply(&ClusterLimits::default());
        assert_eq!(
            l.in_force(),
            InForce {
                upload: 1000,
                download: 0,
                back_to_source: 0,
                upload_connections: 64,
            }
        );
    }
}
