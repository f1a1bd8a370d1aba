-- no-transaction
-- Expand. The retention job clears the bodies of messages that were sent or
-- given up some days ago, and deletes them later still, a batch at a time in
-- order of when they finished. Pending messages are left out: the index
-- holds only what retention works on. The id breaks ties between messages
-- finished in the same transaction. Built CONCURRENTLY, alone in its file.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS email_outbox_finished_idx
    ON email_outbox ((COALESCE(sent_at, failed_at)), id)
    WHERE status <> 'pending';
