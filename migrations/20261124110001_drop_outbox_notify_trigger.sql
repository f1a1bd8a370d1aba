-- Contract. Removes the trigger that sent NOTIFY inside every transaction
-- that queued an email. A NOTIFY makes Postgres serialise the commits of all
-- transactions that send one, which capped subscriptions at one commit per
-- WAL flush. The service now notifies after its commit, on a connection of
-- its own, and wakes the workers in its own process directly.
-- Compatible with: the previous release. Its workers keep listening on the
-- same channel and are woken by this release's notifications; email queued
-- by the previous release itself is picked up by the workers' poll (every
-- second) instead of at once, until it is replaced.
DROP TRIGGER IF EXISTS notify_email_outbox ON email_outbox;
-- Only the trigger above called this function.
-- squawk-ignore ban-drop-function
DROP FUNCTION IF EXISTS notify_email_outbox();
