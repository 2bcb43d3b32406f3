-- Jobs (preheat) and their per-peer, per-URL results. A job's registry password, when it has
-- one, is kept apart from its arguments so no listing ever carries it.

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    args TEXT NOT NULL,
    secret TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    user_id BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX jobs_state ON jobs(state);

CREATE TABLE job_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    host_id TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    UNIQUE (job_id, host_id, url)
);
