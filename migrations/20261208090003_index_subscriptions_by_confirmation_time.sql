-- no-transaction
-- Expand. The dashboard counts confirmations per day over the last 30 days;
-- this partial index holds confirmed rows only. Built CONCURRENTLY, like the
-- previous migration's.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_confirmed_at_idx
    ON subscriptions (confirmed_at) WHERE confirmed_at IS NOT NULL;
