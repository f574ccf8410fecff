-- A stable, random public id per retirement: what the API (and Mork's consumers) call it.
-- SQLite cannot default a column to a function, so a trigger fills it on insert.
ALTER TABLE retirement ADD COLUMN public_id TEXT;
CREATE TRIGGER retirement_public_id AFTER INSERT ON retirement WHEN NEW.public_id IS NULL
BEGIN
    UPDATE retirement SET public_id = lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2)))
        || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6)))
    WHERE id = NEW.id;
END;
UPDATE retirement SET public_id = lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2)))
    || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
    || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(2))), 2)
    || '-' || lower(hex(randomblob(6)))
WHERE public_id IS NULL;
CREATE UNIQUE INDEX retirement_public_id ON retirement (public_id);
CREATE INDEX retirement_created ON retirement (created_at, id);
-- A service's list walks its acknowledgement rows in the order they were handed over.
CREATE INDEX service_ack_handover ON service_ack (service, status, created_at, retirement_id);
-- Rows from before 0009 have no handover time: take the first one known.
UPDATE service_ack SET created_at = COALESCE(notified_at, acked_at,
    (SELECT r.created_at FROM retirement r WHERE r.id = service_ack.retirement_id))
WHERE created_at IS NULL;
-- service_ack_handover starts with (service, status).
DROP INDEX IF EXISTS service_ack_service_status;
