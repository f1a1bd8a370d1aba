-- no-transaction
-- Expand. One issue per slug: the constraint behind the archive's
-- addresses (the code picks a free one under a lock, so this only
-- catches a bug). Built CONCURRENTLY, alone in its file.
-- Compatible with: every release; the previous one writes no slug.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS newsletter_issues_slug_key
    ON newsletter_issues (slug);
