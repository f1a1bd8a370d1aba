-- no-transaction
-- Expand. Deleting a shared email content checks that no outbox row still
-- refers to it (the foreign key, and the retention job's own test before
-- it): without an index on content_id each check reads the whole outbox.
-- Only the few rows that share a content are in it. Built CONCURRENTLY,
-- alone in its file.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS email_outbox_content_id_idx
    ON email_outbox (content_id)
    WHERE content_id IS NOT NULL;
