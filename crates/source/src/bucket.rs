//! Objects in cloud buckets as origins: S3 and S3-compatible stores (`s3://bucket/key`),
//! Google Cloud Storage (`gs://bucket/key`) and Azure Blob Storage
//! (`azblob://container/key`), through the `object_store` crate's clients (request signing,
//! credential chains) over our own HTTP client, so every request passes the origin guard like
//! any other origin's.
//!
//! Settings come from each cloud's standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`: keys,
//! region, endpoint overrides for MinIO, Ceph, Garage, OSS or an emulator, web and workload
//! identity) and then from the daemon's `origin_s3`, `origin_gcs` and `origin_azure` tables,
//! whose keys are the crate's configuration keys (`endpoint`, `region`, `access_key_id`,
//! `secret_access_key`, `service_account_key`, `account_name`, `access_key`, `allow_http`, …).
//! Seeds fetch with their own credentials; peers never need any. Instance metadata
//! (169.254.169.254) is refused by the origin guard like every link-local address: list it in
//! `origin_allow` to take credentials from there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, RetryConfig};

use crate::error::SourceError;
use crate::http::{client, Redirects};
use crate::origin_guard::{refusal_in, OriginGuard, OriginPolicy};
use crate::source::{Listed, Listing, OriginResponse, ReadRequest, Resolved, Source};

/// The clouds whose buckets are origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// S3 and S3-compatible stores: `s3://bucket/key`.
    S3,
    /// Google Cloud Storage: `gs://bucket/key`.
    Gcs,
    /// Azure Blob Storage: `azblob://container/key` (or `az://`).
    Azure,
}

impl Cloud {
    /// The cloud whose URLs have `scheme`.
    pub fn of_scheme(scheme: &str) -> Option<Self> {
        match scheme {
            "s3" => Some(Self::S3),
            "gs" => Some(Self::Gcs),
            "azblob" | "az" => Some(Self::Azure),
            _ => None,
        }
    }

    /// The daemon's settings table for this cloud.
    pub fn settings_name(self) -> &'static str {
        match self {
            Self::S3 => "origin_s3",
            Self::Gcs => "origin_gcs",
            Self::Azure => "origin_azure",
        }
    }

    /// The URL form, for messages.
    fn form(self) -> &'static str {
        match self {
            Self::S3 => "s3://bucket/key",
            Self::Gcs => "gs://bucket/key",
            Self::Azure => "azblob://container/key",
        }
    }

    /// Checks every key of `options` against this cloud's configuration keys.
    fn check_keys(self, options: &[(String, String)]) -> Result<(), String> {
        for (k, _) in options {
            let known = match self {
                Self::S3 => k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(),
                Self::Gcs => k.parse::<object_store::gcp::GoogleConfigKey>().is_ok(),
                Self::Azure => k.parse::<object_store::azure::AzureConfigKey>().is_ok(),
            };
            if !known {
                return Err(format!("{} has an unknown key {k:?}", self.settings_name()));
            }
        }
        Ok(())
    }

    /// A client of `bucket` from the environment and `options`, over `transport`.
    fn client(
        self,
        bucket: &str,
        options: &[(String, String)],
        transport: Transport,
    ) -> object_store::Result<Arc<dyn ObjectStore>> {
        // The origin reader retries a broken transfer itself, resuming where it broke.
        let retry = RetryConfig {
            max_retries: 1,
            ..RetryConfig::default()
        };
        let pairs = options.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        Ok(match self {
            Self::S3 => {
                let mut b = AmazonS3Builder::from_env();
                for (k, v) in pairs {
                    b = b.with_config(k.parse()?, v);
                }
                let b = b.with_bucket_name(bucket).with_retry(retry);
                Arc::new(b.with_http_connector(transport).build()?)
            }
            Self::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env();
                for (k, v) in pairs {
                    b = b.with_config(k.parse()?, v);
                }
                let b = b.with_bucket_name(bucket).with_retry(retry);
                Arc::new(b.with_http_connector(transport).build()?)
            }
            Self::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env();
                for (k, v) in pairs {
                    b = b.with_config(k.parse()?, v);
                }
                let b = b.with_container_name(bucket).with_retry(retry);
                Arc::new(b.with_http_connector(transport).build()?)
            }
        })
    }
}

