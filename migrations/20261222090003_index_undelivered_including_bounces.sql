-- no-transaction
-- Expand. "Who didn't get it" now lists bounced deliveries and complaints
-- too. Like deliveries_undelivered_idx, this partial index holds only those
-- few rows of an issue; built CONCURRENTLY, alone in its file. The older
-- index is dropped by a later contract step, once no release reads through it.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_unreached_idx ON deliveries (issue_id, seq)
    WHERE status IN ('failed', 'skipped', 'bounced', 'complained');
