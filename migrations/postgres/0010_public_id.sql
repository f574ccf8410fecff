-- A stable, random public id per retirement: what the API (and Mork's consumers) call it.
ALTER TABLE retirement ADD COLUMN public_id TEXT NOT NULL DEFAULT gen_random_uuid()::text;
CREATE UNIQUE INDEX retirement_public_id ON retirement (public_id);
-- The Mork-compatible list walks the open and completed retirements oldest first.
CREATE INDEX retirement_created ON retirement (created_at, id);
-- A service's list walks its acknowledgement rows in the order they were handed over.
CREATE INDEX service_ack_handover ON service_ack (service, status, created_at, retirement_id);
