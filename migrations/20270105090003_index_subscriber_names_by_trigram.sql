-- no-transaction
-- Expand. As the previous migration, for the name: the search matches
-- either, and the planner combines the two indexes (a BitmapOr). Built
-- CONCURRENTLY, alone in its file.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_name_trgm_idx
    ON subscriptions USING gin (name gin_trgm_ops);
