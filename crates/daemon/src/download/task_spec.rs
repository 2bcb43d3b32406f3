//! A validated download request: the task key (and so the task id), the headers the origin
//! gets, and who ordered it. Built from the local API's request, the scheduler's seed trigger
//! or the manager's preheat; nothing here does I/O.

use pollen_core::{ContentDigest, TaskId, TaskKey};
use pollen_proto::daemon::DownloadRequest;
use pollen_proto::scheduler::TaskRequest;
use pollen_source::{OriginPolicy, Source as _, Sources};

use crate::error::DownloadError;

/// A validated download request.
#[derive(Clone, Debug)]
pub(crate) struct TaskSpec {
    pub id: TaskId,
    pub key: TaskKey,
    pub headers: Vec<(String, String)>,
    /// This task's own download limit in bytes per second (0: only the host's
    /// `task_download_rate_limit`); a preheat job's rate limit. Applies when the request
    /// starts the task, not when it joins one already running.
    pub rate_limit: u64,
    /// Another host (the scheduler, the manager) ordered this download, so the origin guard
    /// applies its fleet rules (no loopback, no address of this node).
    pub ordered_by_fleet: bool,
    /// Fail rather than read the origin (`pollen get --no-origin`).
    pub no_origin: bool,
}

impl TaskSpec {
    /// A request for `key` sent with `headers`; credentials among them with a digest make
    /// the task private (its id bound to the URL, see `pollen_core::task_id`).
    pub fn new(mut key: TaskKey, headers: Vec<(String, String)>) -> Result<Self, DownloadError> {
        if key.digest.is_some()
            && pollen_core::credentials::any_credentials(headers.iter().map(|(n, _)| n.as_str()))
        {
            key.private = true;
        }
        let id = key
            .task_id()
            .map_err(|e| DownloadError::InvalidRequest(e.to_string()))?;
        Ok(Self {
            id,
            key,
            headers,
            rate_limit: 0,
            ordered_by_fleet: false,
            no_origin: false,
        })
    }

    /// This task as one the origin serves only to callers with credentials: its id bound to
    /// the URL (see `pollen_core::task_id`), shared only with peers that prove the same access.
    pub fn private(mut self) -> Result<Self, DownloadError> {
        self.key.private = true;
        self.rekey()
    }

    /// The same task at `version` of the object (see `TaskKey::version`).
    pub fn at_version(mut self, version: String) -> Result<Self, DownloadError> {
        self.key.version = version;
        self.rekey()
    }

    fn rekey(mut self) -> Result<Self, DownloadError> {
        self.id = self
            .key
            .task_id()
            .map_err(|e| DownloadError::InvalidRequest(e.to_string()))?;
        Ok(self)
    }

    /// The task a scheduler or manager asked for (a seed trigger, a preheat).
    pub fn from_proto(t: TaskRequest) -> Result<Self, DownloadError> {
        let digest = if t.digest.is_empty() {
            None
        } else {
            Some(
                t.digest
                    .parse::<ContentDigest>()
                    .map_err(|e| DownloadError::InvalidRequest(e.to_string()))?,
            )
        };
        let key = TaskKey {
            url: t.url,
            digest,
            tag: t.tag,
            application: t.application,
            filtered_query: t.filtered_query,
            private: t.private,
            version: t.version,
        };
        Self::new(
            key,
            t.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        )
    }

