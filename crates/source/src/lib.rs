//! Origin back-ends: where content comes from when no peer has it.
//!
//! Every fetch passes the origin guard (`origin_guard`): cloud metadata and link-local
//! addresses are refused, and under the fleet policy loopback and this node's own addresses.
//!
//! Every origin implements [`Source`]: ranged reads that stream, so a partial task resumes
//! from its first missing piece. [`Sources`] picks the origin by URL scheme: HTTP and HTTPS
//! (rustls, no system OpenSSL), local files under allowed directories, buckets (s3, gs,
//! azblob), the Hugging Face Hub (hf) and OCI artifacts in registries (oci). The caller sees a
//! byte stream plus what the origin said about the content (length, ETag, Last-Modified);
//! errors say whether the origin refused (a status to show the user) or the transfer broke
//! (worth a retry).

#![warn(missing_docs)]

mod bucket;
mod dir_index;
mod error;
mod file;
mod http;
mod hub;
mod oci;
mod origin_guard;
mod source;
mod sources;

pub use bucket::{BucketSettings, BucketSource, Cloud};
pub use dir_index::links as index_links;
pub use error::SourceError;
pub use file::FileSource;
pub use http::{client, connect_error, HttpSource, Redirects};
pub use hub::{HubSettings, HubSource, DEFAULT_ENDPOINT as DEFAULT_HUB};
pub use oci::{OciSettings, OciSource};
pub use origin_guard::{
    refusal_in, BadAllowEntry, GuardRefusal, GuardRule, OriginGuard, OriginPolicy, ResolveError,
};
pub use source::{
    safe_relative_path, BodyStream, Listed, Listing, OriginResponse, ReadRequest, Resolved, Source,
};
pub use sources::Sources;
