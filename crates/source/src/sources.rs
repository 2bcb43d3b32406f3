//! Every origin this build reads, chosen by the URL's scheme: what the daemon holds and
//! hands its origin readers.

use async_trait::async_trait;

use crate::error::SourceError;
use crate::file::FileSource;
use crate::http::HttpSource;
use crate::origin_guard::OriginPolicy;
use crate::source::{OriginResponse, ReadRequest, Source};

/// The origins, one per kind of URL.
#[derive(Clone, Debug)]
pub struct Sources {
    http: HttpSource,
    file: FileSource,
}

impl Sources {
    /// The origins: `http` for http(s) URLs, `file` for file URLs.
    pub fn new(http: HttpSource, file: FileSource) -> Self {
        Self { http, file }
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
