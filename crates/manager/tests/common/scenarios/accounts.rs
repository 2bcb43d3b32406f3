//! Scenarios of the system routes, users and sessions, and the audit log.

use reqwest::StatusCode;
use serde_json::json;

use super::{unique, TestManager};
use crate::common::ADMIN_PASSWORD;

/// Health, metrics and the OpenAPI document need no credentials.
pub async fn system_routes_answer_without_credentials(m: &TestManager) {
    let api = m.api();
    let r = api.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json["openapi"].as_str().unwrap_or("").starts_with("3."));
    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("pollen_manager_http_requests"),
        "{}",
        r.text
    );
    let r = api.get("/api/v1/me").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json["error"].as_str().unwrap_or("").contains("sign in"));
}

/// Users are created, read, changed and deleted by an admin; a user signs in and out and
/// changes their own password; the last admin cannot be removed.
pub async fn users_and_sessions_round_trip(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("alice");
    let id = admin.create_user(&name, "user", "alice-password-1").await;
    let r = admin.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"], name.as_str());
    assert_eq!(r.json["role"], "user");
    let r = admin.get("/api/v1/users?limit=1000").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|u| u["id"] == id));
    let r = admin
        .post(
            "/api/v1/users",
            json!({"name": name, "role": "user", "password": "another-pw-1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = admin
        .post(
            "/api/v1/users",
            json!({"name": unique("bob"), "role": "user", "password": "short"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap_or("")
            .contains("at least 8"),
        "{}",
        r.text
    );
    let r = admin
        .post(
            "/api/v1/users",
            json!({"name": "x y", "role": "boss", "password": "long-enough"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let alice = m.api().sign_in(&name, "alice-password-1").await;
    let r = alice.get("/api/v1/me").await;
    assert_eq!(r.json["name"], name.as_str());
    let r = alice
        .put(
            "/api/v1/me/password",
            json!({"current_password": "wrong-one-1", "new_password": "alice-password-2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = alice
        .put(
            "/api/v1/me/password",
            json!({"current_password": "alice-password-1", "new_password": "alice-password-2"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = m
        .api()
        .post(
            "/api/v1/sessions",
            json!({"name": name, "password": "alice-password-1"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the old password still works"
    );
    let r = alice.delete("/api/v1/sessions/current").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        alice.get("/api/v1/me").await.status,
        StatusCode::UNAUTHORIZED
    );

    let r = admin
        .patch(
            &format!("/api/v1/users/{id}"),
            json!({"role": "guest", "email": "a@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["role"], "guest");
    let r = admin
        .patch(&format!("/api/v1/users/{id}"), json!({"disabled": true}))
        .await;
    assert_eq!(r.json["disabled"], true);
    let r = m
        .api()
        .post(
            "/api/v1/sessions",
            json!({"name": name, "password": "alice-password-2"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a disabled user signed in"
    );
    assert_eq!(
        admin.delete(&format!("/api/v1/users/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin.get(&format!("/api/v1/users/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.delete(&format!("/api/v1/users/{id}")).await.status,
        StatusCode::NOT_FOUND
    );

    // The bootstrap admin is the only one: it can be neither demoted nor deleted.
    let me = admin.get("/api/v1/me").await.json["id"]
        .as_i64()
        .expect("id");
    let r = admin
        .patch(&format!("/api/v1/users/{me}"), json!({"role": "user"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    let r = admin.delete(&format!("/api/v1/users/{me}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(m
        .api()
        .sign_in("admin", ADMIN_PASSWORD)
        .await
        .get("/api/v1/me")
        .await
        .status
        .is_success());
}

/// Every write is in the audit log with who made it and how it ended; reads are not.
pub async fn every_write_is_audited(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("audited");
    let r = admin
        .post("/api/v1/seed-peer-clusters", json!({"name": name}))
        .await;
    let id = r.json["id"].as_i64().expect("id");
    admin
        .delete(&format!("/api/v1/seed-peer-clusters/{id}"))
        .await;
    let r = m
        .api()
        .post(
            "/api/v1/sessions",
            json!({"name": "admin", "password": "not-the-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let log = admin.get("/api/v1/audit-log?limit=1000").await;
    assert_eq!(log.status, StatusCode::OK);
    let rows = log.json.as_array().expect("rows");
    let target = format!("/api/v1/seed-peer-clusters/{id}");
    assert!(rows.iter().any(|e| e["method"] == "POST"
        && e["target"] == "/api/v1/seed-peer-clusters"
        && e["user_name"] == "admin"
        && e["status"] == 201));
    assert!(rows.iter().any(|e| e["method"] == "DELETE"
        && e["target"] == target.as_str()
        && e["route"] == "/api/v1/seed-peer-clusters/{id}"
        && e["status"] == 204));
    assert!(rows.iter().any(|e| e["target"] == "/api/v1/sessions"
        && e["status"] == 401
        && e["user_id"].is_null()));
    assert!(
        rows.iter().any(|e| e["target"] == "/api/v1/sessions"
            && e["status"] == 201
            && e["user_name"] == "admin"),
        "a sign-in is recorded with its user"
    );
    assert!(
        !rows.iter().any(|e| e["method"] == "GET"),
        "reads were audited"
    );
    let second = admin.get("/api/v1/audit-log?limit=1&offset=1").await;
    assert_eq!(second.json.as_array().map(Vec::len), Some(1));
}
