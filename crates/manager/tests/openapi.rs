//! The OpenAPI document is valid OpenAPI 3 (checked by `openapi-spec-validator`, from PyPI,
//! which `.ci/run` installs), and every route it lists is exercised by the API scenarios:
//! they all run here against one manager, whose request counters (`/metrics`) then show
//! which routes were answered.

mod common;

use std::collections::BTreeSet;

use common::{scenarios, TestManager};
use pollen_manager::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_exercised_by_the_scenarios() {
    let m = TestManager::start(Backend::Sqlite).await.expect("sqlite");
    scenarios::system_routes_answer_without_credentials(&m).await;
    scenarios::users_and_sessions_round_trip(&m).await;
    scenarios::clusters_round_trip(&m).await;
    scenarios::every_write_is_audited(&m).await;
    scenarios::hosts_are_listed(&m).await;
    scenarios::a_guest_token_cannot_create_or_delete_anything(&m).await;
    scenarios::tokens_are_scoped_expire_and_revoke(&m).await;
    scenarios::a_user_cannot_see_another_users_tokens(&m).await;
    scenarios::secrets_never_appear_in_responses(&m).await;
    scenarios::join_tokens_are_admins_only_shown_once_and_stored_hashed(&m).await;
    scenarios::jobs_are_created_listed_and_fail_with_a_reason(&m).await;
    scenarios::peers_answer_for_their_caches(&m).await;

    let metrics = m.api().get("/metrics").await.text;
    // pollen_manager_http_requests_total{method="GET",route="/api/v1/users/{id}",status="200"} 1
    let mut answered = BTreeSet::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("pollen_manager_http_requests_total{"))
    {
        let field = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let status: u16 = field("status").parse().unwrap_or(0);
        // A route counts as exercised when it did its job at least once.
        if (200..300).contains(&status) {
            answered.insert((field("method"), field("route")));
        }
    }
    let mut missing = Vec::new();
    for (method, path) in scenarios::documented_routes(&m).await {
        if !answered.contains(&(method.clone(), path.clone())) {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "documented routes no scenario exercised: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates() {
    let m = TestManager::start(Backend::Sqlite).await.expect("sqlite");
    let doc = m.api().get("/api/v1/openapi.json").await.text;
    let path = m.dir.path().join("openapi.json");
    std::fs::write(&path, &doc).expect("write");
    if !pollen_testkit::tools::runs(&[pollen_testkit::tools::Need::python_module(
        "openapi_spec_validator",
        "openapi-spec-validator",
    )]) {
        return;
    }
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("validator runs");
    assert!(
        out.status.success(),
        "the OpenAPI document does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
