//! The parents one download fetches from: which are connected and by how many connections,
//! which failed (never taken again for this download), and an offer that came too early.
//!
//! The scheduler can offer parents before this peer knows the task's size (the seed has not
//! yet read the origin's headers), and a fetcher cannot start without it. Such an offer is
//! kept and taken up the moment the size is known; dropping it cost a whole re-offer period
//! (a second) of an idle download link at the start of every swarm.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pollen_proto::scheduler::Parent;
use tokio::task::{JoinError, JoinSet};
use tracing::{info, Instrument};

use crate::download::parent_fetcher::{FetchContext, FetchError, ParentJob};
use crate::download::piece_claims::PieceClaims;

/// What a fetcher task returns: its parent and how the connection ended.
pub(crate) type Ended = (String, Result<(), FetchError>);

/// One download's parents and their fetcher tasks.
pub(crate) struct ParentPool {
    ctx: FetchContext,
    fetchers: JoinSet<Ended>,
    /// Connected parents and their connections still open.
    active: HashMap<String, usize>,
    /// Parents that failed during this download.
    blocked: HashSet<String>,
    /// The last offer made before the task's size was known.
    early_offer: Vec<Parent>,
}

impl ParentPool {
    pub fn new(ctx: FetchContext) -> Self {
        Self {
            ctx,
            fetchers: JoinSet::new(),
            active: HashMap::new(),
            blocked: HashSet::new(),
            early_offer: Vec::new(),
        }
    }

    /// Keeps the grant of the scheduler's latest offer (a private task's), for the fetchers
    /// connecting from now on.
    pub fn set_grant(&mut self, grant: Option<&pollen_proto::scheduler::UploadGrant>) {
        let Some(g) = grant else { return };
        let Ok(signature) = <[u8; 64]>::try_from(g.signature.as_slice()) else {
            return;
        };
        *self.ctx.grant.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(pollen_core::grant::Grant {
                expires: g.expires,
                signature,
            });
    }

    /// Takes up the scheduler's offer: starts fetchers for the parents not yet connected nor
    /// failed, up to `max_parents`. Without `claims` (the task's size is not known yet) the
    /// offer is kept for [`ParentPool::task_known`]; a later offer replaces it.
    pub fn offer(&mut self, parents: Vec<Parent>, claims: Option<&Arc<PieceClaims>>) {
        match claims {
            Some(c) => self.adopt(parents, c),
            None => self.early_offer = parents,
        }
    }

    /// The task's size is known: takes up the offer kept while it was not.
    pub fn task_known(&mut self, claims: &Arc<PieceClaims>) {
        let offer = std::mem::take(&mut self.early_offer);
        self.adopt(offer, claims);
    }

    fn adopt(&mut self, parents: Vec<Parent>, claims: &Arc<PieceClaims>) {
        for parent in parents {
            if self.blocked.contains(&parent.peer_id)
                || self.active.contains_key(&parent.peer_id)
                || self.active.len() >= self.ctx.cfg.max_parents
            {
                continue;
            }
            let (Ok(ip), Ok(port)) = (parent.ip.parse::<IpAddr>(), u16::try_from(parent.port))
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            info!(parent = %parent.peer_id, %addr, seed = parent.seed, "downloading from parent");
            // A seed parent gets one connection with one request in flight: its upload is
            // the swarm's scarcest resource, and a piece queued behind others there is a
            // piece no one else can fetch meanwhile.
            let (conns, depth) = if parent.seed {
                (1, 1)
            } else {
                (
                    self.ctx.cfg.connections_per_parent.max(1),
                    self.ctx.cfg.pipeline_depth.max(1),
                )
            };
            for _ in 0..conns {
                let job = ParentJob {
                    parent_id: parent.peer_id.clone(),
                    seed: parent.seed,
                    addr,
                    claims: claims.clone(),
                    ctx: self.ctx.clone(),
                    depth,
                };
                let id = parent.peer_id.clone();
                self.fetchers
                    .spawn(async move { (id, job.run().await) }.in_current_span());
            }
            self.active.insert(parent.peer_id, conns);
        }
    }

    /// Whether any fetcher is running (the run's `select!` polls [`ParentPool::join_next`]
    /// only then).
    pub fn fetching(&self) -> bool {
        !self.fetchers.is_empty()
    }

