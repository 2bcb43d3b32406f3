//! A real manager on an ephemeral loopback port, over SQLite or a throwaway PostgreSQL, and
//! a small JSON client for its API.

#![allow(dead_code)]

pub mod postgres;
pub mod scenarios;

use pollen_manager::{Backend, Manager, ManagerConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Attaches a join token (if any) to every gRPC call, as a scheduler or a seed does.
#[derive(Clone)]
pub struct ShowToken(pub Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for ShowToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut()
                .insert(pollen_core::join::METADATA, v.clone());
        }
        Ok(req)
    }
}

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

pub struct TestManager {
    pub base: String,
    /// The gRPC service's URL (`http://127.0.0.1:PORT`).
    pub grpc: String,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _pg: Option<postgres::Postgres>,
}

impl TestManager {
    /// None when the backend's server is not installed (and tools are not required).
    pub async fn start(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db_url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("manager.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = postgres::Postgres::start().await?;
                (pg.url.clone(), Some(pg))
            }
        };
        let mut m = Self::on(&db_url, dir).await;
        m._pg = pg;
        Some(m)
    }

    /// A manager over `db_url`, keeping its files in `dir`.
    pub async fn on(db_url: &str, dir: tempfile::TempDir) -> Self {
        let cfg = ManagerConfig {
            database_url: Some(db_url.to_string()),
            data_dir: dir.path().to_path_buf(),
            keepalive_timeout: std::time::Duration::from_secs(2),
            peer_seen_interval: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let (manager, _) = Manager::open(cfg, Some(ADMIN_PASSWORD))
            .await
            .expect("manager opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let rpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let grpc = format!("http://{}", rpc.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(manager.serve(listener, rpc, shutdown.clone()));
        Self {
            base,
            grpc,
            dir,
            db_url: db_url.to_string(),
            shutdown,
            task,
            _pg: None,
        }
    }

    /// Stops the server and returns its directory (the database survives in it).
    pub async fn stop(self) -> (tempfile::TempDir, Option<postgres::Postgres>) {
        self.shutdown.cancel();
        let _ = self.task.await;
        (self.dir, self._pg)
    }

    pub fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            http: reqwest::Client::new(),
            auth: Auth::None,
        }
    }

    /// The join token the manager made at first start (both roles).
    pub fn join_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("initial-join-token"))
            .expect("the first join token")
            .trim()
            .to_string()
    }

    /// A client signed in as the bootstrap admin (by session cookie).
    pub async fn admin(&self) -> Api {
        self.api().sign_in("admin", ADMIN_PASSWORD).await
    }
}

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Token(String),
    Cookie(String),
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    pub auth: Auth,
}

/// A response: status, JSON body (Null when empty or not JSON), raw text.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub text: String,
    pub set_cookie: Option<String>,
}

impl Api {
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            auth: Auth::Token(token.to_string()),
            ..self.clone()
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            auth: Auth::None,
            ..self.clone()
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Auth::None => {}
            Auth::Token(t) => req = req.bearer_auth(t),
            Auth::Cookie(c) => req = req.header("cookie", format!("pollen_session={c}")),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            json,
            text,
            set_cookie,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    /// Signs in with a password and returns a client carrying the session cookie.
    pub async fn sign_in(&self, name: &str, password: &str) -> Api {
        let r = self
            .anonymous()
            .post(
                "/api/v1/sessions",
                serde_json::json!({"name": name, "password": password}),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "sign in as {name}: {}",
            r.text
        );
        let cookie = r.set_cookie.expect("a session cookie");
        let value = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_string())
            .expect("cookie value");
        Api {
            auth: Auth::Cookie(value),
            ..self.clone()
        }
    }

    /// Creates a user (as an admin client) and returns its id.
    pub async fn create_user(&self, name: &str, role: &str, password: &str) -> i64 {
        let r = self
            .post(
                "/api/v1/users",
                serde_json::json!({"name": name, "role": role, "password": password}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_i64().expect("id")
    }

    /// Creates a token for the signed-in caller; returns (id, secret).
    pub async fn create_token(
        &self,
        name: &str,
        scopes: &[&str],
        days: Option<i64>,
    ) -> (i64, String) {
        let r = self
            .post(
                "/api/v1/tokens",
                serde_json::json!({"name": name, "scopes": scopes, "expires_in_days": days}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        (
            r.json["token"]["id"].as_i64().expect("id"),
            r.json["secret"].as_str().expect("secret").to_string(),
        )
    }
}

/// Runs an async scenario once on SQLite and once on PostgreSQL, as two tests.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    if let Some(m) = $crate::common::TestManager::start(pollen_manager::Backend::Sqlite).await {
                        super::$name(m).await;
                    }
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    if let Some(m) = $crate::common::TestManager::start(pollen_manager::Backend::Postgres).await {
                        super::$name(m).await;
                    }
                }
            }
        )*
    };
}
