-- Expand. Newsletter issues and their delivery ledger: new tables only.
-- Compatible with: the previous release, which never reads or writes them,
-- and this one.
--
-- An issue is stored once, rendered with {{placeholders}} that each
-- recipient's values fill at send time. Its audience is recorded as one
-- `deliveries` row per recipient, numbered 1..n in `seq`; `delivery_batches`
-- cut that numbering into ranges, which are what senders claim, so that a
-- claim and a lease cost one row per batch instead of one per recipient.
CREATE TABLE newsletter_issues (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    -- The Markdown as written, and what it rendered to.
    content text NOT NULL,
    subject text NOT NULL,
    html_body text NOT NULL,
    text_body text NOT NULL,
    message_stream text NOT NULL,
    state text NOT NULL DEFAULT 'sending'
        CHECK (state IN ('sending', 'paused', 'cancelled', 'done')),
    -- When it goes out, and the moment that freezes its audience: who had
    -- confirmed by then. Publishing now sets it to the moment of publishing.
    send_at timestamptz NOT NULL,
    created_by uuid NULL REFERENCES admins (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The audience is recorded in chunks ordered by subscriber id; the
    -- cursor is the last id recorded, the claim the recorder's lease.
    audience_cursor uuid NULL,
    audience_complete boolean NOT NULL DEFAULT false,
    audience_claim uuid NULL,
    audience_claimed_until timestamptz NULL,
    -- Counters kept in the same statements that change deliveries, so that
    -- progress is one row to read, never a count over the ledger.
    recipients bigint NOT NULL DEFAULT 0,
    sent bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    -- The send rate is measured from here (reset when sending resumes).
    rate_since timestamptz NULL,
    rate_base bigint NOT NULL DEFAULT 0,
    finished_at timestamptz NULL
);
CREATE INDEX newsletter_issues_created_at_idx ON newsletter_issues (created_at DESC);
CREATE INDEX newsletter_issues_unrecorded_idx ON newsletter_issues (send_at)
    WHERE NOT audience_complete AND state = 'sending';

-- One row per recipient. No foreign keys: checking them costs about a
-- second per million rows recorded, the issue's rows are only written by
-- code that just read the issue, and a ledger row must outlive an erased
-- subscriber (the subscriber_id then matches nothing and the row is
-- skipped if still queued). seq is 32-bit, not 64: an issue is far from two
-- billion recipients, and four bytes a row on a table that gains a row per
-- recipient per issue add up; attempts never exceeds campaigns.max_attempts.
CREATE TABLE deliveries (
    issue_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int
    seq integer NOT NULL,
    subscriber_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'failed', 'skipped')),
    -- squawk-ignore prefer-bigint-over-smallint
    attempts smallint NOT NULL DEFAULT 0,
    -- The email API's MessageID once sent; the reason once failed or skipped,
    -- or the last passing error while still queued.
    message_id text NULL,
    last_error text NULL,
    updated_at timestamptz NULL,
    PRIMARY KEY (issue_id, seq)
);

-- "Who didn't get it": the few failed and skipped rows of an issue, without
-- reading its sent ones. Queued rows, which every insert makes, are not in it.
CREATE INDEX deliveries_undelivered_idx ON deliveries (issue_id, seq)
    WHERE status IN ('failed', 'skipped');

-- The seqs are the deliveries' own; attempts count a batch's failed calls.
CREATE TABLE delivery_batches (
    issue_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int
    first_seq integer NOT NULL,
    -- squawk-ignore prefer-bigint-over-int
    last_seq integer NOT NULL,
    done boolean NOT NULL DEFAULT false,
    -- Consecutive attempts that failed as a whole; sets the backoff.
    -- squawk-ignore prefer-bigint-over-int
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_id uuid NULL,
    claimed_until timestamptz NULL,
    PRIMARY KEY (issue_id, first_seq),
    CHECK (first_seq <= last_seq)
);
CREATE INDEX delivery_batches_due_idx ON delivery_batches (next_attempt_at) WHERE NOT done;

-- Publishing is idempotent per admin and key for a day: the form carries a
-- key, and a second submission with it gets the first one's issue.
CREATE TABLE publish_requests (
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    -- A digest of what was submitted: the same key with other content is refused.
    fingerprint bytea NOT NULL,
    -- Checked at commit: the key is taken first, so that a second request
    -- with it waits for the first one's outcome, and the issue written after.
    issue_id uuid NOT NULL REFERENCES newsletter_issues (id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (admin_id, idempotency_key)
);

-- Progress for pages watching an issue, on any replica: every change to an
-- issue's row (its counters, its state) is announced at commit. Postgres
-- folds identical notifications within one transaction into one.
CREATE FUNCTION notify_newsletter_progress() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('newsletter_progress', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER notify_newsletter_progress
AFTER UPDATE ON newsletter_issues
FOR EACH ROW EXECUTE FUNCTION notify_newsletter_progress();