/// How a cloud's buckets are reached: the settings beside the environment, and the HTTP
/// client's.
#[derive(Clone)]
pub struct BucketSettings {
    /// `object_store` configuration keys and values, applied over the cloud's environment.
    pub options: Vec<(String, String)>,
    /// Connect timeout of every request.
    pub connect_timeout: std::time::Duration,
    /// Silence after which a request or a body is given up.
    pub read_timeout: std::time::Duration,
    /// Extra PEM roots trusted beside the web PKI (an internal CA that signs the endpoint).
    pub extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for BucketSettings {
    // Values may be secrets (a secret access key): only the keys are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketSettings")
            .field(
                "options",
                &self.options.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Reads objects from one cloud's buckets, one client per bucket and guard policy.
#[derive(Clone, Debug)]
pub struct BucketSource {
    cloud: Cloud,
    settings: Arc<BucketSettings>,
    guard: OriginGuard,
    local_user: reqwest::Client,
    fleet: reqwest::Client,
    stores: Arc<Mutex<Stores>>,
}

/// The clients made so far, by bucket and guard policy.
type Stores = HashMap<(String, OriginPolicy), Arc<dyn ObjectStore>>;

/// Our HTTP client as `object_store`'s transport: every request's address is checked by the
/// guard (an IP literal never meets the guarded resolver), names as they resolve.
#[derive(Clone, Debug)]
struct Transport {
    http: reqwest::Client,
    guard: OriginGuard,
    policy: OriginPolicy,
}

impl HttpConnector for Transport {
    fn connect(&self, _options: &object_store::ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Service(self.clone())))
    }
}

#[derive(Debug)]
struct Service(Transport);

fn http_error(e: reqwest::Error) -> HttpError {
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_body() || e.is_decode() {
        HttpErrorKind::Interrupted
    } else {
        HttpErrorKind::Request
    };
    HttpError::new(kind, e)
}

#[async_trait]
impl HttpService for Service {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string())
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let Transport {
            http,
            guard,
            policy,
        } = &self.0;
        guard
            .check_url(&url, *policy)
            .map_err(|refusal| HttpError::new(HttpErrorKind::Request, refusal))?;
        // Origins only read: a request body is never more than bytes in memory.
        let bytes = match body.as_bytes() {
            Some(b) => b.clone(),
            None if body.is_empty() => bytes::Bytes::new(),
            None => {
                return Err(HttpError::new(
                    HttpErrorKind::Request,
                    std::io::Error::other("streamed request bodies are not sent to origins"),
                ))
            }
        };
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        *request.body_mut() = Some(bytes.into());
        let response = http.execute(request).await.map_err(http_error)?;
        let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
        Ok(HttpResponse::from_parts(
            parts,
            HttpResponseBody::new(body.map_err(http_error)),
        ))
    }
}

/// The bucket (or container) of `url`, a URL of `cloud`, and the path after it with its
/// slashes trimmed; `bad` makes the error for a URL that is not one.
fn split(
    cloud: Cloud,
    url: &str,
    bad: &dyn Fn(&str) -> SourceError,
) -> Result<(String, String), SourceError> {
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if Cloud::of_scheme(u.scheme()) != Some(cloud) {
        return Err(bad("another kind of URL"));
    }
    let bucket = u
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("no bucket"))?;
    Ok((
        bucket.to_string(),
        u.path().trim_start_matches('/').to_string(),
    ))
}

/// The bucket (or container) and key of `url`, an object of `cloud`.
fn parse(cloud: Cloud, url: &str) -> Result<(String, Path), SourceError> {
    let bad = |reason: &str| SourceError::Unsupported {
        url: url.to_string(),
        reason: format!("{reason} ({})", cloud.form()),
    };
    let (bucket, key) = split(cloud, url, &bad)?;
    if key.is_empty() || key.ends_with('/') {
        return Err(bad("no object key"));
    }
    let key = Path::from_url_path(key).map_err(|e| bad(&e.to_string()))?;
    Ok((bucket, key))
}

