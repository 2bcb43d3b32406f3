//! Scenarios of access tokens and join tokens: scopes, expiry, revocation, minting, throttling, and secrets never shown.

use reqwest::StatusCode;
use serde_json::json;

use super::{unique, TestManager};

/// The routes of the OpenAPI document, as (METHOD, /path/{param}).
pub async fn documented_routes(m: &TestManager) -> Vec<(String, String)> {
    let doc = m.api().get("/api/v1/openapi.json").await.json;
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// A guest's token, even with every scope, changes nothing through any documented write.
pub async fn a_guest_token_cannot_create_or_delete_anything(m: &TestManager) {
    let admin = m.admin().await;
    let guest_name = unique("guest");
    admin
        .create_user(&guest_name, "guest", "guest-password")
        .await;
    let guest = m.api().sign_in(&guest_name, "guest-password").await;
    let all = ["clusters", "peers", "jobs", "users", "account", "audit"];
    let (_, secret) = guest.create_token("everything", &all, None).await;
    let token = guest.with_token(&secret);
    // Real ids to aim at: a cluster, a user, a token.
    let spc = admin
        .post(
            "/api/v1/seed-peer-clusters",
            json!({"name": unique("target")}),
        )
        .await;
    let target_id = spc.json["id"].as_i64().expect("id");
    let before_users = admin.get("/api/v1/users?limit=1000").await.json;
    let before_clusters = admin.get("/api/v1/seed-peer-clusters").await.json;
    let body = json!({"name": unique("x"), "role": "admin", "password": "guest-made-this",
                      "scopes": ["clusters"], "current_password": "guest-password",
                      "new_password": "changed-by-token"});
    let mut tried = 0;
    for (method, path) in documented_routes(m).await {
        // Signing in and out are not writes to any resource.
        if method == "GET" || path.starts_with("/api/v1/sessions") {
            continue;
        }
        let path = path.replace("{id}", &target_id.to_string());
        let r = token
            .call(method.parse().expect("method"), &path, Some(body.clone()))
            .await;
        assert!(
            r.status == StatusCode::FORBIDDEN
                || r.status == StatusCode::BAD_REQUEST
                || r.status == StatusCode::NOT_FOUND,
            "guest token: {method} {path} -> {} {}",
            r.status,
            r.text
        );
        assert_ne!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} was judged on its body, not refused: {}",
            r.text
        );
        if r.status == StatusCode::NOT_FOUND {
            // Only a token id that is not the guest's may be "not found".
            assert!(
                path.starts_with("/api/v1/tokens/"),
                "{method} {path}: {}",
                r.text
            );
        }
        tried += 1;
    }
    assert!(tried >= 10, "only {tried} write routes tried");
    assert_eq!(
        admin.get("/api/v1/users?limit=1000").await.json,
        before_users
    );
    assert_eq!(
        admin.get("/api/v1/seed-peer-clusters").await.json,
        before_clusters
    );
    // Reading is allowed.
    assert_eq!(
        token.get("/api/v1/scheduler-clusters").await.status,
        StatusCode::OK
    );
    assert_eq!(
        token.get("/api/v1/users").await.status,
        StatusCode::FORBIDDEN
    );
    // The guest's password is unchanged.
    m.api().sign_in(&guest_name, "guest-password").await;
}

