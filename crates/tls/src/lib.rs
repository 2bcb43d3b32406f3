//! Mutual TLS between Pollen's roles: one place that turns certificate files into rustls and
//! tonic configurations, so the scheduler's gRPC port, the daemons' data plane and their
//! clients all check the same thing in the same way — the other side presents a certificate
//! signed by the cluster's CA — and a throwaway CA for test clusters (`pollen certs dev`).

mod config;
mod dev;
mod material;

pub use config::{TlsConfig, DEFAULT_PEER_NAME};
pub use dev::{make_dev_certs, new_ca, write_new, DevCerts};
pub use material::{Material, TlsError};
pub use rustls;
