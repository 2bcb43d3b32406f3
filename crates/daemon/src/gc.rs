//! Garbage collection of the piece store, so a daemon's cache never fills its disk.
//!
//! Every `interval`: tasks unused for longer than `task_ttl` go; then, while the cache holds
//! more than `quota` bytes or the data directory's filesystem is fuller than
//! `disk_high_watermark` percent, the least recently used tasks go until it is under the quota
//! and `disk_low_watermark`. A task being downloaded is never evicted. Each round also re-reads
//! the complete tasks whose content file changed on disk, and drops those no longer intact
//! (`content_check::keep_complete`), so a tampered copy stops being announced and served. (A piece being uploaded
//! when its task goes still completes: its file stays open until the transfer ends.)

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use pollen_core::TaskId;
use pollen_storage::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::GcConfig;
use crate::download::conductor::Conductor;

/// What the planner needs to know of a task.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub id: TaskId,
    pub bytes: u64,
    pub last_access: u64,
}

/// The data directory's filesystem: bytes in use and its size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Disk {
    pub used: u64,
    pub total: u64,
}

fn disk_of(dir: &Path) -> Option<Disk> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = s.fragment_size();
    let total = s.blocks() * frag;
    let free = s.blocks_free() * frag;
    Some(Disk {
        used: total.saturating_sub(free),
        total,
    })
}

/// Which tasks to evict, oldest first.
pub(crate) fn plan(
    held: &[Held],
    busy: &HashSet<TaskId>,
    cfg: &GcConfig,
    now: u64,
    disk: Option<Disk>,
) -> Vec<TaskId> {
    let mut candidates: Vec<&Held> = held.iter().filter(|h| !busy.contains(&h.id)).collect();
    candidates.sort_by_key(|h| h.last_access);
    let ttl = cfg.task_ttl.as_secs();
    let mut evict: Vec<TaskId> = Vec::new();
    let mut freed = 0u64;
    let mut cached: u64 = held.iter().map(|h| h.bytes).sum();
    let mut rest = Vec::new();
    for h in candidates {
        if ttl > 0 && now.saturating_sub(h.last_access) > ttl {
            evict.push(h.id);
            freed += h.bytes;
            cached -= h.bytes;
        } else {
            rest.push(h);
        }
    }
    let over_quota = |cached: u64| cfg.quota > 0 && cached > cfg.quota;
    let used_after = |freed: u64| disk.map(|d| d.used.saturating_sub(freed));
    let pct = |used: u64| disk.map_or(0.0, |d| used as f64 * 100.0 / d.total.max(1) as f64);
    let disk_high = used_after(freed).is_some_and(|u| pct(u) > f64::from(cfg.disk_high_watermark));
    let mut disk_pressure = disk_high;
    for h in rest {
        let under_low =
            used_after(freed).is_none_or(|u| pct(u) <= f64::from(cfg.disk_low_watermark));
        if disk_pressure && under_low {
            disk_pressure = false;
        }
        if !over_quota(cached) && !disk_pressure {
            break;
        }
        evict.push(h.id);
        freed += h.bytes;
        cached -= h.bytes;
    }
    evict
}

/// Runs collection rounds until `shutdown`.
pub(crate) async fn run(
    store: Arc<Store>,
    conductor: Arc<Conductor>,
    cfg: GcConfig,
    data_dir: std::path::PathBuf,
    shutdown: CancellationToken,
) {
    if cfg.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for entry in store.tasks() {
            if !entry.is_complete()
                || entry.content_unchanged()
                || conductor.busy().contains(&entry.id)
            {
                continue;
            }
            if let Err(e) = crate::download::content_check::keep_complete(&store, entry).await {
                warn!(error = %pollen_core::error_kind::Chain(&e), "could not re-read a changed cached copy");
            }
        }
        let held: Vec<Held> = store
            .tasks()
            .into_iter()
            .map(|e| {
                let s = e.snapshot();
                Held {
                    id: e.id,
                    bytes: s.meta.content_length,
                    last_access: s.meta.last_access,
                }
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let evict = plan(&held, &conductor.busy(), &cfg, now, disk_of(&data_dir));
        for id in evict {
            // Checked again at the last moment: a download may have started meanwhile.
            if conductor.busy().contains(&id) {
                continue;
            }
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.remove_task(&id)).await {
                Ok(Ok(())) => {
                    conductor.task_dropped(id);
                    info!(task = %&id.hex()[..12], "evicted from the cache");
                }
                Ok(Err(e)) => {
                    warn!(task = %&id.hex()[..12], error = %pollen_core::error_kind::Chain(&e), "eviction failed");
                }
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn held(n: u8, bytes: u64, last_access: u64) -> Held {
        Held {
            id: TaskId([n; 32]),
            bytes,
            last_access,
        }
    }

    fn cfg() -> GcConfig {
        GcConfig {
            interval: Duration::from_secs(60),
            task_ttl: Duration::from_secs(100),
            quota: 0,
            disk_high_watermark: 90,
            disk_low_watermark: 80,
        }
    }

    #[test]
    fn expired_tasks_go_unless_busy() {
        let h = [held(1, 10, 0), held(2, 10, 950), held(3, 10, 10)];
        let busy: HashSet<TaskId> = [TaskId([3; 32])].into();
        assert_eq!(plan(&h, &busy, &cfg(), 1000, None), vec![TaskId([1; 32])]);
    }

    #[test]
    fn over_quota_the_least_recently_used_go_first() {
        let c = GcConfig {
            quota: 25,
            task_ttl: Duration::ZERO,
            ..cfg()
        };
        let h = [held(1, 10, 30), held(2, 10, 10), held(3, 10, 20)];
        assert_eq!(
            plan(&h, &HashSet::new(), &c, 1000, None),
            vec![TaskId([2; 32])]
        );
        let busy: HashSet<TaskId> = [TaskId([2; 32])].into();
        assert_eq!(plan(&h, &busy, &c, 1000, None), vec![TaskId([3; 32])]);
    }

    #[test]
    fn a_full_disk_is_drained_to_the_low_watermark() {
        let c = GcConfig {
            task_ttl: Duration::ZERO,
            ..cfg()
        };
        let h = [held(1, 100, 1), held(2, 100, 2), held(3, 100, 3)];
        // 85% in use: under the high watermark, nothing to do.
        let calm = Disk {
            used: 850,
            total: 1000,
        };
        assert!(plan(&h, &HashSet::new(), &c, 10, Some(calm)).is_empty());
        // 95% in use: evict until at most 80% (two tasks: 950 → 850 → 750).
        let full = Disk {
            used: 950,
            total: 1000,
        };
        assert_eq!(
            plan(&h, &HashSet::new(), &c, 10, Some(full)),
            vec![TaskId([1; 32]), TaskId([2; 32])]
        );
    }
}
