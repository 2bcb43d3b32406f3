//! Host sessions: opening and closing them, who may speak for a host id (certificates, the
//! address a session came from, seed claims), load reports, and hosts blocked fleet-wide for
//! bad data.

use std::net::IpAddr;
use std::time::Instant;

use pollen_proto::scheduler::{HostInfo, HostLoad};
use tonic::Status;
use tracing::{info, warn};

use super::{Core, TAKEOVER_QUIET};
use crate::model::{Host, HostTx, Load};

impl Core {
    /// Records an open host session; returns its session number.
    pub fn open_host(&mut self, info: HostInfo, ip: IpAddr, commands: HostTx) -> u64 {
        self.model.next_session += 1;
        let session = self.model.next_session;
        info!(host = %info.host_id, %ip, port = info.upload_port, seed = info.seed, "host session opened");
        if info.seed {
            self.model.seed_hosts.insert(info.host_id.clone());
            self.model.seed_epoch += 1;
        } else {
            self.model.seed_hosts.remove(&info.host_id);
        }
        let known = self.model.hosts.contains_key(&info.host_id);
        let host_id = info.host_id.clone();
        let slot = self.model.hosts.insert(
            &host_id,
            Host {
                info,
                ip,
                session,
                commands,
                children: 0,
                load: Load::default(),
                session_from: None,
                blocked_until: self.blocked_hosts.get(&host_id).copied(),
                last_heard: Instant::now(),
            },
        );
        if !known {
            // Peers that registered before their host's session get its slot now.
            for task in self.model.tasks.values_mut() {
                for p in task.peers.values_mut() {
                    if p.host.is_none() && p.host_id == host_id {
                        p.host = Some(slot);
                    }
                }
            }
        }
        session
    }

