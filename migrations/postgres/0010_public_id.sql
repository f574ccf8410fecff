-- A stable, random public id per retirement: what the API (and Mork's consumers) call it.
ALTER TABLE retirement ADD COLUMN public_id TEXT NOT NULL DEFAULT gen_random_uuid()::text;
CREATE UNIQUE INDEX retirement_public_id ON retirement (public_id);
-- The Mork-compatible list walks the open and completed retirements oldest first.
CREATE INDEX retirement_created ON retirement (created_at, id);
-- A service's list walks its acknowledgement rows in the order they were handed over.
CREATE INDEX service_ack_handover ON service_ack (service, status, created_at, retirement_id);
-- Rows from before 0009 have no handover time: take the first one known.
UPDATE service_ack SET created_at = COALESCE(notified_at, acked_at,
    (SELECT r.created_at FROM retirement r WHERE r.id = service_ack.retirement_id))
WHERE created_at IS NULL;
-- service_ack_handover starts with (service, status).
DROP INDEX IF EXISTS service_ack_service_status;
