-- Expand. Compatible with the previous release, which neither reads nor
-- writes these columns, and with this one. One table a migration: each
-- takes its table's lock alone, and a wait for one (behind a long read)
-- holds no other table up.
--
-- memberships.welcomed_at: when the reader was sent the list's welcome;
-- set in the transaction that queues it, so it goes once per reader and
-- list. NULL for every membership from before it existed: the welcome
-- goes on a confirmation from now on, never to readers confirmed before.
ALTER TABLE memberships ADD COLUMN welcomed_at timestamptz;

