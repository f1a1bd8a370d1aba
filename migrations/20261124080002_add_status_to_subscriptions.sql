-- Step 2 of 4 (expand). Adds `status` as a NULLABLE column.
-- Compatible with: the first release (it does not know the column and keeps
-- inserting without it) and the release that writes `status` on every insert.
-- Deploy that release before step 3.
ALTER TABLE subscriptions ADD COLUMN status text NULL;
