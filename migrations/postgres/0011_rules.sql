-- The selection rule that opened a retirement (NULL: opened by hand), and per scan run
-- the rule it ran and how many of its candidates an earlier rule of the same run took.
ALTER TABLE retirement ADD COLUMN rule TEXT;
ALTER TABLE scan_run ADD COLUMN rule TEXT;
ALTER TABLE scan_run ADD COLUMN overlap BIGINT NOT NULL DEFAULT 0;
CREATE INDEX scan_run_rule ON scan_run (rule, started_at);
