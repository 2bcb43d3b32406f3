-- Users, sign-in sessions, personal access tokens and the audit log; scheduler and seed-peer
-- clusters with their schedulers and peers. Times are unix seconds; flags are 0/1 integers
-- (the same SQL then runs on SQLite and PostgreSQL).

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id BIGSERIAL PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    scopes TEXT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_user ON tokens(user_id);

CREATE TABLE audit_log (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    user_id BIGINT,
    user_name TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT NOT NULL,
    status BIGINT NOT NULL
);

CREATE TABLE scheduler_clusters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bio TEXT NOT NULL DEFAULT '',
    scopes TEXT NOT NULL,
    config TEXT NOT NULL,
    is_default BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE seed_peer_clusters (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    bio TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE cluster_links (
    scheduler_cluster_id BIGINT NOT NULL REFERENCES scheduler_clusters(id) ON DELETE CASCADE,
    seed_peer_cluster_id BIGINT NOT NULL REFERENCES seed_peer_clusters(id) ON DELETE CASCADE,
    PRIMARY KEY (scheduler_cluster_id, seed_peer_cluster_id)
);

CREATE TABLE schedulers (
    id BIGSERIAL PRIMARY KEY,
    scheduler_cluster_id BIGINT NOT NULL REFERENCES scheduler_clusters(id) ON DELETE CASCADE,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    port BIGINT NOT NULL,
    url TEXT NOT NULL,
    idc TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    last_keepalive_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (scheduler_cluster_id, url)
);

CREATE TABLE peers (
    id BIGSERIAL PRIMARY KEY,
    host_id TEXT NOT NULL UNIQUE,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    upload_port BIGINT NOT NULL,
    idc TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    is_seed BIGINT NOT NULL DEFAULT 0,
    scheduler_cluster_id BIGINT REFERENCES scheduler_clusters(id) ON DELETE SET NULL,
    seed_peer_cluster_id BIGINT REFERENCES seed_peer_clusters(id) ON DELETE SET NULL,
    state TEXT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
