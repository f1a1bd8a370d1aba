-- Expand. Erasure of outgoing webhook payloads moves into the database: a
-- trigger on subscriptions takes a deleted subscriber's address and name
-- out of every webhook payload about them, sent or not
-- (webhook_deliveries, src/outgoing_webhooks/deliveries.rs).
--
-- During a rolling update an older release erases subscribers too: one
-- from before outgoing webhooks knows nothing of their payloads, deletes
-- the row, and leaves the address in the events this release queued about
-- them. The trigger covers whatever deletes the row (any release's
-- erasure, the retention job's old unconfirmed sign-ups, a bulk erase), so
-- this release's erasure relies on it rather than keeping a second copy
-- of the statement.
--
-- Per statement, over the deleted rows as a transition table: deleting
-- 10,000 subscribers runs one UPDATE joined on the subscriber index of
-- webhook_deliveries, not 10,000 trigger calls.
-- Compatible with: every release. A release without webhooks finds its
-- deletes unchanged; the one before this, which clears the payloads
-- itself before deleting the row, finds them cleared already, and the
-- trigger leaves payloads without an address alone.
CREATE FUNCTION forget_deleted_subscribers_in_webhook_payloads() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A delivery still to go is sent without the address: at least once
    -- yields to erasure. Payloads already without one are left alone.
    UPDATE webhook_deliveries d
    SET payload = jsonb_set(jsonb_set(d.payload, '{data,email}', 'null'), '{data,name}', 'null')
    FROM (SELECT DISTINCT id FROM gone_subscribers) AS gone
    WHERE d.subscriber_id = gone.id
      AND d.subscriber_id IS NOT NULL
      AND jsonb_typeof(d.payload #> '{data,email}') = 'string';
    RETURN NULL;
END;
$$;

CREATE TRIGGER forget_deleted_subscribers_in_webhook_payloads
AFTER DELETE ON subscriptions
REFERENCING OLD TABLE AS gone_subscribers
FOR EACH STATEMENT EXECUTE FUNCTION forget_deleted_subscribers_in_webhook_payloads();