/// The bucket (or container) of `url` and the key prefix below which it lists (`None`: the
/// whole bucket). `s3://b/dir` and `s3://b/dir/` both list the objects under `dir/`.
fn parse_prefix(cloud: Cloud, url: &str) -> Result<(String, Option<Path>), SourceError> {
    let bad = |reason: &str| SourceError::Unsupported {
        url: url.to_string(),
        reason: format!("{reason} ({}, or a prefix of keys)", cloud.form()),
    };
    let (bucket, prefix) = split(cloud, url, &bad)?;
    let prefix = prefix.trim_end_matches('/');
    let prefix = if prefix.is_empty() {
        None
    } else {
        Some(Path::from_url_path(prefix).map_err(|e| bad(&e.to_string()))?)
    };
    Ok((bucket, prefix))
}

/// The URL of `key` in `bucket`, in the form [`parse`] reads back.
fn object_url(scheme: &str, bucket: &str, key: &str) -> Result<String, SourceError> {
    let mut u = url::Url::parse(&format!("{scheme}://{bucket}/"))
        .map_err(|e| SourceError::Protocol(format!("bucket {bucket:?}: {e}")))?;
    u.path_segments_mut()
        .map_err(|()| SourceError::Protocol(format!("bucket {bucket:?} has no key path")))?
        .pop_if_empty()
        .extend(key.split('/'));
    Ok(u.to_string())
}

/// `e` as a [`SourceError`] for `url`: what a user needs to tell a refusal from a fault.
fn source_error(url: &str, e: object_store::Error) -> SourceError {
    if let Some(r) = refusal_in(&e) {
        return SourceError::Refused(r.to_string());
    }
    match e {
        object_store::Error::NotFound { .. } => SourceError::NotFound {
            url: url.to_string(),
            what: "the object does not exist".into(),
        },
        // A listed key no path can take (`a/../b`): the bucket holds it, nothing failed.
        object_store::Error::InvalidPath { source } => SourceError::Unsupported {
            url: url.to_string(),
            reason: format!("the bucket holds a key that cannot be a path below it ({source})"),
        },
        object_store::Error::PermissionDenied { .. } => SourceError::Status {
            status: 403,
            url: url.to_string(),
        },
        object_store::Error::Unauthenticated { .. } => SourceError::Status {
            status: 401,
            url: url.to_string(),
        },
        other => SourceError::Connect {
            url: url.to_string(),
            source: Box::new(other),
        },
    }
}

impl BucketSource {
    /// A source of `cloud`'s objects reading with `settings`, connecting only where `guard`
    /// lets it.
    pub fn new(
        cloud: Cloud,
        settings: BucketSettings,
        guard: &OriginGuard,
    ) -> Result<Self, SourceError> {
        let make = |policy| {
            client(
                settings.connect_timeout,
                settings.read_timeout,
                &settings.extra_roots,
                Redirects::Follow,
                guard,
                policy,
            )
        };
        // A bad key is an error now, at start, not at the first download.
        cloud
            .check_keys(&settings.options)
            .map_err(|what| SourceError::Client { what, source: None })?;
        Ok(Self {
            cloud,
            local_user: make(OriginPolicy::LocalUser)?,
            fleet: make(OriginPolicy::Fleet)?,
            settings: Arc::new(settings),
            guard: guard.clone(),
            stores: Arc::default(),
        })
    }

