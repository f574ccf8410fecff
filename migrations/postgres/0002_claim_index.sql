-- Claims order by (due_at, id): index both so a backlog is read in order, not sorted.
DROP INDEX retirement_due;
CREATE INDEX retirement_due ON retirement (due_at, id) WHERE ended_at IS NULL AND due_at IS NOT NULL;
