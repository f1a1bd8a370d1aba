-- no-transaction
-- Expand. The admin's search matches any part of an address
-- (`email ILIKE '%…%'`), which no B-tree can answer: without this index a
-- search for an address that is not there reads the whole table (3 s at a
-- million subscribers on two cores). A trigram index answers it from the
-- trigrams of the search, whatever its position in the address. Built
-- CONCURRENTLY, so sign-ups are not blocked while it builds (about 17 s at
-- a million); alone in its file, because Postgres runs the statements of
-- one file in a single implicit transaction, where CONCURRENTLY is refused.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_email_trgm_idx
    ON subscriptions USING gin (email gin_trgm_ops);
