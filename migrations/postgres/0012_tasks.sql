-- Mork's tasks started through the API (POST /v1/tasks), so their status outlives the
-- process that ran them and any lethe behind the same address answers it.
CREATE TABLE api_task (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('PENDING', 'STARTED', 'SUCCESS', 'FAILURE')),
    error      TEXT,
    actor      TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_task_created ON api_task (created_at);
