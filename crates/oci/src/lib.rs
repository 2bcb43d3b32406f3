//! OCI images as users name them: image references (`alpine`, `ghcr.io/org/app:1.2`,
//! `localhost:5000/x@sha256:…`) parsed, checked against the distribution spec's grammar and
//! normalised the way Docker does, and repository names checked for the registry mirror.
//! Every input here comes from a user or a client, so nothing panics and sizes are bounded.
//! [`resolve`] turns a reference into the blobs a pull fetches, through the OCI distribution
//! API (for preheating them into the swarm), and [`artifact`] reads an artifact's layers (the
//! `oci://` origin).

#![warn(missing_docs)]

mod distribution;
mod platform;
mod reference;

pub use distribution::{
    artifact, resolve, Artifact, Blob, Credentials, DistributionError, Layer, Registry, Resolved,
    UrlCheck,
};
pub use platform::Platform;
pub use reference::{is_repository_name, ImageReference, ReferenceError, DOCKER_HUB};