    /// The task as the scheduler's register message carries it.
    pub fn to_proto(&self) -> TaskRequest {
        TaskRequest {
            task_id: self.id.hex(),
            url: self.key.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| pollen_proto::scheduler::Header {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
            tag: self.key.tag.clone(),
            application: self.key.application.clone(),
            digest: self.key.digest.map(|d| d.to_string()).unwrap_or_default(),
            filtered_query: self.key.filtered_query.clone(),
            private: self.key.private,
            version: self.key.version.clone(),
        }
    }

    /// The task as the register message to the scheduler carries it: a private task's
    /// credentials stay on this host (the scheduler relays no private task to a seed, and
    /// the task's own peers read the origin with the credentials they hold).
    pub fn for_scheduler(&self) -> TaskRequest {
        let mut t = self.to_proto();
        if self.key.private {
            t.headers
                .retain(|h| !pollen_core::credentials::is_credential_header(&h.name));
        }
        t
    }

    /// The task `req` asks for once its origin said what the URL stands for (see
    /// `Source::resolve`): a revision pinned to its commit, the digest the origin publishes
    /// (the task is then content-addressed and checked), the object's version, whether the
    /// origin serves it only with credentials. Asked under `policy`.
    pub async fn resolved(
        mut req: DownloadRequest,
        source: &Sources,
        policy: OriginPolicy,
    ) -> Result<Self, DownloadError> {
        let mut spec = Self::from_request(&req)?;
        let resolved = source.resolve(&req.url, policy).await?;
        if resolved.url != req.url || (req.digest.is_empty() && resolved.digest.is_some()) {
            req.url = resolved.url;
            if req.digest.is_empty() {
                req.digest = resolved.digest.map(|d| d.to_string()).unwrap_or_default();
            }
            spec = Self::from_request(&req)?;
        }
        if resolved.private {
            spec = spec.private()?;
        }
        if let Some(v) = resolved.version.filter(|_| spec.key.digest.is_none()) {
            spec = spec.at_version(v)?;
        }
        Ok(spec)
    }

    /// The task a local client asked for on the API socket (never private by its own
    /// say: credentials among its headers decide that, in [`TaskSpec::new`]).
    pub fn from_request(req: &DownloadRequest) -> Result<Self, DownloadError> {
        let spec = Self::from_proto(TaskRequest {
            task_id: String::new(),
            url: req.url.clone(),
            headers: req
                .headers
                .iter()
                .map(|h| pollen_proto::scheduler::Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            tag: req.tag.clone(),
            application: req.application.clone(),
            digest: req.digest.clone(),
            filtered_query: req.filtered_query.clone(),
            private: false,
            version: String::new(),
        })?;
        Ok(Self {
            no_origin: req.no_origin,
            ..spec
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str, digest: &str, headers: &[(&str, &str)]) -> DownloadRequest {
        DownloadRequest {
            url: url.into(),
            digest: digest.into(),
            headers: headers
                .iter()
                .map(|(n, v)| pollen_proto::daemon::Header {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn credentials_with_a_digest_make_a_private_task_under_another_id() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let public = TaskSpec::from_request(&request("http://o/x", &d, &[])).expect("spec");
        let private =
            TaskSpec::from_request(&request("http://o/x", &d, &[("Authorization", "Bearer t")]))
                .expect("spec");
        assert!(!public.key.private && private.key.private);
        assert_ne!(
            public.id, private.id,
            "a private blob must not share the public task"
        );
        // Without a digest the URL names the task either way.
        let a = TaskSpec::from_request(&request("http://o/x", "", &[])).expect("spec");
        let b =
            TaskSpec::from_request(&request("http://o/x", "", &[("Authorization", "Bearer t")]))
                .expect("spec");
        assert!(!b.key.private);
        assert_eq!(a.id, b.id);
    }

    #[test]
    fn a_private_tasks_credentials_never_reach_the_scheduler() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let headers = [("Authorization", "Bearer t"), ("Accept", "*/*")];
        let private = TaskSpec::from_request(&request("http://o/x", &d, &headers)).expect("spec");
        let sent = private.for_scheduler();
        assert!(sent.private);
        assert_eq!(sent.task_id, private.id.hex(), "the id is unchanged");
        let names: Vec<&str> = sent.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["Accept"]);
        // The download itself keeps them, for the origin.
        assert_eq!(private.headers.len(), 2);
    }

    #[test]
    fn bad_urls_and_digests_are_invalid_requests() {
        for (url, digest) in [
            ("not a url", ""),
            ("ftp://o/x", ""),
            ("http://o/x", "md5:00"),
        ] {
            let e = TaskSpec::from_request(&request(url, digest, &[])).expect_err(url);
            assert!(
                matches!(e, DownloadError::InvalidRequest(_)),
                "{url}: {e:?}"
            );
        }
    }

    #[test]
    fn the_scheduler_form_round_trips() {
        let d = format!("sha256:{}", "cd".repeat(32));
        let spec =
            TaskSpec::from_request(&request("http://o/x?sig=1", &d, &[("Authorization", "t")]))
                .expect("spec");
        let back = TaskSpec::from_proto(spec.to_proto()).expect("back");
        assert_eq!(back.id, spec.id);
        assert_eq!(back.key.private, spec.key.private);
        assert_eq!(back.headers, spec.headers);
        assert_eq!(spec.to_proto().task_id, spec.id.hex());
    }
}
