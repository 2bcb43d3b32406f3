//! The manager's database: SQLite by default (one file, zero setup), PostgreSQL when given a
//! `postgres://` URL.
//!
//! Every statement is written once, in the dialect both engines accept: `$N` placeholders
//! (sqlx's SQLite driver reads them too), unix-second integers for times, 0/1 integers for
//! flags, `RETURNING` to read back a new row's id. What differs is only the schema's key
//! type, so each engine has its own migration folder, versioned in step.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Which engine a URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH` (the default: a file in the data directory).
    Sqlite,
    /// `postgres://USER@HOST/DB` (production).
    Postgres,
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A URL of no engine the manager speaks (shown without its password).
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open the database")]
    Connect(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error")]
    Query(#[from] sqlx::Error),
}

impl FromStr for Backend {
    type Err = DbError;
    fn from_str(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(redact(url)))
        }
    }
}

/// A URL with any password replaced, fit for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A migrated connection pool.
#[derive(Clone, Debug)]
pub struct Db {
    /// The connections.
    pub pool: AnyPool,
    /// The engine behind them.
    pub backend: Backend,
}

impl Db {
    /// Opens `url` (creating a SQLite file if missing) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let backend: Backend = url.parse()?;
        sqlx::any::install_default_drivers();
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") && !url.contains(":memory:") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        // An in-memory SQLite database lives in one connection.
        let max = match backend {
            Backend::Sqlite if url.contains(":memory:") => 1,
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(DbError::Connect)?;
        if backend == Backend::Sqlite {
            // Readers never block the writer; the setting persists in the file.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await
                .map_err(DbError::Connect)?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        migrator.run(&pool).await.map_err(DbError::Migrate)?;
        if backend == Backend::Sqlite {
            restrict_sqlite_files(&url).map_err(|e| DbError::Connect(sqlx::Error::Io(e)))?;
        }
        Ok(Self { pool, backend })
    }
}

/// The file a `sqlite://PATH?...` (or `sqlite:PATH`) URL names; `None` for memory.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next()?;
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// The database and its WAL files hold password hashes, token digests and job secrets: they
/// are the manager's user's alone (0600), whatever the umask made them.
fn restrict_sqlite_files(url: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite:///var/m.db?mode=rwc"),
            Some("/var/m.db".into())
        );
        assert_eq!(sqlite_path("sqlite://m.db"), Some("m.db".into()));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }

    #[test]
    fn urls_choose_the_engine_and_others_are_refused_without_their_password() {
        assert_eq!("sqlite://m.db".parse::<Backend>().unwrap(), Backend::Sqlite);
        assert_eq!(
            "sqlite::memory:".parse::<Backend>().unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            "postgres://u@h/db".parse::<Backend>().unwrap(),
            Backend::Postgres
        );
        let err = "mysql://root:hunter2@h/db".parse::<Backend>().unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn a_new_sqlite_file_is_created_and_migrated_twice_without_harm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let db = Db::open(&url).await.unwrap();
        drop(db);
        // A file another tool left world-readable is made the manager's alone.
        std::fs::set_permissions(
            dir.path().join("m.db"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let db = Db::open(&url).await.unwrap();
        for f in ["m.db", "m.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}