    /// The next fetcher to end.
    pub async fn join_next(&mut self) -> Option<Result<Ended, JoinError>> {
        self.fetchers.join_next().await
    }

    /// Books the end of one of `parent`'s connections; its last one forgets the parent (in
    /// `claims` too, so its slices go to others).
    pub fn connection_ended(&mut self, parent: &str, claims: Option<&Arc<PieceClaims>>) {
        let left = self
            .active
            .get(parent)
            .copied()
            .unwrap_or(1)
            .saturating_sub(1);
        if left == 0 {
            if let Some(c) = claims {
                c.forget_parent(parent);
            }
            self.active.remove(parent);
        } else {
            self.active.insert(parent.to_string(), left);
        }
    }

    /// Never takes `parent` again in this download; true the first time.
    pub fn block(&mut self, parent: &str) -> bool {
        self.blocked.insert(parent.to_string())
    }

    /// The parents connected now.
    pub fn ids(&self) -> Vec<String> {
        self.active.keys().cloned().collect()
    }

    /// No parent connected.
    pub fn idle(&self) -> bool {
        self.active.is_empty()
    }

    /// Parents that failed during this download.
    pub fn failed(&self) -> usize {
        self.blocked.len()
    }

    /// Stops every fetcher.
    pub fn abort_all(&mut self) {
        self.fetchers.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DaemonConfig;
    use crate::stats::DaemonStats;
    use crate::traffic::{Priority, Traffic};
    use pollen_core::TaskId;
    use pollen_storage::{Store, TaskMeta};
    use std::time::Duration;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    fn parent(id: &str, addr: SocketAddr) -> Parent {
        Parent {
            peer_id: id.into(),
            ip: addr.ip().to_string(),
            port: addr.port().into(),
            seed: false,
        }
    }

    /// A pool with default settings and the claims of an 8 MiB task in a fresh store (its
    /// directory lives as long as the returned guard).
    fn pool_and_claims() -> (tempfile::TempDir, ParentPool, Arc<PieceClaims>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let cfg = Arc::new(DaemonConfig::default());
        let (pace, _priority) = Traffic::new(&cfg).pace(Priority::Foreground, 0);
        let (reports, _rx) = mpsc::channel(8);
        let meta = TaskMeta {
            content_length: 8 << 20,
            piece_length: 4 << 20,
            ..Default::default()
        };
        let entry = store.ensure_task(TaskId([7; 32]), meta).expect("task");
        let claims = PieceClaims::for_download(entry, &cfg);
        let stats = Arc::new(DaemonStats::default());
        let pool = ParentPool::new(FetchContext {
            cfg,
            store,
            stats,
            pace,
            reports,
            tls: None,
            grant: Default::default(),
        });
        (dir, pool, claims)
    }

    #[tokio::test]
    async fn an_offer_before_the_task_size_is_taken_up_once_it_is_known() {
        let (_dir, mut pool, claims) = pool_and_claims();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");

        pool.offer(vec![parent("p1", addr)], None);
        assert!(
            !pool.fetching(),
            "no fetcher before the task's size is known"
        );
        assert!(pool.idle());

        pool.task_known(&claims);
        assert!(pool.fetching());
        assert!(!pool.idle());
        // The fetcher really dials the parent offered early.
        tokio::time::timeout(Duration::from_secs(30), listener.accept())
            .await
            .expect("the early offer's parent was dialled")
            .expect("accept");

        // The parent's two connections end the parent.
        pool.connection_ended("p1", Some(&claims));
        assert!(
            !pool.idle(),
            "one of the parent's two connections is still open"
        );
        pool.connection_ended("p1", Some(&claims));
        assert!(pool.idle());
        pool.abort_all();
    }

    #[tokio::test]
    async fn a_failed_parent_is_not_taken_again() {
        let (_dir, mut pool, claims) = pool_and_claims();
        assert!(pool.block("bad"));
        assert!(!pool.block("bad"), "blocked once");
        let addr = "127.0.0.1:9".parse().expect("addr");
        pool.offer(vec![parent("bad", addr)], Some(&claims));
        assert!(!pool.fetching());
        assert_eq!(pool.failed(), 1);
    }
}
