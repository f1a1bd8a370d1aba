-- no-transaction
-- Expand. The admin's list filtered by a status pages newest first on
-- (subscribed_at, id). Through the index on those two alone, a page walks
-- past every row of the other statuses: a rare status (a handful of
-- unsubscribes among a million) makes every page, and the export, read the
-- whole table. With the status first, each page reads only its own rows,
-- however deep it is. Built CONCURRENTLY, alone in its file.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_status_subscribed_at_id_idx
    ON subscriptions (status, subscribed_at, id);
