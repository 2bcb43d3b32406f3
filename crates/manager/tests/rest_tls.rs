//! HTTPS on the REST and console port: passwords, cookies and tokens never cross the network
//! in clear, and the session cookie is `Secure`, so a browser never sends it over plain HTTP.

use pollen_manager::{Manager, ManagerConfig, RestTls};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_port_speaks_only_https_and_the_session_cookie_is_secure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = pollen_tls::make_dev_certs(&dir.path().join("certs"), &[]).expect("certs");
    let cfg = ManagerConfig {
        data_dir: dir.path().join("data"),
        rest_tls: Some(RestTls {
            cert: certs.manager.0.clone(),
            key: certs.manager.1.clone(),
        }),
        ..Default::default()
    };
    let (manager, _) = Manager::open(cfg, Some("admin-password"))
        .await
        .expect("manager opens");
    assert!(manager.rest_tls());
    let rest = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = rest.local_addr().expect("addr").port();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(manager.serve(rest, grpc, shutdown.clone()));

    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(&certs.ca_cert).expect("ca")).expect("pem");
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client");
    let r = https
        .post(format!("https://localhost:{port}/api/v1/sessions"))
        .json(&serde_json::json!({"name": "admin", "password": "admin-password"}))
        .send()
        .await
        .expect("https answers");
    assert_eq!(r.status(), StatusCode::CREATED);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Plain HTTP on the same port gets no answer: the password would have crossed in clear.
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/sessions"))
        .json(&serde_json::json!({"name": "admin", "password": "admin-password"}))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the manager's CA is refused by its own TLS check.
    let stranger = reqwest::Client::new()
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(stranger.is_err());
    shutdown.cancel();
    let _ = served.await;
}