    /// Forgets a host whose session `session` ended, with all its peers.
    pub fn close_host(&mut self, host_id: &str, session: u64) {
        if self.model.hosts.get(host_id).map(|h| h.session) != Some(session) {
            return;
        }
        self.model.hosts.remove(host_id);
        self.model.seed_hosts.remove(host_id);
        let mut doomed: Vec<(String, String)> = self
            .model
            .tasks
            .iter()
            .flat_map(|(tid, t)| {
                t.order
                    .iter()
                    .filter_map(|&slot| t.peers.at(slot))
                    .filter(|p| p.host_id == host_id)
                    .map(|p| (tid.clone(), p.id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        doomed.sort();
        info!(
            host = host_id,
            peers = doomed.len(),
            "host session ended; forgetting its peers"
        );
        for (tid, pid) in doomed {
            self.remove_peer(&tid, &pid, "its host left");
        }
        // A seed triggered for a task but gone before its peer registered leaves the task's
        // peers waiting for nothing: find them another source now, not after seed_patience.
        let orphaned: Vec<String> = self
            .seeds_tried
            .iter()
            .filter(|(_, tried)| tried.hosts.contains(host_id))
            .map(|(tid, _)| tid.clone())
            .filter(|tid| {
                self.model.tasks.get(tid).is_some_and(|t| {
                    t.seed_triggered.is_some() && !t.peers.values().any(|p| p.host_id == host_id)
                })
            })
            .collect();
        for tid in orphaned {
            if let Some(t) = self.model.tasks.get_mut(&tid) {
                t.seed_triggered = None;
            }
            self.ensure_source(&tid);
            let waiting = self
                .model
                .tasks
                .get(&tid)
                .map(|t| t.waiting())
                .unwrap_or_default();
            for w in waiting {
                self.schedule(&tid, &w);
            }
        }
    }

    /// Refuses a host session for `host_id` from `from` while that id has a live session
    /// from another address (one heard from within [`TAKEOVER_QUIET`] of `now`): without
    /// per-host certificates a host id is only a name, and a host that named another's id
    /// would take over its scheduling entry. A daemon reconnecting from its own address, or
    /// one whose old session went quiet (it moved, or died without closing), is let in.
    pub fn check_takeover(
        &self,
        host_id: &str,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Status> {
        let Some(h) = self.model.hosts.get(host_id) else {
            return Ok(());
        };
        match (h.session_from, from) {
            (Some(held), Some(from))
                if held != from && now.saturating_duration_since(h.last_heard) < TAKEOVER_QUIET =>
            {
                Err(Status::permission_denied(format!(
                    "host id {host_id} has a live session from another address ({held}); a host session from {from} may not take it over"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Records a host's load report from `from`, with the cap on its upload connections when
    /// the report gives one (a seed peer's cluster may change it while the host runs);
    /// `NotFound` when the host has no open session, `PermissionDenied` when the report does
    /// not come from its session's address.
    pub fn report_load(&mut self, load: &HostLoad, from: Option<IpAddr>) -> Result<(), Status> {
        let Some(host) = self.model.hosts.get_mut(&load.host_id) else {
            return Err(Status::not_found("no open host session for this host"));
        };
        if let (Some(held), Some(from)) = (host.session_from, from) {
            if held != from {
                return Err(Status::permission_denied(
                    "a load report must come from its host session's address",
                ));
            }
        }
        host.load = Load {
            upload_connections: load.upload_connections,
            upload_bytes_per_sec: load.upload_bytes_per_sec,
        };
        let cap = load.max_upload_connections;
        if cap > 0 && cap != host.info.max_upload_connections {
            info!(host = %load.host_id, upload_cap_from = host.info.max_upload_connections, upload_cap_to = cap, "the host's upload connection cap changed");
            host.info.max_upload_connections = cap;
        }
        host.last_heard = Instant::now();
        for task in &load.dropped_task_ids {
            let gone: Vec<String> = self
                .model
                .tasks
                .get(task)
                .map(|t| {
                    t.order
                        .iter()
                        .filter_map(|&slot| t.peers.at(slot))
                        .filter(|p| p.host_id == load.host_id)
                        .map(|p| p.id.clone())
                        .collect()
                })
                .unwrap_or_default();
            for peer in gone {
                info!(host = %load.host_id, task = %task, "the host dropped the task; no longer offered as its parent");
                self.remove_peer(task, &peer, "its host dropped the task");
            }
        }
        Ok(())
    }

    /// Refuses a request that speaks for host `claimed` (`what` says how) when the
    /// connection's certificate names another host (`proven`), when the host id was proven by
    /// a certificate before and this connection does not prove it, and (with
    /// `require_host_certificates`, under TLS: `tls`) when the certificate names no host.
    /// A proven id is remembered.
    pub fn check_host_binding(
        &mut self,
        claimed: &str,
        proven: Option<&str>,
        tls: bool,
        what: &str,
    ) -> Result<(), Status> {
        pollen_tls::incoming::check_host(proven, claimed, what)?;
        if proven == Some(claimed) {
            if !self.bound_hosts.contains(claimed) {
                self.bound_hosts.insert(claimed.to_string());
            }
            return Ok(());
        }
        if self.bound_hosts.contains(claimed) {
            return Err(Status::permission_denied(format!(
                "{what} names host {claimed}, which proved its id with a certificate; this connection's certificate does not name it"
            )));
        }
        if tls && self.cfg.require_host_certificates {
            return Err(Status::permission_denied(format!(
                "{what} names host {claimed}, and this scheduler needs a certificate naming its host ({}{claimed}; pollen certs issue --host-id)",
                pollen_tls::HOST_URI_PREFIX
            )));
        }
        Ok(())
    }

    /// Records where host `host_id`'s session `session` came from.
    pub fn set_session_origin(&mut self, host_id: &str, session: u64, from: IpAddr) {
        if let Some(h) = self
            .model
            .hosts
            .get_mut(host_id)
            .filter(|h| h.session == session)
        {
            h.session_from = Some(from);
        }
    }

    /// Refuses a register that names a host it cannot be: one whose session came from another
    /// address, or a seed host when the announcing connection proves neither the seed role
    /// (`proven`, under mutual TLS) nor holds a join token for it (`token`). A seed's peer is
    /// trusted for a task's facts, so without this any host could speak for a seed by naming
    /// its host id.
    pub fn check_register_origin(
        &self,
        host_id: &str,
        from: Option<IpAddr>,
        proven: Option<&pollen_tls::ProvenRoles>,
        token: Option<&str>,
    ) -> Result<(), Status> {
        let Some(host) = self.model.hosts.get(host_id) else {
            return Ok(());
        };
        if let (Some(session), Some(from)) = (host.session_from, from) {
            if session != from {
                self.metrics
                    .refused(crate::metrics::Refusal::RegisterOrigin);
                warn!(host = host_id, %session, %from, "register naming another address's host refused");
                return Err(Status::permission_denied(format!(
                    "this register names host {host_id}, whose host session came from another address"
                )));
            }
        }
        if host.info.seed {
            self.check_seed_claim(proven, token, "announcing as a seed host's peer")
                .inspect_err(|_| self.metrics.refused(crate::metrics::Refusal::SeedClaim))?;
        }
        Ok(())
    }

    /// Judges a claim to be a seed (see [`crate::join_gate`]); `token` is the hash of the
    /// join token shown, if any.
    pub fn check_seed_claim(
        &self,
        proven: Option<&pollen_tls::ProvenRoles>,
        token: Option<&str>,
        claim: &str,
    ) -> Result<(), Status> {
        pollen_tls::incoming::check_claim(
            proven,
            self.join.shown(token),
            pollen_tls::Role::Seed,
            claim,
            self.cfg.open_join,
        )
    }

    /// Whether `host_id` is blocked fleet-wide for bad data.
    pub fn host_blocked(&self, host_id: &str) -> bool {
        self.blocked_hosts.contains_key(host_id)
    }

    /// Lifts blocks and forgets reports that ran out.
    pub(super) fn expire_blocks(&mut self, now: Instant) {
        let keep = self.cfg.host_block_duration;
        let ended: Vec<String> = self
            .blocked_hosts
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for h in ended {
            self.blocked_hosts.remove(&h);
            if let Some(host) = self.model.hosts.get_mut(&h) {
                host.blocked_until = None;
            }
            info!(host = %h, "host block lifted");
        }
        self.bad_reports.retain(|_, reports| {
            reports.retain(|(_, at)| now.saturating_duration_since(*at) < keep);
            !reports.is_empty()
        });
    }

    /// Rebuilds the registered peers per host from the tasks (after tasks were dropped
    /// whole).
    pub(super) fn recount_host_peers(&mut self) {
        self.host_peers.clear();
        for t in self.model.tasks.values() {
            for p in t.peers.values() {
                *self.host_peers.entry(p.host_id.clone()).or_insert(0) += 1;
            }
        }
    }

    /// Registered peers of `host_id`.
    pub fn peers_of_host(&self, host_id: &str) -> u32 {
        self.host_peers.get(host_id).copied().unwrap_or(0)
    }

    /// Counts a bad-data report against `accused` by `reporter` (another host); at
    /// `host_block_reporters` distinct reporters within `host_block_duration`, `accused` is
    /// blocked fleet-wide for that long.
    pub(super) fn report_bad_data(&mut self, accused: &str, reporter: &str, now: Instant) {
        let (need, keep) = (self.cfg.host_block_reporters, self.cfg.host_block_duration);
        if need == 0 || accused == reporter || self.blocked_hosts.contains_key(accused) {
            return;
        }
        let reports = self.bad_reports.entry(accused.to_string()).or_default();
        reports.retain(|(r, at)| r != reporter && now.saturating_duration_since(*at) < keep);
        reports.push((reporter.to_string(), now));
        if reports.len() < need as usize || reports.len() > 4096 {
            return;
        }
        let by: Vec<String> = reports.iter().map(|(r, _)| r.clone()).collect();
        self.bad_reports.remove(accused);
        let until = now + keep;
        self.blocked_hosts.insert(accused.to_string(), until);
        self.metrics.hosts_blocked.inc();
        if let Some(h) = self.model.hosts.get_mut(accused) {
            h.blocked_until = Some(until);
        }
        warn!(host = accused, reporters = ?by, for_ = ?keep, "host blocked fleet-wide: bad data reported by other hosts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;

    fn host(core: &mut Core, id: &str, from: &str) -> u64 {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::mem::forget(rx);
        let ip: IpAddr = from.parse().expect("ip");
        let session = core.open_host(
            HostInfo {
                host_id: id.into(),
                upload_port: 4100,
                ..Default::default()
            },
            ip,
            tx,
        );
        core.set_session_origin(id, session, ip);
        session
    }

    fn load(id: &str) -> HostLoad {
        HostLoad {
            host_id: id.into(),
            upload_connections: 3,
            ..Default::default()
        }
    }

    #[test]
    fn a_live_session_is_not_taken_over_from_another_address_until_it_goes_quiet() {
        let mut core = Core::new(SchedulerConfig::default(), 1);
        host(&mut core, "h1", "10.0.0.1");
        let now = Instant::now();
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let same: IpAddr = "10.0.0.1".parse().expect("ip");
        let e = core
            .check_takeover("h1", Some(other), now)
            .expect_err("a live session");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(core.check_takeover("h1", Some(same), now).is_ok());
        assert!(core.check_takeover("unknown", Some(other), now).is_ok());
        // Silent for longer than TAKEOVER_QUIET: another address may take the id.
        let later = now + TAKEOVER_QUIET + std::time::Duration::from_secs(1);
        assert!(core.check_takeover("h1", Some(other), later).is_ok());
    }

    #[test]
    fn a_host_that_dropped_a_task_is_no_longer_one_of_its_peers_and_no_other_one_goes() {
        use pollen_proto::scheduler::{Register, TaskRequest};
        let mut core = Core::new(SchedulerConfig::default(), 1);
        host(&mut core, "h1", "10.0.0.1");
        host(&mut core, "h2", "10.0.0.2");
        let mut task = TaskRequest {
            url: "http://origin/model.bin".into(),
            ..Default::default()
        };
        task.task_id = crate::task_facts::expected_task_id(&task).expect("task id");
        let mut tid = String::new();
        for (peer, host) in [("p1", "h1"), ("p2", "h2")] {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            std::mem::forget(rx);
            let reg = Register {
                peer_id: peer.into(),
                host_id: host.into(),
                task: Some(task.clone()),
            };
            tid = core.register(reg, tx).expect("registered").0;
        }
        let hosts = |core: &Core| {
            let t = core.model.tasks.get(&tid).expect("task");
            let mut h: Vec<String> = t
                .order
                .iter()
                .filter_map(|&slot| t.peers.at(slot))
                .map(|p| p.host_id.clone())
                .collect();
            h.sort();
            h
        };
        assert_eq!(hosts(&core), ["h1", "h2"]);
        let dropped = HostLoad {
            dropped_task_ids: vec![tid.clone(), "not-a-task".into()],
            ..load("h1")
        };
        core.report_load(&dropped, Some("10.0.0.1".parse().expect("ip")))
            .expect("report");
        assert_eq!(hosts(&core), ["h2"], "h1 is gone, h2 stays");
    }

    #[test]
    fn a_load_report_counts_only_from_its_sessions_address() {
        let mut core = Core::new(SchedulerConfig::default(), 1);
        host(&mut core, "h1", "10.0.0.1");
        let e = core
            .report_load(&load("h1"), Some("10.0.0.9".parse().expect("ip")))
            .expect_err("another address");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            core.model
                .hosts
                .get("h1")
                .map(|h| h.load.upload_connections),
            Some(0)
        );
        core.report_load(&load("h1"), Some("10.0.0.1".parse().expect("ip")))
            .expect("its own address");
        assert_eq!(
            core.model
                .hosts
                .get("h1")
                .map(|h| h.load.upload_connections),
            Some(3)
        );
        let e = core
            .report_load(&load("nobody"), None)
            .expect_err("no session");
        assert_eq!(e.code(), tonic::Code::NotFound);
    }

    #[test]
    fn a_load_report_s_connection_cap_replaces_the_announced_one_and_none_keeps_it() {
        let mut core = Core::new(SchedulerConfig::default(), 1);
        host(&mut core, "h1", "10.0.0.1");
        let from = Some("10.0.0.1".parse().expect("ip"));
        let cap = |core: &Core| {
            core.model
                .hosts
                .get("h1")
                .map(|h| h.info.max_upload_connections)
        };
        core.report_load(
            &HostLoad {
                max_upload_connections: 40,
                ..load("h1")
            },
            from,
        )
        .expect("report");
        assert_eq!(cap(&core), Some(40));
        // A host that does not say (0) keeps the cap it had.
        core.report_load(&load("h1"), from).expect("report");
        assert_eq!(cap(&core), Some(40));
        core.report_load(
            &HostLoad {
                max_upload_connections: 2,
                ..load("h1")
            },
            from,
        )
        .expect("report");
        assert_eq!(cap(&core), Some(2));
        let h = core.model.hosts.get("h1").expect("host");
        assert_eq!(
            crate::evaluator::free_slots(h),
            0,
            "3 connections in use fill a cap of 2: no child may be sent there"
        );
    }

    #[test]
    fn closing_an_old_session_leaves_the_new_one() {
        let mut core = Core::new(SchedulerConfig::default(), 1);
        let old = host(&mut core, "h1", "10.0.0.1");
        let new = host(&mut core, "h1", "10.0.0.1");
        assert_ne!(old, new);
        core.close_host("h1", old);
        assert!(
            core.model.hosts.contains_key("h1"),
            "a stale close removed the live session"
        );
        core.close_host("h1", new);
        assert!(!core.model.hosts.contains_key("h1"));
    }
}