    /// The cloud whose buckets this source reads.
    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// The client for `bucket` under `policy`, made on first use.
    fn store(
        &self,
        bucket: &str,
        policy: OriginPolicy,
    ) -> Result<Arc<dyn ObjectStore>, SourceError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(&(bucket.to_string(), policy)) {
            return Ok(s.clone());
        }
        let http = match policy {
            OriginPolicy::LocalUser => self.local_user.clone(),
            OriginPolicy::Fleet => self.fleet.clone(),
        };
        let transport = Transport {
            http,
            guard: self.guard.clone(),
            policy,
        };
        let store = self
            .cloud
            .client(bucket, &self.settings.options, transport)
            .map_err(|e| SourceError::Client {
                what: format!(
                    "the {:?} client for bucket {bucket:?} (settings: the environment and {})",
                    self.cloud,
                    self.cloud.settings_name()
                ),
                source: Some(Box::new(e)),
            })?;
        stores.insert((bucket.to_string(), policy), store.clone());
        Ok(store)
    }
}

#[async_trait]
impl Source for BucketSource {
    fn check(&self, url: &str, _policy: OriginPolicy) -> Result<(), SourceError> {
        parse(self.cloud, url).map(drop)
    }

    async fn read(&self, req: ReadRequest<'_>) -> Result<OriginResponse, SourceError> {
        let (bucket, key) = parse(self.cloud, req.url)?;
        let store = self.store(&bucket, req.policy)?;
        let range = match req.end {
            Some(end) if end > req.start => Some(GetRange::Bounded(req.start..end)),
            _ if req.start > 0 => Some(GetRange::Offset(req.start)),
            _ => None,
        };
        let ranged = GetOptions {
            range,
            if_match: req.if_range.map(str::to_string),
            ..GetOptions::default()
        };
        let result = match store.get_opts(&key, ranged).await {
            // The object changed since the validator was recorded: the whole new one, as an
            // HTTP origin answers a stale If-Range.
            Err(object_store::Error::Precondition { .. }) => {
                store.get_opts(&key, GetOptions::default()).await
            }
            other => other,
        }
        .map_err(|e| source_error(req.url, e))?;
        let url = req.url.to_string();
        let (size, start) = (result.meta.size, result.range.start);
        let (etag, modified) = (result.meta.e_tag.clone(), result.meta.last_modified);
        let stream = result.into_stream().map(move |r| {
            r.map_err(|e| SourceError::Body {
                what: format!("reading {url}"),
                source: Some(Box::new(e)),
            })
        });
        Ok(OriginResponse::new(
            size,
            start,
            etag,
            Some(modified.to_rfc2822()),
            Box::pin(stream),
        ))
    }

    /// The object's ETag, so the task is this version of it and a changed object a new task.
    /// A daemon that cannot ask (no credentials: peers need none, their seed reads; the guard
    /// keeping its credential chain off the metadata service) names the task by its URL
    /// alone; an object that does not exist is refused now.
    async fn resolve(&self, url: &str, policy: OriginPolicy) -> Result<Resolved, SourceError> {
        let (bucket, key) = parse(self.cloud, url)?;
        let head = match self.store(&bucket, policy) {
            Ok(store) => store.head(&key).await.map_err(|e| source_error(url, e)),
            Err(e) => Err(e),
        };
        let meta = match head {
            Ok(meta) => Some(meta),
            Err(e @ SourceError::NotFound { .. }) => return Err(e),
            Err(e) => {
                tracing::debug!(url, error = %e, "cannot ask the bucket for the object's version; the task is named by its URL alone");
                None
            }
        };
        Ok(Resolved {
            url: url.to_string(),
            digest: None,
            size: meta.as_ref().map(|m| m.size),
            private: false,
            version: meta.and_then(|m| m.e_tag),
        })
    }

