//! The schedulers this daemon uses, and which one serves a given task.
//!
//! With one scheduler (`--scheduler URL`) the set never changes. With a manager, the set is
//! the placement the manager last sent: its cluster's active schedulers. Tasks are spread
//! over them by rendezvous hashing of the task id, so every daemon with the same set sends
//! a task's peers to the same scheduler, and when a scheduler leaves only its tasks move.
//! A download tries its task's schedulers in hash order, so one that is down (but not yet
//! dropped from the placement) costs a connect timeout, not the download.

use std::sync::RwLock;
use std::time::Duration;

use tonic::transport::ClientTlsConfig;

use crate::links::scheduler_link::SchedulerLink;

pub(crate) struct SchedulerSet {
    links: RwLock<Vec<SchedulerLink>>,
    connect_timeout: Duration,
    tls: Option<ClientTlsConfig>,
    join_token: Option<pollen_core::join::JoinToken>,
}

/// What changed when a new placement was applied.
pub(crate) struct Change {
    pub added: Vec<SchedulerLink>,
    pub removed: Vec<String>,
}

impl SchedulerSet {
    pub fn new(
        connect_timeout: Duration,
        tls: Option<ClientTlsConfig>,
        join_token: Option<pollen_core::join::JoinToken>,
    ) -> Self {
        Self {
            links: RwLock::new(Vec::new()),
            connect_timeout,
            tls,
            join_token,
        }
    }

    /// Makes `urls` the set, keeping the clients of URLs already in it.
    pub fn replace(&self, urls: &[String]) -> Result<Change, String> {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::with_capacity(urls.len());
        let mut added = Vec::new();
        for url in urls {
            if next.iter().any(|l: &SchedulerLink| &l.url == url) {
                continue;
            }
            match links.iter().find(|l| &l.url == url) {
                Some(l) => next.push(l.clone()),
                None => {
                    let l = SchedulerLink::new(
                        url,
                        self.connect_timeout,
                        self.tls.clone(),
                        self.join_token.clone(),
                    )?;
                    added.push(l.clone());
                    next.push(l);
                }
            }
        }
        let removed = links
            .iter()
            .filter(|l| !next.iter().any(|n| n.url == l.url))
            .map(|l| l.url.clone())
            .collect();
        *links = next;
        Ok(Change { added, removed })
    }

    /// The URLs of the schedulers in the set.
    pub fn urls(&self) -> Vec<String> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        links.iter().map(|l| l.url.clone()).collect()
    }

    /// The schedulers to try for `task_id`, best first.
    pub fn for_task(&self, task_id: &str) -> Vec<SchedulerLink> {
        let mut links = self.links.read().map(|l| l.clone()).unwrap_or_default();
        links.sort_by_cached_key(|l| {
            std::cmp::Reverse(pollen_core::rendezvous::weight(&l.url, task_id))
        });
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(urls: &[&str]) -> SchedulerSet {
        let s = SchedulerSet::new(Duration::from_secs(1), None, None);
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        s.replace(&urls).unwrap();
        s
    }

    fn first(s: &SchedulerSet, task: &str) -> String {
        s.for_task(task)[0].url.clone()
    }

    #[tokio::test]
    async fn tasks_spread_over_schedulers_and_only_a_leavers_tasks_move() {
        let three = set(&[
            "http://10.0.0.1:1",
            "http://10.0.0.2:1",
            "http://10.0.0.3:1",
        ]);
        let tasks: Vec<String> = (0..300).map(|i| format!("task-{i}")).collect();
        let before: Vec<String> = tasks.iter().map(|t| first(&three, t)).collect();
        for u in [
            "http://10.0.0.1:1",
            "http://10.0.0.2:1",
            "http://10.0.0.3:1",
        ] {
            let n = before.iter().filter(|b| *b == u).count();
            assert!(n > 50, "{u} got only {n} of 300 tasks");
        }
        let change = three
            .replace(&["http://10.0.0.1:1".into(), "http://10.0.0.3:1".into()])
            .unwrap();
        assert!(change.added.is_empty());
        assert_eq!(change.removed, vec!["http://10.0.0.2:1".to_string()]);
        for (t, b) in tasks.iter().zip(&before) {
            let now = first(&three, t);
            if b != "http://10.0.0.2:1" {
                assert_eq!(&now, b, "{t} moved although its scheduler stayed");
            }
        }
        // Every daemon with the same set agrees, whatever order the URLs came in.
        let other = set(&["http://10.0.0.3:1", "http://10.0.0.1:1"]);
        for t in &tasks {
            assert_eq!(first(&three, t), first(&other, t));
        }
        assert_eq!(
            three.for_task("x").len(),
            2,
            "the others remain as fallbacks"
        );
    }
}
