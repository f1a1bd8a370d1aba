-- Expand: a new table, nothing else. The previous release neither reads nor
-- writes it, so it keeps working against this schema.
-- inbox_emails: every email the `inbox` provider was given, as its
-- recipient would get it, for /admin/inbox. Only local runs write it:
-- production refuses to start with the inbox among its providers. Rows go
-- when their recipient is erased, and after retention.body_days.
CREATE TABLE inbox_emails (
    id uuid PRIMARY KEY,
    sender text NOT NULL,
    recipient text NOT NULL,
    subject text NOT NULL,
    html_body text NOT NULL,
    text_body text NOT NULL,
    -- The headers beyond From, To and Subject (List-Unsubscribe and its
    -- one-click partner), one `Name: value` per line.
    headers text NOT NULL,
    message_stream text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
-- The list, newest first, and retention, oldest first. The table is new and
-- empty: the index is built in an instant.
CREATE INDEX inbox_emails_received_at_idx ON inbox_emails (received_at);
