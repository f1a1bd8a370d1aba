-- no-transaction
-- Expand. The retention job deletes expired confirmation tokens a batch at
-- a time, oldest first, resuming each batch after the last key it saw:
-- without this index every batch would read the whole table. token_hash
-- breaks ties, so that tokens sharing an expiry (a batch of sign-ups) are
-- still walked once each. Built CONCURRENTLY, so sign-ups are not blocked
-- while it builds; alone in its file, because Postgres refuses CONCURRENTLY
-- inside the transaction a file otherwise runs in.
-- Compatible with: every release; nothing reads or writes differently.
CREATE INDEX CONCURRENTLY IF NOT EXISTS confirmation_tokens_expires_at_idx
    ON confirmation_tokens (expires_at, token_hash);
