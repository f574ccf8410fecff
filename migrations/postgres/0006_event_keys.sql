-- Every warning writes two events in one write-back; each event cost a heap row, three
-- index entries and a foreign-key check that locked its retirement row (a WAL record per
-- event). Now: two index entries, and one set-based check per statement.
ALTER TABLE retirement_event DROP CONSTRAINT retirement_event_retirement_id_fkey;
ALTER TABLE retirement_event DROP CONSTRAINT retirement_event_pkey;
DROP INDEX retirement_event_retirement;
-- A retirement's history in order; the event id alone is unique all the same (identity).
ALTER TABLE retirement_event ADD PRIMARY KEY (retirement_id, id);
-- Audits read events in time order (then id) over a period.
DROP INDEX retirement_event_at;
CREATE INDEX retirement_event_at ON retirement_event (at, id);

-- The reference check, once per inserting statement: every event names a retirement.
CREATE FUNCTION retirement_event_names_a_retirement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted_events e
               WHERE NOT EXISTS (SELECT 1 FROM retirement r WHERE r.id = e.retirement_id)) THEN
        RAISE EXCEPTION 'retirement_event: an event names a retirement that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER retirement_event_names_a_retirement AFTER INSERT ON retirement_event
    REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION retirement_event_names_a_retirement();

-- What the foreign key also guaranteed: the retirement stays. Retirements are never
-- deleted (an ended one keeps its hashes and history for audits; its PII is erased in place).
CREATE FUNCTION retirement_is_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'retirement rows are never deleted: they anchor the audit trail';
END;
$$;
CREATE TRIGGER retirement_is_kept BEFORE DELETE ON retirement
    FOR EACH ROW EXECUTE FUNCTION retirement_is_kept();
CREATE TRIGGER retirement_is_kept_truncate BEFORE TRUNCATE ON retirement
    FOR EACH STATEMENT EXECUTE FUNCTION retirement_is_kept();
