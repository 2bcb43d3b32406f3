//! Mutual TLS between Pollen's roles: one place that turns certificate files into rustls and
//! tonic configurations, so the manager's and the scheduler's gRPC ports, the daemons' data
//! plane and their clients all check the same thing in the same way — the other side presents
//! a certificate signed by the cluster's CA — and a throwaway CA for test clusters (`pollen
//! certs dev`). The gRPC servers' connection admission lives here too, since under TLS the
//! handshake is what a connection must finish in time.

#![warn(missing_docs)]

mod config;
mod dev;
mod endpoint;
pub mod incoming;
mod material;
mod role;

pub use config::{TlsConfig, DEFAULT_PEER_NAME};
pub use dev::{issue_host_cert, make_dev_certs, new_ca, write_new, DevCerts, HostCert};
pub use endpoint::{grpc_endpoint, with_join_token, LinkError};
pub use material::{https_server_config, Material, TlsError};
pub use role::{
    host_of, roles_of, valid_host_id, ProvenRoles, Role, HOST_URI_PREFIX, ROLE_URI_PREFIX,
};
pub use rustls;
