-- Lookups by hash (status and audit by subject or email) go through a table written once
-- per retirement. On `retirement`, whose rows are rewritten by every claim and write-back,
-- the two indexes of random 64-character hashes took two thirds of each update.
CREATE TABLE retirement_key (
    key_hash      TEXT COLLATE "C" NOT NULL,   -- subject_hash or email_hash
    retirement_id BIGINT NOT NULL REFERENCES retirement (id),
    PRIMARY KEY (key_hash, retirement_id)
);
INSERT INTO retirement_key (key_hash, retirement_id)
    SELECT subject_hash, id FROM retirement
    UNION
    SELECT email_hash, id FROM retirement WHERE email_hash IS NOT NULL;
-- A trigger, not the enqueue code, writes the keys: a daemon of an older release still
-- enqueueing during a rolling upgrade gets them too.
CREATE FUNCTION retirement_key_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO retirement_key (key_hash, retirement_id) VALUES (NEW.subject_hash, NEW.id)
        ON CONFLICT DO NOTHING;
    IF NEW.email_hash IS NOT NULL THEN
        INSERT INTO retirement_key (key_hash, retirement_id) VALUES (NEW.email_hash, NEW.id)
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER retirement_key_insert AFTER INSERT ON retirement
    FOR EACH ROW EXECUTE FUNCTION retirement_key_insert();
DROP INDEX retirement_subject_hash;
DROP INDEX retirement_email_hash;
