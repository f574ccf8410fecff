-- Audits read events in time order (then id) over a period.
DROP INDEX retirement_event_at;
CREATE INDEX retirement_event_at ON retirement_event (at, id);
-- Retirements are never deleted: an ended one keeps its hashes and history for audits
-- (its PII is erased in place), and its events must keep naming it.
CREATE TRIGGER retirement_is_kept BEFORE DELETE ON retirement
BEGIN SELECT RAISE(ABORT, 'retirement rows are never deleted: they anchor the audit trail'); END;
