//! Every origin this build reads, chosen by the URL's scheme: what the daemon holds and
//! hands its origin readers.

use async_trait::async_trait;

use crate::bucket::{BucketSource, Cloud};
use crate::error::SourceError;
use crate::file::FileSource;
use crate::http::HttpSource;
use crate::hub::HubSource;
use crate::oci::OciSource;
use crate::origin_guard::OriginPolicy;
use crate::source::{Listing, OriginResponse, ReadRequest, Resolved, Source};

/// The origins, one per kind of URL.
#[derive(Clone, Debug)]
pub struct Sources {
    http: HttpSource,
    file: FileSource,
    buckets: Vec<BucketSource>,
    hub: Option<HubSource>,
    oci: Option<OciSource>,
}

impl Sources {
    /// The origins: `http` for http(s) URLs, `file` for file URLs, and one source per cloud
    /// for its buckets' URLs (a cloud without one refuses its URLs).
    pub fn new(http: HttpSource, file: FileSource, buckets: Vec<BucketSource>) -> Self {
        Self {
            http,
            file,
            buckets,
            hub: None,
            oci: None,
        }
    }

    /// These origins and `hub` for `hf://` URLs.
    pub fn with_hub(self, hub: HubSource) -> Self {
        Self {
            hub: Some(hub),
            ..self
        }
    }

    /// These origins and `oci` for `oci://` URLs.
    pub fn with_oci(self, oci: OciSource) -> Self {
        Self {
            oci: Some(oci),
            ..self
        }
    }

    /// The HTTP origin (the proxy relays through it).
    pub fn http(&self) -> &HttpSource {
        &self.http
    }

    /// The origin that reads `url`.
    fn pick(&self, url: &str) -> Result<&dyn Source, SourceError> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("http" | "https") => Ok(&self.http),
            Some("file") => Ok(&self.file),
            Some("hf") => match &self.hub {
                Some(h) => Ok(h),
                None => Err(SourceError::Unsupported {
                    url: url.to_string(),
                    reason: "this daemon reads no Hugging Face hub".into(),
                }),
            },
            Some("oci") => match &self.oci {
                Some(o) => Ok(o),
                None => Err(SourceError::Unsupported {
                    url: url.to_string(),
                    reason: "this daemon reads no OCI registry".into(),
                }),
            },
            Some(other) if Cloud::of_scheme(other).is_some() => {
                let cloud = Cloud::of_scheme(other);
                match self.buckets.iter().find(|b| Some(b.cloud()) == cloud) {
                    Some(b) => Ok(b),
                    None => Err(SourceError::Unsupported {
                        url: url.to_string(),
                        reason: "this daemon reads no bucket of that cloud".into(),
                    }),
                }
            }
            _ => Err(SourceError::Unsupported {
                url: url.to_string(),
                reason: format!(
                    "no origin reads this scheme (supported: {})",
                    pollen_core::task_id::SCHEMES.join(", ")
                ),
            }),
        }
    }
}

#[async_trait]
impl Source for Sources {
    fn check(&self, url: &str, policy: OriginPolicy) -> Result<(), SourceError> {
        self.pick(url)?.check(url, policy)
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        self.pick(req.url)?.read(req).await
    }

    async fn list(
        &self,
        url: &str,
        policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        // An HTTP directory is listed from its index pages (the HTTP origin itself reads
        // single objects only).
        if url
            .split_once(':')
            .is_some_and(|(s, _)| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        {
            return crate::dir_index::list(&self.http, url, policy, limit).await;
        }
        self.pick(url)?.list(url, policy, limit).await
    }

    async fn resolve(&self, url: &str, policy: OriginPolicy) -> Result<Resolved, SourceError> {
        self.pick(url)?.resolve(url, policy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::BucketSettings;
    use crate::origin_guard::OriginGuard;
    use std::time::Duration;

    fn sources(clouds: &[Cloud]) -> Sources {
        let guard = OriginGuard::default();
        let t = Duration::from_secs(1);
        let settings = BucketSettings {
            options: Vec::new(),
            connect_timeout: t,
            read_timeout: t,
            extra_roots: Vec::new(),
        };
        let buckets = clouds
            .iter()
            .map(|c| BucketSource::new(*c, settings.clone(), &guard).expect("bucket source"))
            .collect();
        Sources::new(
            HttpSource::new(t, t, &[], guard).expect("http"),
            FileSource::default(),
            buckets,
        )
    }

    #[test]
    fn each_url_goes_to_the_origin_of_its_scheme() {
        let all = sources(&[Cloud::S3, Cloud::Gcs, Cloud::Azure]);
        let policy = OriginPolicy::LocalUser;
        for ok in [
            "http://example.com/a",
            "HTTPS://example.com/a",
            "file:///data/a",
            "s3://b/k",
            "gs://b/k",
            "azblob://c/k",
            "az://c/k",
        ] {
            assert!(all.check(ok, policy).is_ok(), "{ok}");
        }
        // A cloud's source checks its own URL form: a bucket without a key is refused.
        assert!(matches!(
            all.check("gs://b", policy),
            Err(SourceError::Unsupported { reason, .. }) if reason.contains("gs://bucket/key")
        ));
        assert!(matches!(
            all.check("ftp://h/x", policy),
            Err(SourceError::Unsupported { reason, .. }) if reason.contains("http, https, file")
        ));
        let no_azure = sources(&[Cloud::S3]);
        assert!(matches!(
            no_azure.check("azblob://c/k", policy),
            Err(SourceError::Unsupported { .. })
        ));
    }
}
