//! The manager: Pollen's control plane.
//!
//! It keeps, in a SQL database, the scheduler and seed-peer clusters of a deployment, the
//! schedulers and daemons that registered, users and their access tokens, an audit log of
//! every change, and jobs. Operators use its REST API (`/api/v1`, described by an OpenAPI
//! document) and console; schedulers and daemons use its gRPC service.
//!
//! Non-goals: the manager is never on a download's path. If it is down, schedulers and
//! daemons keep the placement and config they last received, and downloads go on.

#![warn(missing_docs)]

pub(crate) mod auth;
pub(crate) mod bootstrap;
pub(crate) mod config;
pub mod db;
pub(crate) mod grpc;
pub(crate) mod hub;
pub(crate) mod jobs;
pub(crate) mod metrics;
pub(crate) mod placement;
pub(crate) mod rest;
pub(crate) mod server;
pub(crate) mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use bootstrap::FirstAdmin;
pub use config::{ManagerConfig, RestTls};
pub use db::{Backend, Db, DbError};
pub use store::join_tokens::JoinRole;

use rest::AppState;

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The first admin, the default cluster or the first join token could not be made.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificates for mutual TLS (gRPC) or HTTPS (REST) could not be loaded.
    #[error("mutual TLS on the gRPC port")]
    Tls(#[from] pollen_tls::TlsError),
    /// The key that seals stored job secrets could not be read or made.
    #[error(transparent)]
    Secrets(#[from] auth::sealed::SealError),
}

/// An opened manager: database migrated, first admin in place, certificates loaded.
pub struct Manager {
    state: Arc<AppState>,
    grpc_tls: Option<Arc<pollen_tls::rustls::ServerConfig>>,
    rest_tls: Option<Arc<pollen_tls::rustls::ServerConfig>>,
    first_join_token: Option<std::path::PathBuf>,
}

impl Manager {
    /// Opens the database and makes sure an admin exists (see [`bootstrap`]).
    pub async fn open(
        cfg: ManagerConfig,
        admin_password: Option<&str>,
    ) -> Result<(Self, FirstAdmin), ManagerError> {
        // Certificates first: a bad file is reported before anything is written.
        let grpc_tls = match &cfg.tls {
            Some(t) => Some(pollen_tls::Material::load(t)?.server_config(&[b"h2"])?),
            None => None,
        };
        let rest_tls = match &cfg.rest_tls {
            Some(t) => Some(pollen_tls::https_server_config(&t.cert, &t.key)?),
            None => None,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ManagerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let secrets =
            auth::sealed::SecretBox::load(cfg.secrets_key_file.as_deref(), &cfg.data_dir)?;
        let db = Db::open(&cfg.database_url()).await?;
        let first = bootstrap::ensure_admin(&db.pool, admin_password, &cfg.data_dir).await?;
        bootstrap::ensure_default_cluster(&db.pool)
            .await
            .map_err(bootstrap::BootstrapError::Db)?;
        let first_join_token = if grpc_tls.is_none() && !cfg.open_join {
            bootstrap::ensure_join_token(&db.pool, &cfg.data_dir).await?
        } else {
            None
        };
        if cfg.open_join {
            warn!("open_join: any client of the gRPC port may register a scheduler or claim to be a seed without a join token; only for networks whose hosts are all trusted");
        }
        if let Err(e) = store::peers::set_all_inactive(&db.pool).await {
            warn!(error = %e, "cannot reset peer states");
        }
        let state = Arc::new(AppState {
            db,
            throttle: auth::throttle::Throttle::new(cfg.auth_failures_per_minute),
            secrets,
            cfg,
            metrics: Arc::new(metrics::Metrics::default()),
            changed: tokio::sync::watch::channel(0).0,
            daemon_sessions: Default::default(),
            hub: Default::default(),
            jobs_added: Default::default(),
        });
        Ok((
            Self {
                state,
                grpc_tls,
                rest_tls,
                first_join_token,
            },
            first,
        ))
    }

    /// Where the join token made at first start was written, when it was made now.
    pub fn first_join_token(&self) -> Option<&std::path::Path> {
        self.first_join_token.as_deref()
    }

    /// A new join token for `roles`, replacing (revoking) any live one named `name`; returns
    /// its secret. For a process that runs a scheduler or a seed beside the manager.
    pub async fn replace_join_token(
        &self,
        name: &str,
        roles: &[store::join_tokens::JoinRole],
    ) -> Result<String, sqlx::Error> {
        store::join_tokens::revoke_named(&self.state.db.pool, name).await?;
        let (_, secret) =
            rest::join_tokens::mint(&self.state.db.pool, name, roles, None, None).await?;
        Ok(secret)
    }

    /// The manager's database.
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// Whether the REST port speaks HTTPS.
    pub fn rest_tls(&self) -> bool {
        self.rest_tls.is_some()
    }

    /// Whether the gRPC port demands client certificates.
    pub fn grpc_tls(&self) -> bool {
        self.grpc_tls.is_some()
    }

    /// Serves the REST API on `rest` and the gRPC service on `grpc` until `shutdown`, with
    /// the background sweeper.
    pub async fn serve(self, rest: TcpListener, grpc: TcpListener, shutdown: CancellationToken) {
        let sweeper = tokio::spawn(sweep(self.state.clone(), shutdown.clone()));
        let rpc = tokio::spawn(grpc::serve(
            self.state.clone(),
            grpc,
            self.grpc_tls,
            shutdown.clone(),
        ));
        let runner = tokio::spawn(jobs::run(self.state.clone(), shutdown.clone()));
        let router = rest::router(self.state.clone());
        server::serve_http(
            rest,
            self.rest_tls.map(tokio_rustls::TlsAcceptor::from),
            router,
            self.state.cfg.max_connections,
            self.state.cfg.header_read_timeout,
            shutdown,
        )
        .await;
        let _ = sweeper.await;
        let _ = runner.await;
        match rpc.await {
            Ok(Err(e)) => warn!(error = %e, "the manager's gRPC server failed"),
            Err(e) => warn!(error = %e, "the manager's gRPC server panicked"),
            Ok(Ok(())) => {}
        }
    }
}

/// Marks silent schedulers inactive and drops expired sessions, every few seconds.
async fn sweep(state: Arc<AppState>, shutdown: CancellationToken) {
    let timeout = state.cfg.keepalive_timeout;
    let every = (timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let cutoff = db::now() - timeout.as_secs().max(1) as i64;
        match store::schedulers::expire(&state.db.pool, cutoff).await {
            Ok(ids) if !ids.is_empty() => {
                info!(?ids, "schedulers missed their keepalive; marked inactive");
                state.bump();
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot expire schedulers"),
        }
        if let Err(e) = store::sessions::sweep(&state.db.pool).await {
            warn!(error = %e, "cannot drop expired sessions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// Every error in `e`'s source chain, `e` first.
    fn chain<'a>(
        e: &'a (dyn std::error::Error + 'static),
    ) -> Vec<&'a (dyn std::error::Error + 'static)> {
        std::iter::successors(Some(e), |&e| e.source()).collect()
    }

    #[tokio::test]
    async fn a_refused_start_keeps_the_cause_in_its_source_chain() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").expect("file");
        let password = Some("a long enough password");

        // A data directory under a regular file: the file system's error is the source.
        let cfg = ManagerConfig {
            data_dir: file.join("data"),
            ..Default::default()
        };
        let e = Manager::open(cfg, password).await.err().expect("refused");
        assert!(matches!(e, ManagerError::DataDir { .. }), "{e:?}");
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("an io error as the source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotADirectory);

        // A database that cannot be opened: the driver's error is in the chain.
        let cfg = ManagerConfig {
            data_dir: dir.path().join("d1"),
            database_url: Some(format!("sqlite://{}/m.db", file.display())),
            ..Default::default()
        };
        let e = Manager::open(cfg, password).await.err().expect("refused");
        assert!(matches!(e, ManagerError::Db(DbError::Connect(_))), "{e:?}");
        assert!(
            chain(&e).iter().any(|s| s.is::<sqlx::Error>()),
            "no sqlx error in the chain of {e:?}"
        );

        // A first admin password that is too weak: the password rule says why.
        let cfg = ManagerConfig {
            data_dir: dir.path().join("d2"),
            ..Default::default()
        };
        let e = Manager::open(cfg, Some("short"))
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(
                e,
                ManagerError::Bootstrap(bootstrap::BootstrapError::Password(_))
            ),
            "{e:?}"
        );
        assert!(
            chain(&e)
                .iter()
                .any(|s| s.downcast_ref::<auth::password::PasswordError>()
                    == Some(&auth::password::PasswordError::TooShort)),
            "{e:?}"
        );

        // No password given, and the file for the generated one cannot be written (a
        // directory stands in its place): the file system's error is in the chain.
        let data_dir = dir.path().join("d3");
        std::fs::create_dir_all(data_dir.join("initial-admin-password")).expect("dir");
        let cfg = ManagerConfig {
            data_dir,
            ..Default::default()
        };
        let e = Manager::open(cfg, None).await.err().expect("refused");
        assert!(
            matches!(
                e,
                ManagerError::Bootstrap(bootstrap::BootstrapError::Write { .. })
            ),
            "{e:?}"
        );
        assert!(
            chain(&e).iter().any(|s| s.is::<std::io::Error>()),
            "no io error in the chain of {e:?}"
        );
    }
}
