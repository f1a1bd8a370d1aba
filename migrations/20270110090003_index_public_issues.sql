-- no-transaction
-- Expand. The archive's pages and the feed read the public issues newest
-- first, a page at a time from a (send_at, id) cursor: this index holds
-- the public ones alone, in that order. Built CONCURRENTLY, alone in its
-- file.
-- Compatible with: every release; nothing else reads it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS newsletter_issues_public_idx
    ON newsletter_issues (send_at DESC, id DESC)
    WHERE public_at IS NOT NULL;
