//! Choosing parents: the evaluator's candidates under the DAG rule and the peer's own
//! blocklist, the parents a peer is told, seeds triggered for a new task, and the peers sent
//! back to the origin when nobody can serve them.

use std::time::Instant;

use pollen_proto::scheduler::{host_command, scheduler_event, HostCommand, Parent, Parents};
use tracing::{debug, info};

use super::{back_to_source, grant_for, short, Core, SeedsTried, MAX_NAMED_PARENTS};
use crate::dag::Descendants;
use crate::evaluator::{free_slots, kept_parents, select_parents};
use crate::model::{Host, PeerState};

impl Core {
    /// The parents last offered to a peer.
    pub fn parents_of(&self, tid: &str, pid: &str) -> Vec<String> {
        self.model
            .tasks
            .get(tid)
            .and_then(|t| Some(t.parent_ids(t.peers.get(pid)?)))
            .unwrap_or_default()
    }

    /// Replaces a peer's parents, keeping each host's child count right.
    pub(super) fn set_parents(&mut self, tid: &str, pid: &str, parents: Vec<u32>) {
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        let Some(slot) = task.peers.slot_of(pid) else {
            return;
        };
        let old = task.set_parents(slot, parents.clone());
        let host_of = |&slot: &u32| task.peers.at(slot).and_then(|p| p.host);
        for h in old.iter().filter_map(host_of) {
            if let Some(host) = self.model.hosts.at_mut(h) {
                host.children = host.children.saturating_sub(1);
            }
        }
        for h in parents.iter().filter_map(host_of) {
            if let Some(host) = self.model.hosts.at_mut(h) {
                host.children += 1;
            }
        }
    }

    /// Finds parents for a peer, or decides it waits or goes back to the origin.
    pub fn schedule(&mut self, tid: &str, pid: &str) {
        self.schedule_more(tid, pid, &[]);
    }

    /// Finds parents for a peer other than those it already `has` (peer ids). With none to
    /// add, a peer that has parents keeps them; one that has none waits or goes back to the
    /// origin.
    pub(super) fn schedule_more(&mut self, tid: &str, pid: &str, has: &[String]) {
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let Some(peer) = task.peers.get(pid) else {
            return;
        };
        if peer.state != PeerState::Running {
            return;
        }
        let has: Vec<u32> = has
            .iter()
            .take(MAX_NAMED_PARENTS)
            .filter_map(|id| task.peers.slot_of(id))
            .collect();
        // With the DAG rule on, the child's descendants, gathered once for both uses below.
        let below = self
            .cfg
            .evaluator
            .dag
            .then(|| Descendants::of(task, peer.slot));
        // Parents are no use before the task's length and digests are known, and only a
        // peer chosen to read the origin can publish them: while the scheduler has chosen
        // none (peers announcing a task they hold, after a restart), this peer needs a source.
        let parents = if task.content_length.is_none() && !task.origin_reader {
            Vec::new()
        } else {
            select_parents(
                &self.cfg.evaluator,
                task,
                &self.model.hosts,
                pid,
                &has,
                below.as_ref(),
                &mut self.rng,
            )
        };
        // The peer keeps the parents it has, so they are its edges too (they count on their
        // hosts' child totals). With the DAG rule on, one that is now a descendant is left
        // out of the record, which keeps the recorded graph, on which the rule walks, acyclic.
        let kept = kept_parents(task, peer.slot, &has, below.as_ref());
        if parents.is_empty() && !has.is_empty() {
            self.set_parents(tid, pid, kept);
            return;
        }
        if !parents.is_empty() {
            let list: Vec<Parent> = parents
                .iter()
                .filter_map(|&slot| {
                    let p = task.peers.at(slot)?;
                    let h = self.model.hosts.at(p.host?)?;
                    Some(Parent {
                        peer_id: p.id.clone(),
                        ip: h.ip.to_string(),
                        port: h.info.upload_port,
                        seed: h.info.seed,
                    })
                })
                .collect();
            debug!(task = %short(tid), peer = pid, finished = peer.finished.len(), parents = ?list.iter().map(|p: &Parent| p.peer_id.as_str()).collect::<Vec<_>>(), "parents offered");
            let grant = if task.request.private {
                let child = peer
                    .host
                    .and_then(|slot| self.model.hosts.at(slot))
                    .map(|h| h.session_from.unwrap_or(h.ip));
                let g = grant_for(&self.grants, tid, child, self.cfg.upload_grant_ttl);
                if g.is_some() {
                    self.metrics.grants.inc();
                }
                g
            } else {
                None
            };
            peer.send(scheduler_event::Event::Parents(Parents {
                parents: list,
                grant,
            }));
            let mut edges = kept;
            edges.extend(parents);
            self.set_parents(tid, pid, edges);
            self.set_waiting(tid, pid, false);
            return;
        }
        // No parent now: drop stale edges so the host counts stay right.
        self.set_parents(tid, pid, Vec::new());
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let seed_pending = task
            .seed_triggered
            .is_some_and(|t| t.elapsed() < self.cfg.seed_patience);
        if task.someone_fetching_origin() || seed_pending || self.trigger_seed(tid, pid) {
            self.set_waiting(tid, pid, true);
            return;
        }
        self.set_waiting(tid, pid, false);
        info!(task = %short(tid), peer = pid, "no parent and no seed peer: back to source");
        self.send_to_origin(
            tid,
            pid,
            "no peer holds the task and no seed peer is available",
        );
    }

