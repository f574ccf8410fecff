-- Claims of the current state that never came back (the worker crashed or lost its
-- lease), counted apart from handler failures: a claim finds the lease of the previous
-- one still set; any written outcome resets the count. The driver parks a retirement
-- past driver.max_lost_leases; policy.max_attempts counts failures only.
ALTER TABLE retirement ADD COLUMN lost_leases INTEGER NOT NULL DEFAULT 0;
