-- Expand. Validates the constraints the previous migration added NOT VALID.
-- VALIDATE takes a lock that lets reads and writes go on while it scans.
-- Compatible with: the previous release (every row it writes has a subject
-- and no content_id) and this one.
ALTER TABLE email_outbox VALIDATE CONSTRAINT email_outbox_content_id_fkey;
ALTER TABLE email_outbox VALIDATE CONSTRAINT email_outbox_has_content;
