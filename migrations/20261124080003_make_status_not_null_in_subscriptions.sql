-- Step 3 of 4 (contract). Backfills `status` and makes it NOT NULL.
-- Requires: every running instance writes `status` (the release deployed after
-- step 2). The first release's inserts fail from here on.
-- sqlx runs each migration in one transaction, so no row can be inserted
-- without a status between the backfill and the constraint.
-- Rows written before double opt-in existed were subscribed directly.
UPDATE subscriptions SET status = 'confirmed' WHERE status IS NULL;
ALTER TABLE subscriptions ALTER COLUMN status SET NOT NULL;
