//! The first admin. On a database with no users, the manager creates `admin` with the
//! password from `POLLEN_ADMIN_PASSWORD`, or a random one written to
//! `DATA_DIR/initial-admin-password` (mode 0600) — never to the log. On a database with no
//! scheduler cluster, it creates the default cluster `default`, which serves every daemon
//! until an operator adds clusters with scopes. On a database that never had a join token,
//! with the gRPC port on plain TCP and not open, it makes one for both roles (scheduler and
//! seed) and writes it to `DATA_DIR/initial-join-token` (mode 0600), so the first scheduler
//! and seed can join; revoke it once others are issued.

use std::path::{Path, PathBuf};

use crate::auth::{password, secret, Role};
use crate::store::users;

/// Why the first admin or the default cluster could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The database refused.
    #[error("database error creating the first admin")]
    Db(#[from] sqlx::Error),
    /// The password given for the first admin is too weak.
    #[error("the initial admin password is not acceptable")]
    Password(#[from] password::PasswordError),
    /// A file (the generated password, the first join token) could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How the first admin was made, if one was.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstAdmin {
    /// Users existed already; none was made.
    AlreadyUsers,
    /// Made with the password the operator gave.
    FromGivenPassword,
    /// Made with a generated password, written (0600) to this file.
    PasswordWrittenTo(PathBuf),
}

pub async fn ensure_default_cluster(pool: &sqlx::AnyPool) -> Result<(), sqlx::Error> {
    use crate::store::clusters;
    if !clusters::list_scheduler_clusters(pool).await?.is_empty() {
        return Ok(());
    }
    let fields = clusters::SchedulerClusterFields {
        name: "default",
        bio: "Created at first start; serves daemons no other cluster's scopes match.",
        scopes: &Default::default(),
        config: &Default::default(),
        is_default: true,
        seed_peer_cluster_ids: &[],
    };
    clusters::save_scheduler_cluster(pool, None, &fields).await?;
    Ok(())
}

/// Makes the first join token when none was ever made; returns where it was written.
pub async fn ensure_join_token(
    pool: &sqlx::AnyPool,
    data_dir: &Path,
) -> Result<Option<PathBuf>, BootstrapError> {
    use crate::store::join_tokens::{self, JoinRole};
    if join_tokens::count(pool).await? > 0 {
        return Ok(None);
    }
    let (_, value) = crate::rest::join_tokens::mint(
        pool,
        "initial",
        &[JoinRole::Scheduler, JoinRole::Seed],
        None,
        None,
    )
    .await?;
    let path = data_dir.join("initial-join-token");
    write_private(&path, &format!("{value}\n")).map_err(|source| BootstrapError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

pub async fn ensure_admin(
    pool: &sqlx::AnyPool,
    given: Option<&str>,
    data_dir: &Path,
) -> Result<FirstAdmin, BootstrapError> {
    if users::count(pool).await? > 0 {
        return Ok(FirstAdmin::AlreadyUsers);
    }
    let (pw, how) = match given {
        Some(p) => (p.to_string(), FirstAdmin::FromGivenPassword),
        None => {
            let p = secret::generate("");
            let path = data_dir.join("initial-admin-password");
            write_private(&path, &format!("{p}\n")).map_err(|source| BootstrapError::Write {
                path: path.clone(),
                source,
            })?;
            (p, FirstAdmin::PasswordWrittenTo(path))
        }
    };
    let hash = tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| password::PasswordError::Hash(e.to_string()))??;
    users::create(pool, "admin", "", Role::Admin, &hash).await?;
    Ok(how)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
