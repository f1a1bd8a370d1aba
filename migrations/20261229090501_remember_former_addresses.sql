-- Expand: a new table, nothing else. The previous release neither reads nor
-- writes it, so it keeps working against this schema; what it unsubscribes
-- or erases during a rolling update is not remembered here, and counts as
-- before this table (the subscriber's row and the suppression list).
-- former_addresses: the keyed hash (application.hmac_secret) of the mailbox
-- of everyone who unsubscribed or was erased, so that a later sign-up of
-- that mailbox, in any spelling, is confirmed only by pressing the button.
-- Hashes only: no address can be read back from it.
CREATE TABLE former_addresses (
    mailbox_hash bytea PRIMARY KEY,
    left_at timestamptz NOT NULL DEFAULT now()
);
