//! What the daemon already holds: a request served from the cache (its pieces re-checked
//! against the content file first), a finished download's whole-content check before it is
//! marked complete, and the held tasks announced to a scheduler that has just come up.

use std::sync::Arc;

use pollen_proto::scheduler::{peer_event, ContentInfo, PeerFinished, Register, TaskRequest};
use pollen_storage::TaskEntry;
use tracing::warn;

use super::conductor::Conductor;
use crate::download::content_check;
use crate::download::piece_claims::PieceClaims;
use crate::download::scheduler_events::{announce, close_announce, pieces_event};
use crate::download::task_spec::TaskSpec;
use crate::error::DownloadError;
use crate::links::announce_queue::AnnounceQueue;
use crate::links::scheduler_link::SchedulerLink;

impl Conductor {
    /// A complete task held here is handed out only if its file is as it was stored (see
    /// `content_check::keep_complete`); one that changed is dropped and downloaded again.
    pub(crate) async fn serve_from_cache(&self, spec: &TaskSpec) -> Result<bool, DownloadError> {
        let Some(entry) = self.store.get(&spec.id).filter(|e| e.is_complete()) else {
            return Ok(false);
        };
        if !content_check::keep_complete(&self.store, entry.clone()).await? {
            return Ok(false);
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.touch(&entry)).await;
        Ok(true)
    }

    /// Before resuming a partial task, re-reads the pieces it holds: a piece whose metadata
    /// was committed but whose bytes did not reach the disk (a power cut) is dropped and
    /// fetched again, never served.
    pub(crate) async fn recheck_held_pieces(
        &self,
        entry: Arc<TaskEntry>,
    ) -> Result<(), DownloadError> {
        if entry.held_pieces_checked() {
            return Ok(());
        }
        let bad = content_check::bad_pieces(entry.clone()).await?;
        if !bad.is_empty() {
            warn!(pieces = ?bad, "held pieces no longer match their digests; fetching them again");
            let store = self.store.clone();
            let e = entry.clone();
            tokio::task::spawn_blocking(move || store.drop_pieces(&e, &bad))
                .await
                .map_err(|_| DownloadError::ShuttingDown)??;
        }
        entry.mark_held_pieces_checked();
        Ok(())
    }

    /// Checks the whole content when its digest is known, then marks the task complete.
    pub(crate) async fn complete(
        &self,
        spec: &TaskSpec,
        claims: Arc<PieceClaims>,
    ) -> Result<(), DownloadError> {
        let entry = claims.entry.clone();
        if let Some(expected) = spec.key.digest {
            if let Err(e) = content_check::verify(entry.clone(), expected).await {
                let store = self.store.clone();
                let id = spec.id;
                let _ = tokio::task::spawn_blocking(move || store.remove_task(&id)).await;
                return Err(e);
            }
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.mark_complete(&entry))
            .await
            .map_err(|_| DownloadError::ShuttingDown)??;
        Ok(())
    }

    /// Tells the scheduler at `url` about every complete task held here that it serves, so
    /// peers can download from this host after a daemon or scheduler restart. Called
    /// whenever a host session opens.
    pub async fn announce_held(&self, url: &str) {
        for entry in self.store.tasks().into_iter().filter(|e| e.is_complete()) {
            let links = self.schedulers.for_task(&entry.id.hex());
            let Some(link) = links.first().filter(|l| l.url == url) else {
                continue;
            };
            self.announce_entry(link, &entry).await;
        }
    }

    /// Tells the task's own scheduler, if there is one, that this host holds `entry` whole
    /// (a task that entered the cache other than by a download, e.g. imported).
    pub(crate) async fn announce_complete(&self, entry: &Arc<TaskEntry>) {
        if let Some(link) = self.schedulers.for_task(&entry.id.hex()).first() {
            self.announce_entry(link, entry).await;
        }
    }

    /// Registers a peer of this host holding the whole of `entry` with `link`'s scheduler.
    async fn announce_entry(&self, link: &SchedulerLink, entry: &Arc<TaskEntry>) {
        let meta = entry.snapshot().meta;
        let register = Register {
            peer_id: format!("{}-held-{}", self.host_id, &entry.id.hex()[..16]),
            host_id: self.host_id.clone(),
            task: Some(TaskRequest {
                task_id: entry.id.hex(),
                url: meta.url.clone(),
                digest: meta.digest.clone().unwrap_or_default(),
                tag: meta.tag.clone(),
                application: meta.application.clone(),
                filtered_query: meta.filtered_query.clone(),
                private: meta.private,
                version: meta.version.clone(),
                ..Default::default()
            }),
        };
        let Ok(Ok(a)) =
            tokio::time::timeout(self.cfg.connect_timeout * 2, link.announce(register)).await
        else {
            warn!(task = %entry.id, "could not announce a held task to the scheduler");
            return;
        };
        let mut tx = Some(AnnounceQueue::new(a.tx));
        let layout = entry.layout();
        announce(
            &mut tx,
            peer_event::Event::ContentInfo(ContentInfo {
                content_length: layout.content_length(),
                piece_length: layout.piece_length(),
            }),
        );
        announce(
            &mut tx,
            pieces_event(
                entry
                    .present_digests()
                    .into_iter()
                    .map(|(n, d)| (n, d, None)),
            ),
        );
        announce(&mut tx, peer_event::Event::Finished(PeerFinished {}));
        close_announce(tx, Some(a.rx));
    }
}
