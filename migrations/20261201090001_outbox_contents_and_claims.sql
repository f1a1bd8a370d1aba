-- Expand. Two additions to the outbox:
-- * email_contents holds a subject and bodies that many recipients share
--   (a newsletter issue): an outbox row refers to it through content_id and
--   carries only what differs per recipient (personalisation, a JSON object
--   of placeholder values filled in at send time). One-off emails such as
--   confirmations keep their content inline, as before, so subject becomes
--   nullable: a row has either its own subject or a content_id.
-- * claim_id identifies the claim a worker holds, so that every update a
--   worker makes can check the message is still its own: a worker whose
--   claim lapsed cannot overwrite a newer claim or turn 'sent' into 'failed'.
-- Compatible with: the previous release, which writes and reads inline
-- contents only and never sets claim_id (rows it claims keep a stale
-- claim_id until this release claims them again), and this one.
CREATE TABLE email_contents (
    id uuid PRIMARY KEY,
    subject text NOT NULL,
    html_body text NOT NULL,
    text_body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE email_outbox ADD COLUMN content_id uuid NULL;
ALTER TABLE email_outbox ADD COLUMN personalisation jsonb NULL;
ALTER TABLE email_outbox ADD COLUMN claim_id uuid NULL;
-- Added NOT VALID: new rows are checked at once, existing ones when the next
-- migration validates them, in a transaction of its own.
ALTER TABLE email_outbox
    ADD CONSTRAINT email_outbox_content_id_fkey
    FOREIGN KEY (content_id) REFERENCES email_contents (id) NOT VALID;
-- A row is either one-off (its own subject) or shared (a content_id).
ALTER TABLE email_outbox
    ADD CONSTRAINT email_outbox_has_content
    CHECK (subject IS NOT NULL OR content_id IS NOT NULL) NOT VALID;
-- The check above keeps what NOT NULL promised for one-off rows. Only shared
-- rows leave subject NULL, and only a later release writes those; the
-- previous release, which cannot read them, never meets one.
-- squawk-ignore ban-drop-not-null
ALTER TABLE email_outbox ALTER COLUMN subject DROP NOT NULL;
