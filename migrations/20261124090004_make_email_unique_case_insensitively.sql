-- no-transaction
-- Expand. One subscriber per address regardless of case: Ada@Example.com and
-- ada@example.com are the same person. The address stays stored as typed.
-- Built CONCURRENTLY (hence outside a transaction) so inserts are not blocked
-- while the index builds. If case-variant duplicates already exist the build
-- fails and leaves an INVALID index: merge the duplicates, drop the index and
-- run the migration again.
-- Compatible with: the previous release (its ON CONFLICT (email) still has the
-- old unique constraint to use; an insert of a case variant of an existing
-- address now fails instead of creating a duplicate) and this one, which
-- upserts on this index. The old constraint goes in a later contract step.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS subscriptions_email_lower_key
    ON subscriptions (lower(email));