    async fn list(
        &self,
        url: &str,
        policy: OriginPolicy,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let (bucket, prefix) = parse_prefix(self.cloud, url)?;
        let scheme = url
            .split_once(':')
            .map_or("", |(s, _)| s)
            .to_ascii_lowercase();
        let store = self.store(&bucket, policy)?;
        let mut objects = store.list(prefix.as_ref());
        let mut listing = Listing::default();
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| source_error(url, e))?;
            let key = meta.location.as_ref();
            let below = match &prefix {
                Some(p) => key
                    .strip_prefix(p.as_ref())
                    .and_then(|rest| rest.strip_prefix('/')),
                None => Some(key),
            };
            // A "directory" marker (`dir/`) holds no content of its own.
            let Some(path) = below.filter(|p| !p.is_empty() && !p.ends_with('/')) else {
                continue;
            };
            if listing.objects.len() == limit {
                listing.truncated = true;
                break;
            }
            listing.objects.push(Listed {
                url: object_url(&scheme, &bucket, key)?,
                path: path.to_string(),
                size: meta.size,
                version: meta.e_tag,
                digest: None,
            });
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_name_a_bucket_and_a_key() {
        let (bucket, key) =
            parse(Cloud::S3, "s3://models/llama/7b/weights%20v1.bin").expect("valid");
        assert_eq!(bucket, "models");
        assert_eq!(key.as_ref(), "llama/7b/weights v1.bin");
        let (bucket, _) = parse(Cloud::Azure, "az://data/x").expect("az");
        assert_eq!(bucket, "data");
        assert!(parse(Cloud::Gcs, "gs://b/k").is_ok());
        for bad in ["s3://bucket", "s3://bucket/dir/", "s3:///key", "gs://b/k"] {
            assert!(
                matches!(parse(Cloud::S3, bad), Err(SourceError::Unsupported { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefixes_list_below_a_directory_and_listed_keys_read_back() {
        for (url, want) in [
            ("s3://b", None),
            ("s3://b/", None),
            ("s3://b/data", Some("data")),
            ("s3://b/data/2024/", Some("data/2024")),
        ] {
            let (bucket, prefix) = parse_prefix(Cloud::S3, url).expect(url);
            assert_eq!(bucket, "b");
            assert_eq!(prefix.as_ref().map(|p| p.as_ref()), want, "{url}");
        }
        assert!(parse_prefix(Cloud::S3, "gs://b/x").is_err());
        // A listed key, odd characters and all, is read back as the same key.
        for key in ["a/b.bin", "dir/with space/f#1?.txt", "x/%41"] {
            let url = object_url("s3", "b", key).expect("url");
            let (bucket, back) = parse(Cloud::S3, &url).expect(&url);
            assert_eq!((bucket.as_str(), back.as_ref()), ("b", key), "{url}");
        }
    }

    #[tokio::test]
    async fn an_endpoint_the_guard_refuses_is_never_contacted() {
        // Cloud metadata as the "endpoint": the request goes through the guarded client,
        // which refuses it before connecting, and the error says so.
        let options = [
            ("endpoint", "http://169.254.169.254:9000"),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", "k"),
            ("secret_access_key", "s"),
        ];
        let source = BucketSource::new(
            Cloud::S3,
            BucketSettings {
                options: options
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                connect_timeout: std::time::Duration::from_secs(2),
                read_timeout: std::time::Duration::from_secs(2),
                extra_roots: Vec::new(),
            },
            &OriginGuard::default(),
        )
        .expect("source");
        let e = source
            .read(ReadRequest::whole(
                "s3://bucket/key",
                OriginPolicy::LocalUser,
            ))
            .await
            .err();
        assert!(matches!(e, Some(SourceError::Refused(_))), "{e:?}");
    }

    #[test]
    fn settings_never_show_their_values() {
        let s = BucketSettings {
            options: vec![("secret_access_key".into(), "hunter2".into())],
            connect_timeout: std::time::Duration::from_secs(1),
            read_timeout: std::time::Duration::from_secs(1),
            extra_roots: Vec::new(),
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("secret_access_key") && !shown.contains("hunter2"),
            "{shown}"
        );
        for cloud in [Cloud::S3, Cloud::Gcs, Cloud::Azure] {
            let refused = BucketSource::new(
                cloud,
                BucketSettings {
                    options: vec![("no_such_key".into(), "x".into())],
                    ..s.clone()
                },
                &OriginGuard::default(),
            );
            assert!(
                matches!(refused, Err(SourceError::Client { ref what, .. }) if what.contains(cloud.settings_name())),
                "{cloud:?}: {refused:?}"
            );
        }
    }
}