    /// Sends a peer to the origin: from now on its reports of the task's facts count.
    pub(super) fn send_to_origin(&mut self, tid: &str, pid: &str, reason: &str) {
        let Some(task) = self.model.tasks.get_mut(tid) else {
            return;
        };
        let Some(p) = task.peers.get_mut(pid) else {
            return;
        };
        p.state = PeerState::BackToSource;
        p.reads_origin = true;
        self.metrics.back_to_source.inc();
        p.send(back_to_source(reason));
        task.origin_reader = true;
    }

    pub(super) fn set_waiting(&mut self, tid: &str, pid: &str, waiting: bool) {
        if let Some(t) = self.model.tasks.get_mut(tid) {
            t.set_waiting(pid, waiting);
        }
    }

    /// Asks the least-loaded seed host not yet tried for this task (and not the asking peer's
    /// own host) to fetch it. False when there is none.
    pub(super) fn trigger_seed(&mut self, tid: &str, pid: &str) -> bool {
        let Some(task) = self.model.tasks.get(tid) else {
            return false;
        };
        // A private task is fetched only with the credentials of a request the fetcher
        // serves. No seed has those (the scheduler never sees them), so one of the task's
        // own peers reads the origin.
        if task.request.private {
            return false;
        }
        let peer_host = task.peers.get(pid).map(|p| p.host_id.as_str());
        if !self.seeds_tried.contains_key(tid) {
            self.seeds_tried
                .insert(tid.to_string(), SeedsTried::default());
        }
        let Some(tried) = self.seeds_tried.get_mut(tid) else {
            return false;
        };
        let epoch = self.model.seed_epoch;
        if tried.exhausted_at == Some(epoch) {
            return false;
        }
        let mut own_host_skipped = false;
        let mut seeds: Vec<&Host> = self
            .model
            .seed_hosts
            .iter()
            .filter(|id| {
                let own = Some(id.as_str()) == peer_host;
                own_host_skipped |= own;
                !own && !tried.hosts.contains(*id)
            })
            .filter_map(|id| self.model.hosts.get(id))
            .collect();
        // Most free upload slots first, then fewest children, then id (repeatable).
        seeds.sort_by(|a, b| {
            free_slots(b)
                .cmp(&free_slots(a))
                .then(a.children.cmp(&b.children))
                .then(a.info.host_id.cmp(&b.info.host_id))
        });
        for seed in seeds {
            let cmd = HostCommand {
                command: Some(host_command::Command::Download(task.request.clone())),
            };
            tried.hosts.insert(seed.info.host_id.clone());
            if seed.commands.try_send(Ok(cmd)).is_ok() {
                info!(task = %short(tid), seed = %seed.info.host_id, "seed peer triggered");
                if let Some(t) = self.model.tasks.get_mut(tid) {
                    t.seed_triggered = Some(Instant::now());
                }
                return true;
            }
        }
        // Another asker may still use the seed on this one's host.
        if !own_host_skipped {
            tried.exhausted_at = Some(epoch);
        }
        false
    }

    /// When nobody holds the whole task and nobody reads the origin (the seed, or the peer
    /// reading the origin, just left), some pieces exist nowhere. Another seed is triggered,
    /// or else the running peer holding the most pieces is sent to the origin for the rest,
    /// so one peer fetches what is missing while the others keep trading, instead of each
    /// finding out on its own and every one of them going to the origin.
    pub(super) fn ensure_source(&mut self, tid: &str) {
        let Some(task) = self.model.tasks.get(tid) else {
            return;
        };
        let seed_pending = task
            .seed_triggered
            .is_some_and(|t| t.elapsed() < self.cfg.seed_patience);
        if seed_pending || task.every_piece_reachable() {
            return;
        }
        let best = task
            .peers
            .values()
            .filter(|p| p.state == PeerState::Running && p.tx.is_some())
            .max_by(|a, b| {
                a.finished
                    .len()
                    .cmp(&b.finished.len())
                    .then_with(|| b.id.cmp(&a.id))
            })
            .map(|p| p.id.clone());
        let Some(best) = best else {
            return;
        };
        if self.trigger_seed(tid, &best) {
            return;
        }
        info!(task = %short(tid), peer = %best, "the task's source left and no seed peer is available: this peer reads the rest from the origin");
        self.send_to_origin(
            tid,
            &best,
            "the peer reading the origin left and no seed peer is available",
        );
    }

