-- lethe store schema, SQLite. Times are RFC 3339 text in UTC, always bound by lethe.
CREATE TABLE state (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    role     TEXT CHECK (role IN ('complete', 'errored', 'aborted'))
);

CREATE TABLE retirement (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    subject      TEXT,            -- erased when the retirement ends
    email        TEXT,            -- erased when the retirement ends
    username     TEXT,            -- erased when the retirement ends
    subject_hash TEXT NOT NULL,   -- HMAC-SHA256 of the subject id, kept for audits
    email_hash   TEXT,            -- HMAC-SHA256 of the email, kept for audits
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL,
    due_at       TEXT,            -- NULL: nothing due (errored or ended); also the lease expiry while claimed
    attempt      INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  TEXT,
    last_error   TEXT,
    failed_state TEXT,
    warned_at    TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    ended_at     TEXT,
    CHECK (ended_at IS NOT NULL OR subject IS NOT NULL)
);
CREATE UNIQUE INDEX retirement_one_open ON retirement (subject) WHERE ended_at IS NULL;
CREATE INDEX retirement_due ON retirement (due_at) WHERE ended_at IS NULL AND due_at IS NOT NULL;
CREATE INDEX retirement_state ON retirement (state);
CREATE INDEX retirement_subject_hash ON retirement (subject_hash);
CREATE INDEX retirement_email_hash ON retirement (email_hash);

CREATE TABLE retirement_event (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    retirement_id INTEGER NOT NULL REFERENCES retirement (id),
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX retirement_event_retirement ON retirement_event (retirement_id, id);
CREATE INDEX retirement_event_at ON retirement_event (at);
CREATE TRIGGER retirement_event_no_update BEFORE UPDATE ON retirement_event
BEGIN SELECT RAISE(ABORT, 'retirement_event is append-only'); END;
CREATE TRIGGER retirement_event_no_delete BEFORE DELETE ON retirement_event
BEGIN SELECT RAISE(ABORT, 'retirement_event is append-only'); END;

CREATE TABLE service_ack (
    retirement_id INTEGER NOT NULL REFERENCES retirement (id),
    service       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('to_delete', 'deleted')),
    notified_at   TEXT,
    acked_at      TEXT,
    PRIMARY KEY (retirement_id, service)
);

CREATE TABLE scan_run (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    seen         INTEGER NOT NULL DEFAULT 0,
    inactive     INTEGER NOT NULL DEFAULT 0,
    excluded     INTEGER NOT NULL DEFAULT 0,
    already_open INTEGER NOT NULL DEFAULT 0,
    enqueued     INTEGER NOT NULL DEFAULT 0,
    refused      TEXT
);
