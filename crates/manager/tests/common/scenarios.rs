//! API scenarios, each independent of the others on a shared manager, so the same set runs
//! on SQLite, on PostgreSQL, and all together for the route-coverage check.

use reqwest::StatusCode;
use serde_json::json;

use super::{TestManager, ADMIN_PASSWORD};

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// Scheduler and seed-peer clusters: created with scopes and config, linked, replaced,
/// listed, deleted; bad input is refused with the field named and nothing is stored.
pub async fn clusters_round_trip(m: &TestManager) {
    let admin = m.admin().await;
    let seeds = unique("seeds");
    let r = admin
        .post(
            "/api/v1/seed-peer-clusters",
            json!({"name": seeds, "config": {"load_limit": 50}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let spc = r.json["id"].as_i64().expect("id");
    let name = unique("eu-west");
    let body = json!({
        "name": name,
        "bio": "Frankfurt",
        "scopes": {"cidrs": ["10.1.0.0/16"], "idc": "fra1|fra2", "location": "eu|fra",
                   "hostname_regex": "fra-node-[0-9]+"},
        "config": {"candidate_parent_limit": 4, "weights": {"load": 2.0}},
        "seed_peer_cluster_ids": [spc],
    });
    let r = admin.post("/api/v1/scheduler-clusters", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_i64().expect("id");
    assert_eq!(r.json["scopes"]["cidrs"][0], "10.1.0.0/16");
    assert_eq!(r.json["config"]["candidate_parent_limit"], 4);
    assert_eq!(r.json["seed_peer_cluster_ids"], json!([spc]));
    let r = admin
        .get(&format!("/api/v1/seed-peer-clusters/{spc}"))
        .await;
    assert_eq!(r.json["scheduler_cluster_ids"], json!([id]));
    assert_eq!(
        admin
            .post("/api/v1/scheduler-clusters", body.clone())
            .await
            .status,
        StatusCode::CONFLICT
    );

    for (bad, field) in [
        (
            json!({"name": unique("c"), "scopes": {"cidrs": ["10.0.0.0/40"]}}),
            "scopes.cidrs",
        ),
        (
            json!({"name": unique("c"), "scopes": {"hostname_regex": "(["}}),
            "hostname_regex",
        ),
        (
            json!({"name": unique("c"), "config": {"candidate_parent_limit": 0}}),
            "candidate_parent_limit",
        ),
        (json!({"name": unique("c"), "colour": "red"}), "colour"),
        (
            json!({"name": unique("c"), "seed_peer_cluster_ids": [987654]}),
            "does not exist",
        ),
    ] {
        let r = admin.post("/api/v1/scheduler-clusters", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(
            r.json["error"].as_str().unwrap_or("").contains(field),
            "{bad}: {}",
            r.text
        );
        let all = admin.get("/api/v1/scheduler-clusters").await.json;
        assert!(
            !all.as_array()
                .expect("list")
                .iter()
                .any(|c| c["name"] == bad["name"]),
            "a refused cluster was stored"
        );
    }

    let mut replaced = body.clone();
    replaced["config"]["candidate_parent_limit"] = json!(8);
    replaced["seed_peer_cluster_ids"] = json!([]);
    replaced["is_default"] = json!(true);
    let r = admin
        .put(&format!("/api/v1/scheduler-clusters/{id}"), replaced)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["config"]["candidate_parent_limit"], 8);
    assert_eq!(r.json["is_default"], true);
    assert_eq!(r.json["seed_peer_cluster_ids"], json!([]));
    let r = admin.get(&format!("/api/v1/scheduler-clusters/{id}")).await;
    assert_eq!(r.json["bio"], "Frankfurt");
    let list = admin.get("/api/v1/scheduler-clusters").await.json;
    let defaults = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|c| c["is_default"] == true)
        .count();
    assert_eq!(defaults, 1, "more than one default cluster");

    let r = admin
        .put(
            &format!("/api/v1/seed-peer-clusters/{spc}"),
            json!({"name": seeds, "scheduler_cluster_ids": [id]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["config"]["load_limit"], 300,
        "defaults apply to omitted config"
    );
    let r = admin.get("/api/v1/seed-peer-clusters").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["id"] == spc));

    assert_eq!(
        admin
            .delete(&format!("/api/v1/scheduler-clusters/{id}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .get(&format!("/api/v1/scheduler-clusters/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .put(&format!("/api/v1/scheduler-clusters/{id}"), body)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = admin
        .get(&format!("/api/v1/seed-peer-clusters/{spc}"))
        .await;
    assert_eq!(
        r.json["scheduler_cluster_ids"],
        json!([]),
        "links outlived their cluster"
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/seed-peer-clusters/{spc}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/seed-peer-clusters/{spc}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
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
        && e["route"] == "/api/v1/seed-peer-clusters/:id"
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

/// Schedulers and peers, as registered (here straight into the database; the gRPC tests
/// register them for real), are listed, filtered and read; an admin forgets a scheduler.
pub async fn hosts_are_listed(m: &TestManager) {
    use pollen_manager::store::{clusters, peers, schedulers};
    let db = pollen_manager::Db::open(&m.db_url).await.expect("db");
    let admin = m.admin().await;
    let r = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": unique("hosts")}),
        )
        .await;
    let cluster = r.json["id"].as_i64().expect("id");
    let _ = clusters::list_scheduler_clusters(&db.pool)
        .await
        .expect("list");
    let s = schedulers::register(
        &db.pool,
        &schedulers::Registration {
            scheduler_cluster_id: cluster,
            hostname: "sched-1",
            ip: "127.0.0.9",
            port: 8002,
            url: "http://127.0.0.9:8002",
            idc: "",
            location: "",
        },
    )
    .await
    .expect("register");
    let p = peers::upsert(
        &db.pool,
        &peers::Hello {
            host_id: &unique("host"),
            hostname: "node-1",
            ip: "127.0.0.10",
            upload_port: 4000,
            idc: "",
            location: "",
            is_seed: true,
            scheduler_cluster_id: Some(cluster),
            seed_peer_cluster_id: None,
        },
    )
    .await
    .expect("peer");
    // (No `active=true` here: the test manager's 2 s keepalive timeout may already have passed.)
    let r = admin
        .get(&format!(
            "/api/v1/schedulers?scheduler_cluster_id={cluster}"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    assert_eq!(
        admin
            .get(&format!("/api/v1/schedulers/{}", s.id))
            .await
            .json["url"],
        "http://127.0.0.9:8002"
    );
    let r = admin
        .get(&format!(
            "/api/v1/peers?scheduler_cluster_id={cluster}&seed=true"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = admin
        .get(&format!(
            "/api/v1/peers?scheduler_cluster_id={cluster}&seed=false"
        ))
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(0), "{}", r.text);
    assert_eq!(
        admin.get(&format!("/api/v1/peers/{}", p.id)).await.json["hostname"],
        "node-1"
    );
    assert_eq!(
        admin.get("/api/v1/peers/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin
            .delete(&format!("/api/v1/schedulers/{}", s.id))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin
            .get(&format!("/api/v1/schedulers/{}", s.id))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

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

/// Jobs are created (by users, not guests), listed and followed; one that cannot run ends
/// `failed` with a reason, and a registry password given with a job is never shown.
pub async fn jobs_are_created_listed_and_fail_with_a_reason(m: &TestManager) {
    let admin = m.admin().await;
    let name = unique("jobber");
    admin.create_user(&name, "user", "jobber-password").await;
    let user = m.api().sign_in(&name, "jobber-password").await;
    let r = user
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "urls": ["http://127.0.0.1:9/a"], "scheduler_cluster_ids": [987654]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["state"], "pending");
    let id = r.json["id"].as_i64().expect("id");
    let r = user
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "image": "127.0.0.1:9/team/app:1", "username": "ci",
                   "password": "registry-secret-pw", "platform": "linux/amd64"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let image_job = r.json["id"].as_i64().expect("id");
    for (bad, why) in [
        (json!({"type": "preheat"}), "urls or an image"),
        (json!({"type": "find_task"}), "urls or task_ids"),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "peer_count": 2, "peer_percentage": 10}),
            "not both",
        ),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "peer_percentage": 101}),
            "at most 100",
        ),
        (
            json!({"type": "find_task", "urls": ["http://x/"], "peer_count": 1}),
            "asks every peer",
        ),
        (
            json!({"type": "delete_task", "task_ids": ["abc"]}),
            "64 hex digits",
        ),
        (
            json!({"type": "find_task", "image": "a/b:1"}),
            "not an image",
        ),
        (
            json!({"type": "preheat", "task_ids": ["00"], "urls": ["http://x/"]}),
            "not task_ids",
        ),
        (
            json!({"type": "reboot", "urls": ["http://x/"]}),
            "not a job type",
        ),
        (json!({"type": "preheat", "urls": ["ftp://x/"]}), "http(s)"),
        (
            json!({"type": "preheat", "urls": ["http://x/"], "colour": 1}),
            "colour",
        ),
        (json!({"type": "preheat", "image": "UPPER/case"}), "image"),
        (
            json!({"type": "preheat", "image": "a/b:1", "platform": "linux"}),
            "platform",
        ),
    ] {
        let r = user.post("/api/v1/jobs", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(
            r.json["error"].as_str().unwrap_or("").contains(why),
            "{bad}: {}",
            r.text
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for (job, reason) in [(id, "no active seed peer"), (image_job, "cannot resolve")] {
        loop {
            let r = user.get(&format!("/api/v1/jobs/{job}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert!(!r.text.contains("registry-secret-pw"), "{}", r.text);
            if r.json["state"] == "failed" {
                assert!(
                    r.json["error"].as_str().unwrap_or("").contains(reason),
                    "{}",
                    r.text
                );
                assert!(r.json["finished_at"].is_i64());
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {job} never ended: {}",
                r.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let r = user.get("/api/v1/jobs").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|j| j["id"] == id));
    assert!(!r.text.contains("registry-secret-pw"));
    assert_eq!(
        user.get("/api/v1/jobs/99999999").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A daemon's side of a session, answering from a cache of named tasks: enough to see the
/// manager ask and record. (The real daemon's answers are checked by the multi-process job
/// tests.)
pub struct CacheHolder {
    pub host_id: String,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    session: tokio::task::JoinHandle<()>,
}

impl CacheHolder {
    /// Opens a session for a new host in `cluster` holding `held` (task id, URL) complete
    /// tasks.
    pub async fn connect(m: &TestManager, cluster: i64, held: Vec<(String, String)>) -> Self {
        use pollen_proto::manager::manager_client::ManagerClient;
        use pollen_proto::manager::{
            command, daemon_message, manager_message, CommandResult, DaemonHello, DaemonMessage,
            HeldTask,
        };
        let host_id = unique("holder");
        let mut client = ManagerClient::connect(m.grpc.clone())
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(DaemonMessage {
            message: Some(daemon_message::Message::Hello(DaemonHello {
                host_id: host_id.clone(),
                hostname: host_id.clone(),
                ip: "127.0.0.30".into(),
                upload_port: 4000,
                scheduler_cluster_id: cluster,
                ..Default::default()
            })),
        })
        .await
        .expect("hello");
        let mut inbound = client
            .daemon_session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        let asked: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let log = asked.clone();
        let session = tokio::spawn(async move {
            let mut cache = held;
            while let Ok(Some(msg)) = inbound.message().await {
                let Some(manager_message::Message::Command(cmd)) = msg.message else {
                    continue;
                };
                // As a daemon reports one fetched with credentials.
                let task = |id: &str, url: &str| HeldTask {
                    task_id: id.into(),
                    url: url.into(),
                    content_length: 1,
                    piece_count: 1,
                    pieces_present: 1,
                    complete: true,
                    last_access: 1,
                    private: url.contains("/private/"),
                };
                let tasks = match cmd.command {
                    Some(command::Command::ListTasks(l)) => {
                        log.lock().expect("log").push(format!("list {}", l.task_id));
                        cache
                            .iter()
                            .filter(|(id, _)| l.task_id.is_empty() || *id == l.task_id)
                            .map(|(id, url)| task(id, url))
                            .collect()
                    }
                    Some(command::Command::DeleteTask(d)) => {
                        log.lock()
                            .expect("log")
                            .push(format!("delete {}", d.task_id));
                        let gone: Vec<HeldTask> = cache
                            .iter()
                            .filter(|(id, _)| *id == d.task_id)
                            .map(|(id, url)| task(id, url))
                            .collect();
                        cache.retain(|(id, _)| *id != d.task_id);
                        gone
                    }
                    _ => Vec::new(),
                };
                let answer = DaemonMessage {
                    message: Some(daemon_message::Message::Result(CommandResult {
                        id: cmd.id,
                        ok: true,
                        error: String::new(),
                        tasks,
                    })),
                };
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        Self {
            host_id,
            asked,
            session,
        }
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("log").clone()
    }
}

impl Drop for CacheHolder {
    /// Ends the session, as a daemon that stops would.
    fn drop(&mut self) {
        self.session.abort();
    }
}

/// A peer's cache is asked of the peer: listed (the console's view), found by URL and
/// deleted by jobs, and a peer that is not connected is a clear 503.
pub async fn peers_answer_for_their_caches(m: &TestManager) {
    let admin = m.admin().await;
    let url = format!("http://127.0.0.1:9/{}", unique("model"));
    let key = pollen_core::TaskKey {
        url: url.clone(),
        digest: None,
        tag: "v1".into(),
        application: String::new(),
        filtered_query: Vec::new(),
        private: false,
    };
    let task_id = key.task_id().expect("task id").hex();
    // A cluster of its own, so other scenarios' peers take no part in its jobs.
    let r = admin
        .post(
            "/api/v1/scheduler-clusters",
            json!({"name": unique("holders")}),
        )
        .await;
    let cluster = r.json["id"].as_i64().expect("cluster id");
    let private_url = format!("http://127.0.0.1:9/private/{}", unique("weights"));
    let holder = CacheHolder::connect(
        m,
        cluster,
        vec![
            (task_id.clone(), url.clone()),
            ("ab".repeat(32), private_url.clone()),
        ],
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let peer_id = loop {
        let r = admin.get("/api/v1/peers?active=true&limit=1000").await;
        let found = r.json.as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p["host_id"] == holder.host_id.as_str())
                .and_then(|p| p["id"].as_i64())
        });
        if let Some(id) = found {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let r = admin.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json[0]["task_id"], task_id.as_str(), "{}", r.text);
    assert_eq!(r.json[0]["url"], url.as_str());
    assert_eq!(r.json[0]["complete"], true);
    // A task fetched with credentials: its URL whole for admins only.
    assert_eq!(r.json[1]["url"], private_url.as_str(), "{}", r.text);
    let viewer = unique("ivan");
    admin.create_user(&viewer, "user", "ivan-password").await;
    let ivan = m.api().sign_in(&viewer, "ivan-password").await;
    let r = ivan.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json[0]["url"], url.as_str(), "{}", r.text);
    assert_eq!(r.json[1]["url"], "http://127.0.0.1/<private>", "{}", r.text);

    // Found by URL and tag (the manager names the task as `pollen get --tag v1` would).
    let find = json!({"type": "find_task", "urls": [url], "tag": "v1",
                      "scheduler_cluster_ids": [cluster]});
    let job = run_job(&admin, find.clone()).await;
    let mine = |j: &serde_json::Value| {
        j["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["host_id"] == holder.host_id.as_str())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(mine(&job)["detail"], "complete", "{job}");
    assert_eq!(mine(&job)["url"], url.as_str(), "{job}");
    let delete = json!({"type": "delete_task", "task_ids": [task_id],
                        "scheduler_cluster_ids": [cluster]});
    let job = run_job(&admin, delete).await;
    assert_eq!(mine(&job)["detail"], "deleted", "{job}");
    let job = run_job(&admin, find).await;
    assert_eq!(mine(&job)["detail"], "absent", "{job}");
    let asked = holder.asked();
    assert!(asked.contains(&format!("delete {task_id}")), "{asked:?}");
    assert!(asked.contains(&format!("list {task_id}")), "{asked:?}");

    drop(holder);
    loop {
        let r = admin.get(&format!("/api/v1/peers/{peer_id}/tasks")).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            let error = r.json["error"].as_str().unwrap_or("");
            if error.contains("not connected") {
                break;
            }
            // Asked while the session was closing: the peer is gone, its registration not
            // yet; the next request must find it unregistered.
            assert!(
                error.contains("disconnected before answering"),
                "{}",
                r.text
            );
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = admin.get("/api/v1/peers/987654321/tasks").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

/// Creates a job and waits for it to succeed; returns it.
async fn run_job(admin: &super::Api, body: serde_json::Value) -> serde_json::Value {
    let r = admin.post("/api/v1/jobs", body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.text);
    let id = r.json["id"].as_i64().expect("id");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = admin.get(&format!("/api/v1/jobs/{id}")).await;
        match r.json["state"].as_str() {
            Some("succeeded") => return r.json,
            Some("failed") => panic!("{body}: {}", r.text),
            _ => {}
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A job that reaches private content (a registry user, credential headers, a presigned URL)
/// shows its URLs and image whole to the user who made it and to admins; another user sees
/// the origin's host and `<private>`. A job without credentials is shown to all.
pub async fn a_private_jobs_urls_are_shown_only_to_its_owner_and_admins(m: &TestManager) {
    let admin = m.admin().await;
    let (a, b) = (unique("gina"), unique("hugo"));
    admin.create_user(&a, "user", "gina-password").await;
    admin.create_user(&b, "user", "hugo-password").await;
    let gina = m.api().sign_in(&a, "gina-password").await;
    let hugo = m.api().sign_in(&b, "hugo-password").await;
    let signed =
        "http://127.0.0.1:9/bucket/weights.bin?X-Amz-Signature=feedface&X-Amz-Credential=AKIA";
    let cluster = 987_654;
    let mut ids = Vec::new();
    for body in [
        json!({"type": "preheat", "urls": [signed], "scheduler_cluster_ids": [cluster]}),
        json!({"type": "preheat", "urls": ["http://127.0.0.1:9/team/secret-plan.bin"],
               "headers": ["Authorization: Bearer gina-token"], "scheduler_cluster_ids": [cluster]}),
        json!({"type": "preheat", "image": "127.0.0.1:9/team/private-app:1", "username": "ci",
               "password": "registry-pw", "scheduler_cluster_ids": [cluster]}),
    ] {
        let r = gina.post("/api/v1/jobs", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        ids.push(r.json["id"].as_i64().expect("id"));
    }
    let r = gina
        .post(
            "/api/v1/jobs",
            json!({"type": "preheat", "urls": ["http://127.0.0.1:9/public/readme.txt"],
                   "scheduler_cluster_ids": [cluster]}),
        )
        .await;
    let public = r.json["id"].as_i64().expect("id");

    for id in &ids {
        let path = format!("/api/v1/jobs/{id}");
        for (who, whole) in [(&gina, true), (&admin, true), (&hugo, false)] {
            let r = who.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            for secret in ["feedface", "secret-plan", "private-app"] {
                if !whole {
                    assert!(
                        !r.text.contains(secret),
                        "another user sees {secret}: {}",
                        r.text
                    );
                }
            }
            if !whole {
                assert!(r.text.contains("<private>"), "{}", r.text);
            }
        }
    }
    let mine = gina.get(&format!("/api/v1/jobs/{}", ids[0])).await;
    assert!(
        mine.text.contains("feedface"),
        "the owner sees the whole URL"
    );
    let listed = hugo.get("/api/v1/jobs").await;
    assert!(
        !listed.text.contains("feedface") && !listed.text.contains("secret-plan"),
        "{}",
        listed.text
    );
    let r = hugo.get(&format!("/api/v1/jobs/{public}")).await;
    assert!(r.text.contains("public/readme.txt"), "{}", r.text);
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
