-- no-transaction
-- Expand. The admin pages list subscribers newest first, a page at a time
-- (keyset pagination on subscribed_at, id), and the dashboard counts sign-ups
-- per day over the last 30 days: without this index each of those reads the
-- whole table. Built CONCURRENTLY, so sign-ups are not blocked while it
-- builds; alone in its file, because Postgres runs the statements of one
-- file in a single implicit transaction, where CONCURRENTLY is refused.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_subscribed_at_id_idx
    ON subscriptions (subscribed_at, id);