    /// Rebuilds every host's child count from the parent edges.
    pub(super) fn recount_children(&mut self) {
        for h in self.model.hosts.values_mut() {
            h.children = 0;
        }
        for t in self.model.tasks.values() {
            for p in t.peers.values() {
                for &parent in &p.parents {
                    if let Some(host) = t
                        .peers
                        .at(parent)
                        .and_then(|pp| pp.host)
                        .and_then(|h| self.model.hosts.at_mut(h))
                    {
                        host.children += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;
    use pollen_proto::scheduler::{
        peer_event, ContentInfo, FinishedPiece, HostInfo, NeedParents, ParentFailed,
        PiecesFinished, Register, SchedulerEvent, TaskRequest,
    };
    use tokio::sync::mpsc;

    type Rx = mpsc::Receiver<Result<SchedulerEvent, tonic::Status>>;

    const PIECES: u32 = 4;

    struct World {
        core: Core,
        tid: String,
        _hosts: Vec<mpsc::Receiver<Result<pollen_proto::scheduler::HostCommand, tonic::Status>>>,
    }

    fn world() -> World {
        let mut core = Core::new(SchedulerConfig::default(), 7);
        let mut hosts = Vec::new();
        for h in 1..=3 {
            let (tx, rx) = mpsc::channel(64);
            hosts.push(rx);
            core.open_host(
                HostInfo {
                    host_id: format!("h{h}"),
                    upload_port: 4100,
                    max_upload_connections: 100,
                    ..Default::default()
                },
                format!("127.0.0.{h}").parse().expect("ip"),
                tx,
            );
        }
        let tid = crate::task_facts::expected_task_id(&TaskRequest {
            url: "http://o/x".into(),
            ..Default::default()
        })
        .expect("task id");
        World {
            core,
            tid,
            _hosts: hosts,
        }
    }

    impl World {
        fn join(&mut self, peer: &str, host: &str) -> Rx {
            let (tx, rx) = mpsc::channel(64);
            self.core
                .register(
                    Register {
                        peer_id: peer.into(),
                        host_id: host.into(),
                        task: Some(TaskRequest {
                            task_id: self.tid.clone(),
                            url: "http://o/x".into(),
                            ..Default::default()
                        }),
                    },
                    tx,
                )
                .expect("registered");
            rx
        }

        fn event(&mut self, peer: &str, ev: peer_event::Event) {
            let tid = self.tid.clone();
            self.core.event(&tid, peer, ev);
        }

        /// `peer` read the origin and holds every piece.
        fn holds_everything(&mut self, peer: &str) {
            self.event(
                peer,
                peer_event::Event::ContentInfo(ContentInfo {
                    content_length: u64::from(PIECES) << 22,
                    piece_length: 1 << 22,
                }),
            );
            self.event(
                peer,
                peer_event::Event::PiecesFinished(PiecesFinished {
                    pieces: (0..PIECES)
                        .map(|n| FinishedPiece {
                            number: n,
                            digest: vec![n as u8; 32],
                            ..Default::default()
                        })
                        .collect(),
                }),
            );
        }
    }

    /// The events a peer was sent so far.
    fn drain(rx: &mut Rx) -> Vec<scheduler_event::Event> {
        let mut out = Vec::new();
        while let Ok(Ok(ev)) = rx.try_recv() {
            out.extend(ev.event);
        }
        out
    }

    #[test]
    fn a_peer_holding_the_task_is_offered_to_the_next_one() {
        let mut w = world();
        let mut first = w.join("p1", "h1");
        // The first peer has nobody to learn from: it is sent to the origin.
        assert!(drain(&mut first)
            .iter()
            .any(|e| matches!(e, scheduler_event::Event::BackToSource(_))));
        w.holds_everything("p1");
        let mut second = w.join("p2", "h2");
        w.event(
            "p2",
            peer_event::Event::NeedParents(NeedParents { parents: vec![] }),
        );
        let offered = offered(&mut second);
        assert!(offered.contains(&"p1".to_string()), "{offered:?}");
        let tid = w.tid.clone();
        assert_eq!(w.core.parents_of(&tid, "p2"), vec!["p1".to_string()]);
    }

    /// The peers offered to `peer` so far.
    fn offered(rx: &mut Rx) -> Vec<String> {
        drain(rx)
            .into_iter()
            .filter_map(|e| match e {
                scheduler_event::Event::Parents(p) => Some(p.parents),
                _ => None,
            })
            .flatten()
            .map(|p| p.peer_id)
            .collect()
    }

    /// Before the origin reader publishes the task's facts, nothing any other peer holds can
    /// be checked, so only the reader is offered: a host that joined first and claimed a
    /// length and every piece is not (it would be asked for pieces it cannot prove), neither
    /// before the facts nor after they contradict its claim.
    #[test]
    fn before_the_facts_are_published_only_the_origin_reader_is_offered() {
        let mut w = world();
        let mut reader = w.join("p1", "h1");
        assert!(drain(&mut reader)
            .iter()
            .any(|e| matches!(e, scheduler_event::Event::BackToSource(_))));
        let _liar = w.join("liar", "h2");
        w.event(
            "liar",
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: 8 << 40,
                piece_length: 64 << 20,
            }),
        );
        w.event(
            "liar",
            peer_event::Event::PiecesFinished(PiecesFinished {
                pieces: (0..PIECES)
                    .map(|n| FinishedPiece {
                        number: n,
                        digest: vec![0xBA; 32],
                        ..Default::default()
                    })
                    .collect(),
            }),
        );
        let mut honest = w.join("p3", "h3");
        let early = offered(&mut honest);
        assert!(!early.contains(&"liar".to_string()), "{early:?}");
        assert!(early.contains(&"p1".to_string()), "{early:?}");
        w.holds_everything("p1");
        w.event(
            "p3",
            peer_event::Event::NeedParents(NeedParents {
                parents: vec!["p1".into()],
            }),
        );
        let late = offered(&mut honest);
        assert!(!late.contains(&"liar".to_string()), "{late:?}");
    }

    /// A private task's first peer reads the origin itself with the credentials it holds:
    /// no seed is asked (it would have none), and the credentials the register carried are
    /// kept nowhere in the scheduler.
    #[test]
    fn a_private_task_triggers_no_seed_and_keeps_no_credentials() {
        let mut w = world();
        let (tx, mut seed_commands) = mpsc::channel(64);
        w.core.open_host(
            HostInfo {
                host_id: "seed".into(),
                upload_port: 4100,
                max_upload_connections: 100,
                seed: true,
                ..Default::default()
            },
            "127.0.0.9".parse().expect("ip"),
            tx,
        );
        let mut req = TaskRequest {
            url: "http://r/v2/p/blobs/sha256:ab".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            private: true,
            headers: vec![
                pollen_proto::scheduler::Header {
                    name: "Authorization".into(),
                    value: "Basic YWxpY2U6czNjcmV0".into(),
                },
                pollen_proto::scheduler::Header {
                    name: "Accept".into(),
                    value: "*/*".into(),
                },
            ],
            ..Default::default()
        };
        req.task_id = crate::task_facts::expected_task_id(&req).expect("id");
        let tid = req.task_id.clone();
        let (ptx, mut peer) = mpsc::channel(64);
        w.core
            .register(
                Register {
                    peer_id: "p1".into(),
                    host_id: "h1".into(),
                    task: Some(req),
                },
                ptx,
            )
            .expect("registered");
        assert!(
            drain(&mut peer)
                .iter()
                .any(|e| matches!(e, scheduler_event::Event::BackToSource(_))),
            "the private task's first peer was not sent to the origin"
        );
        assert!(
            seed_commands.try_recv().is_err(),
            "a seed was asked to fetch a private task"
        );
        let kept = &w.core.model.tasks.get(&tid).expect("task").request;
        assert!(
            kept.headers.iter().all(|h| h.name != "Authorization"),
            "{:?}",
            kept.headers
        );
        assert_eq!(kept.headers.len(), 1, "other headers stay");
    }

    #[test]
    fn a_parent_a_peer_reported_failed_is_not_offered_to_it_again() {
        let mut w = world();
        let _first = w.join("p1", "h1");
        w.holds_everything("p1");
        let mut second = w.join("p2", "h2");
        w.event(
            "p2",
            peer_event::Event::NeedParents(NeedParents { parents: vec![] }),
        );
        let tid = w.tid.clone();
        assert_eq!(
            w.core.parents_of(&tid, "p2"),
            vec!["p1".to_string()],
            "offered before it failed"
        );
        drain(&mut second);
        w.event(
            "p2",
            peer_event::Event::ParentFailed(ParentFailed {
                parent_peer_id: "p1".into(),
                reason: "connection reset".into(),
                bad_data: false,
            }),
        );
        w.event(
            "p2",
            peer_event::Event::NeedParents(NeedParents { parents: vec![] }),
        );
        let events = drain(&mut second);
        let offered_again = events.iter().any(|e| match e {
            scheduler_event::Event::Parents(p) => p.parents.iter().any(|p| p.peer_id == "p1"),
            _ => false,
        });
        assert!(!offered_again, "{events:?}");
    }
}
