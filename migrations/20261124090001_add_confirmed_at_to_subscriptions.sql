-- Expand. Records when a subscriber confirmed, as consent evidence next to
-- subscribed_at (when they asked). Nullable: rows confirmed before this step
-- have no recorded time, and the previous release does not write it.
-- Compatible with: the previous release (it never reads the column) and this one.
ALTER TABLE subscriptions ADD COLUMN confirmed_at timestamptz NULL;
