-- Expand. The transactional outbox: emails are written here in the same
-- transaction as the change that causes them, and a delivery worker sends
-- them. Bodies are cleared once a message is sent or given up, because they
-- contain confirmation links.
-- Compatible with: the previous release (it sends directly and never touches
-- this table) and this one.
CREATE TABLE email_outbox (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    subject text NOT NULL,
    html_body text NULL,
    text_body text NULL,
    message_stream text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    -- clock_timestamp, not now(): the commit-to-delivery delay is measured from it.
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Set while a worker holds the message; a worker that dies lets it lapse.
    claimed_until timestamptz NULL,
    last_error text NULL,
    sent_at timestamptz NULL,
    failed_at timestamptz NULL
);
CREATE INDEX email_outbox_due_idx ON email_outbox (next_attempt_at) WHERE status = 'pending';

-- Wakes listening workers when a message is committed (NOTIFY is delivered at
-- commit, and not at all on rollback).
CREATE FUNCTION notify_email_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('email_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER notify_email_outbox
AFTER INSERT ON email_outbox
FOR EACH STATEMENT EXECUTE FUNCTION notify_email_outbox();
