-- The subject's language for emails, and how many grace reminders were sent.
ALTER TABLE retirement ADD COLUMN locale TEXT;
ALTER TABLE retirement ADD COLUMN reminders_sent INTEGER NOT NULL DEFAULT 0;
-- Activity reported to lethe (`lethe touch`), by keyed hash of the subject id: a scan does
-- not reopen a retirement for a subject active within the inactivity period.
CREATE TABLE subject_activity (
    subject_hash TEXT PRIMARY KEY,
    active_at    TEXT NOT NULL
);
