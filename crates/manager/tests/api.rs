//! The manager's REST API against a real server, once on SQLite and once on a real
//! PostgreSQL (each scenario is two tests, `…::on_sqlite` and `…::on_postgres`).

mod common;

use common::scenarios;
use common::TestManager;

async fn system_routes_answer_without_credentials(m: TestManager) {
    scenarios::system_routes_answer_without_credentials(&m).await;
}
async fn users_and_sessions_round_trip(m: TestManager) {
    scenarios::users_and_sessions_round_trip(&m).await;
}
async fn clusters_round_trip(m: TestManager) {
    scenarios::clusters_round_trip(&m).await;
}
async fn every_write_is_audited(m: TestManager) {
    scenarios::every_write_is_audited(&m).await;
}
async fn hosts_are_listed(m: TestManager) {
    scenarios::hosts_are_listed(&m).await;
}
async fn a_guest_token_cannot_create_or_delete_anything(m: TestManager) {
    scenarios::a_guest_token_cannot_create_or_delete_anything(&m).await;
}
async fn tokens_are_scoped_expire_and_revoke(m: TestManager) {
    scenarios::tokens_are_scoped_expire_and_revoke(&m).await;
}
async fn a_token_cannot_mint_a_token_with_more_scopes_than_its_own(m: TestManager) {
    scenarios::a_token_cannot_mint_a_token_with_more_scopes_than_its_own(&m).await;
}
async fn failed_sign_ins_are_throttled_per_client(m: TestManager) {
    scenarios::failed_sign_ins_are_throttled_per_client(&m).await;
}
async fn a_user_cannot_see_another_users_tokens(m: TestManager) {
    scenarios::a_user_cannot_see_another_users_tokens(&m).await;
}
async fn join_tokens_are_admins_only_shown_once_and_stored_hashed(m: TestManager) {
    scenarios::join_tokens_are_admins_only_shown_once_and_stored_hashed(&m).await;
}
async fn secrets_never_appear_in_responses(m: TestManager) {
    scenarios::secrets_never_appear_in_responses(&m).await;
}

async fn jobs_are_created_listed_and_fail_with_a_reason(m: TestManager) {
    scenarios::jobs_are_created_listed_and_fail_with_a_reason(&m).await;
}

async fn a_private_jobs_urls_are_shown_only_to_its_owner_and_admins(m: TestManager) {
    scenarios::a_private_jobs_urls_are_shown_only_to_its_owner_and_admins(&m).await;
}

async fn peers_answer_for_their_caches(m: TestManager) {
    scenarios::peers_answer_for_their_caches(&m).await;
}

/// The database outlives the manager: a restart finds every user and cluster.
async fn data_survives_a_restart(m: TestManager) {
    let admin = m.admin().await;
    admin.create_user("kept", "user", "kept-password").await;
    let r = admin
        .post(
            "/api/v1/scheduler-clusters",
            serde_json::json!({"name": "kept-cluster"}),
        )
        .await;
    assert_eq!(r.status, reqwest::StatusCode::CREATED);
    let url = m.db_url.clone();
    let (dir, pg) = m.stop().await;
    let m = TestManager::on(&url, dir).await;
    m.api().sign_in("kept", "kept-password").await;
    let r = m.admin().await.get("/api/v1/scheduler-clusters").await;
    assert!(r
        .json
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["name"] == "kept-cluster"));
    drop(pg);
}

on_both_databases!(
    system_routes_answer_without_credentials,
    users_and_sessions_round_trip,
    clusters_round_trip,
    every_write_is_audited,
    hosts_are_listed,
    a_guest_token_cannot_create_or_delete_anything,
    tokens_are_scoped_expire_and_revoke,
    a_token_cannot_mint_a_token_with_more_scopes_than_its_own,
    failed_sign_ins_are_throttled_per_client,
    a_user_cannot_see_another_users_tokens,
    secrets_never_appear_in_responses,
    join_tokens_are_admins_only_shown_once_and_stored_hashed,
    data_survives_a_restart,
    jobs_are_created_listed_and_fail_with_a_reason,
    peers_answer_for_their_caches,
    a_private_jobs_urls_are_shown_only_to_its_owner_and_admins,
);