/// A token limited to some scopes reaches nothing else; an expired or revoked one nothing.
pub async fn tokens_are_scoped_expire_and_revoke(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("carol");
    admin.create_user(&name, "user", "carol-password").await;
    let carol = m.api().sign_in(&name, "carol-password").await;
    let (_, jobs_only) = carol.create_token("jobs", &["jobs"], Some(30)).await;
    let r = carol
        .with_token(&jobs_only)
        .get("/api/v1/scheduler-clusters")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json["error"].as_str().unwrap_or("").contains("scopes"),
        "{}",
        r.text
    );
    let (id, secret) = carol.create_token("clusters", &["clusters"], Some(1)).await;
    let t = carol.with_token(&secret);
    assert_eq!(
        t.get("/api/v1/scheduler-clusters").await.status,
        StatusCode::OK
    );
    // A day is long for a test: move the expiry into the past.
    let db = pollen_manager::Db::open(&m.db_url).await.expect("db");
    sqlx::query("UPDATE tokens SET expires_at = $1 WHERE id = $2")
        .bind(pollen_manager::db::now() - 1)
        .bind(id)
        .execute(&db.pool)
        .await
        .expect("expire");
    let r = t.get("/api/v1/scheduler-clusters").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "an expired token worked"
    );
    assert!(
        r.json["error"].as_str().unwrap_or("").contains("expired"),
        "{}",
        r.text
    );
    let (id, secret) = carol.create_token("short-lived", &["clusters"], None).await;
    let t = carol.with_token(&secret);
    assert_eq!(
        t.get("/api/v1/scheduler-clusters").await.status,
        StatusCode::OK
    );
    assert_eq!(
        carol.delete(&format!("/api/v1/tokens/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.get("/api/v1/scheduler-clusters").await.status,
        StatusCode::UNAUTHORIZED,
        "a revoked token worked"
    );
    let listed = carol.get("/api/v1/tokens").await.json;
    let row = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|x| x["id"] == id)
        .cloned()
        .expect("listed");
    assert!(row["revoked_at"].is_i64());
    let r = carol
        .with_token("pln_not-a-real-token")
        .get("/api/v1/me")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = carol
        .post("/api/v1/tokens", json!({"name": "none", "scopes": []}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = carol
        .post("/api/v1/tokens", json!({"name": "bad", "scopes": ["root"]}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

/// A token mints tokens only within its own scopes: a leaked `account` token cannot become
/// an every-scope one, even an admin's.
pub async fn a_token_cannot_mint_a_token_with_more_scopes_than_its_own(m: &TestManager) {
    let admin = m.admin().await;
    let (_, narrow) = admin
        .create_token("narrow", &["account", "jobs"], Some(1))
        .await;
    let t = admin.with_token(&narrow);
    let r = t
        .post(
            "/api/v1/tokens",
            json!({"name": "wide", "scopes": ["account", "users", "clusters"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap_or("")
            .contains("within its own scopes"),
        "{}",
        r.text
    );
    let r = t
        .post(
            "/api/v1/tokens",
            json!({"name": "same", "scopes": ["jobs"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // The console session is bounded by its role only.
    let r = admin
        .post(
            "/api/v1/tokens",
            json!({"name": "wide", "scopes": ["users", "clusters"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Past ten failed sign-ins a minute, an address gets 429 on every credentialed request,
/// right password included, while requests that carry no credential are still answered.
pub async fn failed_sign_ins_are_throttled_per_client(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("mallory");
    admin.create_user(&name, "user", "right-password").await;
    let anon = m.api().anonymous();
    for i in 0..10 {
        let r = anon
            .post(
                "/api/v1/sessions",
                json!({"name": name, "password": format!("guess-{i}")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
    let r = anon
        .post(
            "/api/v1/sessions",
            json!({"name": name, "password": "right-password"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(r.text.contains("try again in"), "{}", r.text);
    let r = anon.with_token("pln_guessed").get("/api/v1/me").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(anon.get("/healthz").await.status, StatusCode::OK);
}

/// A user sees and revokes only their own tokens; an admin may see anyone's.
pub async fn a_user_cannot_see_another_users_tokens(m: &TestManager) {
    let admin = m.admin().await;
    let (a, b) = (unique("dave"), unique("erin"));
    let a_id = admin.create_user(&a, "user", "dave-password").await;
    admin.create_user(&b, "user", "erin-password").await;
    let dave = m.api().sign_in(&a, "dave-password").await;
    let erin = m.api().sign_in(&b, "erin-password").await;
    let (dave_token, _) = dave.create_token("mine", &["jobs"], None).await;
    let r = erin.get("/api/v1/tokens").await;
    assert!(!r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|t| t["id"] == dave_token));
    let r = erin.get(&format!("/api/v1/tokens?user_id={a_id}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = erin.delete(&format!("/api/v1/tokens/{dave_token}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = admin.get(&format!("/api/v1/tokens?user_id={a_id}")).await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|t| t["id"] == dave_token));
    let r = dave.get("/api/v1/tokens").await;
    let mine = r
        .json
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == dave_token)
        .cloned()
        .expect("own");
    assert!(mine["revoked_at"].is_null(), "erin revoked dave's token");
}

/// No response ever carries a password, its hash, or a token's secret after creation.
pub async fn secrets_never_appear_in_responses(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("frank");
    let id = admin.create_user(&name, "user", "frank-secret-pw").await;
    let frank = m.api().sign_in(&name, "frank-secret-pw").await;
    let (_, secret) = frank.create_token("t", &["account"], None).await;
    let t = frank.with_token(&secret);
    let mut texts = Vec::new();
    for r in [
        admin.get(&format!("/api/v1/users/{id}")).await,
        admin.get("/api/v1/users").await,
        frank.get("/api/v1/me").await,
        frank.get("/api/v1/tokens").await,
        t.get("/api/v1/tokens").await,
        admin.get("/api/v1/audit-log").await,
    ] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        texts.push(r.text);
    }
    for text in texts {
        assert!(!text.contains("frank-secret-pw"), "{text}");
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(&secret[4..20]), "{text}");
        assert!(!text.contains("argon2"), "a password hash in {text}");
        assert!(
            !text.contains("password_hash") && !text.contains("secret_hash"),
            "{text}"
        );
    }
}

/// Join tokens: only admins issue, list and revoke them; a token names at least one role; its
/// secret is in the create answer alone (never listed, never in the database file or its
/// WAL, which hold its hash); revoking is idempotent and an unknown id is 404.
pub async fn join_tokens_are_admins_only_shown_once_and_stored_hashed(m: &TestManager) {
    let admin = m.admin().await;
    let r = admin
        .post(
            "/api/v1/users",
            json!({"name": "ursula", "password": "ursula-password-1", "role": "user"}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let ursula = m.api().sign_in("ursula", "ursula-password-1").await;
    let r = ursula
        .post(
            "/api/v1/join-tokens",
            json!({"name": "mine", "roles": ["seed"]}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(ursula.get("/api/v1/join-tokens").await.status, 403);
    for bad in [
        json!({"name": "none", "roles": []}),
        json!({"name": "odd", "roles": ["manager"]}),
        json!({"name": "long", "roles": ["seed"], "expires_in_days": 0}),
    ] {
        let r = admin.post("/api/v1/join-tokens", bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = admin
        .post(
            "/api/v1/join-tokens",
            json!({"name": "seeds", "roles": ["seed", "seed"], "expires_in_days": 30}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.json["secret"].as_str().expect("secret").to_string();
    let id = r.json["token"]["id"].as_i64().expect("id");
    assert!(secret.starts_with(pollen_core::join::PREFIX), "{secret}");
    assert_eq!(r.json["token"]["roles"], json!(["seed"]));
    assert!(r.json["token"]["expires_at"].as_i64().is_some());
    let listed = admin.get("/api/v1/join-tokens").await;
    assert_eq!(listed.status, 200);
    assert!(!listed.text.contains(&secret), "{}", listed.text);
    let names: Vec<&str> = listed
        .json
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["initial", "seeds"], "the first start made one");
    if m.db_url.starts_with("sqlite://") {
        let needle = secret.as_bytes();
        for file in ["manager.db", "manager.db-wal"] {
            let bytes = std::fs::read(m.dir.path().join(file)).unwrap_or_default();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the secret is in {file} in the clear"
            );
        }
    }
    let path = format!("/api/v1/join-tokens/{id}");
    assert_eq!(ursula.delete(&path).await.status, 403);
    assert_eq!(admin.delete(&path).await.status, 204);
    assert_eq!(
        admin.delete(&path).await.status,
        204,
        "revoking twice is harmless"
    );
    assert_eq!(admin.delete("/api/v1/join-tokens/424242").await.status, 404);
    let listed = admin.get("/api/v1/join-tokens").await;
    let revoked = listed
        .json
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == id)
        .expect("still listed");
    assert!(revoked["revoked_at"].as_i64().is_some(), "{revoked}");
}
