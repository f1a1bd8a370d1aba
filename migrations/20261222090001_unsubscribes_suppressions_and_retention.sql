-- Expand. Leaving the list, hearing back from the email provider, and
-- forgetting old data.
-- Compatible with: the previous release, which never reads the new tables or
-- columns, sends newsletters to status 'confirmed' only (so never to an
-- 'unsubscribed' row), and treats an 'unsubscribed' row that signs up again
-- as pending: a new confirmation, which is what this release does too. It
-- writes no delivery status outside the old set, which the new check keeps.
--
-- * subscriptions.unsubscribed_at: when the subscriber left (status
--   'unsubscribed'); cleared when they confirm again.
-- * suppressions: addresses never to be mailed again, keyed by a keyed hash
--   of the address in lower case (HMAC-SHA256 under a key derived from
--   application.hmac_secret), so that the row can outlive the subscriber's
--   erasure without keeping the address. `email` holds the address, in lower
--   case, only while a subscriber row with it exists.
-- * soft_bounces: soft bounces in a row per address hash; a delivery resets
--   the count, and past webhooks.soft_bounce_limit the address is suppressed.
-- * webhook_records: the provider's record ids already handled, so a repeated
--   webhook call changes nothing. Only ids and types: no addresses.
-- * job_leases: one retention run at a time across every replica.
ALTER TABLE subscriptions ADD COLUMN unsubscribed_at timestamptz NULL;

CREATE TABLE suppressions (
    address_hash bytea PRIMARY KEY,
    email text NULL,
    reason text NOT NULL CHECK (reason IN (
        'hard_bounce', 'soft_bounce', 'spam_complaint', 'provider_unsubscribe', 'unsubscribed'
    )),
    -- What the provider said, for the admin pages (e.g. the bounce description).
    detail text NULL,
    -- When the provider says the change happened: a record older than this
    -- (a retry that arrives late) does not undo a newer one.
    changed_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX suppressions_email_key ON suppressions (email);

CREATE TABLE soft_bounces (
    address_hash bytea PRIMARY KEY,
    -- squawk-ignore prefer-bigint-over-int
    in_a_row integer NOT NULL,
    last_at timestamptz NOT NULL
);

CREATE TABLE webhook_records (
    source text NOT NULL,
    record_id text NOT NULL,
    record_type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, record_id)
);
CREATE INDEX webhook_records_received_at_idx ON webhook_records (received_at);

CREATE TABLE job_leases (
    job text PRIMARY KEY,
    holder uuid NOT NULL,
    held_until timestamptz NOT NULL,
    -- When the last run finished: the next one is due an interval later,
    -- whichever replica takes it.
    last_finished_at timestamptz NULL
);

-- A delivery the provider reports as bounced or complained about. `sent`
-- keeps counting every message the API accepted, these included;
-- `bounced` and `complained` count the rows in those states.
-- The new check is added NOT VALID (no scan under a lock); the next
-- migration validates it. The old one goes in the same transaction, so no
-- row is written unchecked in between.
-- squawk-ignore ban-drop-constraint
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check CHECK (
    status IN ('queued', 'sent', 'failed', 'skipped', 'bounced', 'complained')
) NOT VALID;

ALTER TABLE newsletter_issues ADD COLUMN bounced bigint NOT NULL DEFAULT 0;
ALTER TABLE newsletter_issues ADD COLUMN complained bigint NOT NULL DEFAULT 0;
-- Why the issue paused when nobody pressed Pause (the complaint guard).
ALTER TABLE newsletter_issues ADD COLUMN paused_reason text NULL;
-- Where the complaint guard starts counting: `sent` and `complained` when
-- an admin last resumed the issue after the guard paused it. The guard
-- judges what was sent and complained about since, so that the complaints
-- it already paused for do not pause the issue again at the next one.
ALTER TABLE newsletter_issues ADD COLUMN guard_sent_base bigint NOT NULL DEFAULT 0;
ALTER TABLE newsletter_issues ADD COLUMN guard_complained_base bigint NOT NULL DEFAULT 0;
