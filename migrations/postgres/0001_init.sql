-- lethe store schema, PostgreSQL.
CREATE TABLE state (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    role     TEXT CHECK (role IN ('complete', 'errored', 'aborted'))
);

CREATE TABLE retirement (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject      TEXT,            -- erased when the retirement ends
    email        TEXT,            -- erased when the retirement ends
    username     TEXT,            -- erased when the retirement ends
    subject_hash TEXT NOT NULL,   -- HMAC-SHA256 of the subject id, kept for audits
    email_hash   TEXT,            -- HMAC-SHA256 of the email, kept for audits
    reason       TEXT NOT NULL,
    state        TEXT NOT NULL,
    due_at       TIMESTAMPTZ,     -- NULL: nothing due (errored or ended); also the lease expiry while claimed
    attempt      INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    failed_state TEXT,
    warned_at    TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    ended_at     TIMESTAMPTZ,
    CHECK (ended_at IS NOT NULL OR subject IS NOT NULL)
);
CREATE UNIQUE INDEX retirement_one_open ON retirement (subject) WHERE ended_at IS NULL;
CREATE INDEX retirement_due ON retirement (due_at) WHERE ended_at IS NULL AND due_at IS NOT NULL;
CREATE INDEX retirement_state ON retirement (state);
CREATE INDEX retirement_subject_hash ON retirement (subject_hash);
CREATE INDEX retirement_email_hash ON retirement (email_hash);

CREATE TABLE retirement_event (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    retirement_id BIGINT NOT NULL REFERENCES retirement (id),
    at            TIMESTAMPTZ NOT NULL,
    actor         TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX retirement_event_retirement ON retirement_event (retirement_id, id);
CREATE INDEX retirement_event_at ON retirement_event (at);

CREATE FUNCTION retirement_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'retirement_event is append-only';
END;
$$;
CREATE TRIGGER retirement_event_append_only BEFORE UPDATE OR DELETE ON retirement_event
    FOR EACH ROW EXECUTE FUNCTION retirement_event_append_only();
CREATE TRIGGER retirement_event_no_truncate BEFORE TRUNCATE ON retirement_event
    FOR EACH STATEMENT EXECUTE FUNCTION retirement_event_append_only();

CREATE TABLE service_ack (
    retirement_id BIGINT NOT NULL REFERENCES retirement (id),
    service       TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('to_delete', 'deleted')),
    notified_at   TIMESTAMPTZ,
    acked_at      TIMESTAMPTZ,
    PRIMARY KEY (retirement_id, service)
);

CREATE TABLE scan_run (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    seen         BIGINT NOT NULL DEFAULT 0,
    inactive     BIGINT NOT NULL DEFAULT 0,
    excluded     BIGINT NOT NULL DEFAULT 0,
    already_open BIGINT NOT NULL DEFAULT 0,
    enqueued     BIGINT NOT NULL DEFAULT 0,
    refused      TEXT
);
