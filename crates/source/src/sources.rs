//! Every origin this build reads, chosen by the URL's scheme: what the daemon holds and
//! hands its origin readers.

use async_trait::async_trait;

use crate::error::SourceError;
use crate::file::FileSource;
use crate::http::HttpSource;
use crate::origin_guard::OriginPolicy;
use crate::s3::S3Source;
use crate::source::{OriginResponse, ReadRequest, Source};

/// The origins, one per kind of URL.
#[derive(Clone, Debug)]
pub struct Sources {
    http: HttpSource,
    file: FileSource,
    s3: S3Source,
}

impl Sources {
    /// The origins: `http` for http(s) URLs, `file` for file URLs, `s3` for s3 URLs.
    pub fn new(http: HttpSource, file: FileSource, s3: S3Source) -> Self {
        Self { http, file, s3 }
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
            Some("s3") => Ok(&self.s3),
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
}
