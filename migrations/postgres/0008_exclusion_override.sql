-- An operator opened this retirement despite the source's exclusions (`enqueue
-- --override-exclusion`); a deleting stage may re-check exclusions for the others.
ALTER TABLE retirement ADD COLUMN exclusion_override BOOLEAN NOT NULL DEFAULT FALSE;
