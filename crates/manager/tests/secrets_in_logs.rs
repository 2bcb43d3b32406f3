//! Passwords and token secrets never reach the logs, even at trace level: everything the
//! manager (and sqlx under it) logs while users sign in, change passwords, fail to sign in
//! and use tokens is captured and searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestManager;
use pollen_manager::Backend;
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_tokens_never_appear_in_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let m = TestManager::start(Backend::Sqlite).await.expect("sqlite");
    let admin = m.admin().await;
    admin
        .create_user("grace", "user", "grace-first-password")
        .await;
    let grace = m.api().sign_in("grace", "grace-first-password").await;
    let (_, secret) = grace.create_token("ci", &["account"], None).await;
    assert!(grace
        .with_token(&secret)
        .get("/api/v1/me")
        .await
        .status
        .is_success());
    let r = grace
        .put(
            "/api/v1/me/password",
            json!({"current_password": "grace-first-password", "new_password": "grace-second-password"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = m
        .api()
        .post(
            "/api/v1/sessions",
            json!({"name": "grace", "password": "grace-wrong-password"}),
        )
        .await;
    assert_eq!(r.status, 401);
    let _ = m
        .api()
        .with_token("pln_bogus-token-value")
        .get("/api/v1/me")
        .await;
    m.stop().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("INSERT INTO users"),
        "nothing was captured, so the check below would prove nothing"
    );
    for secret in [
        "grace-first-password",
        "grace-second-password",
        "grace-wrong-password",
        common::ADMIN_PASSWORD,
        &secret,
        &secret[4..24],
        "pln_bogus-token-value",
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
