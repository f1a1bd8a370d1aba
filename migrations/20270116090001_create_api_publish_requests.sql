-- Expand. Idempotency keys of issues published with an API token
-- (src/campaigns/ledger.rs), apart from the admin form's (`publish_requests`,
-- keyed by admin): a token has no admin row to key by, and one token's keys
-- must not replay another's. A new table: the previous release neither
-- reads nor writes it, and this one works with it empty.
CREATE TABLE api_publish_requests (
    token_id uuid NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL,
    -- A digest of what was submitted: the same key with other content is refused.
    fingerprint bytea NOT NULL,
    -- Checked at commit, as in publish_requests: the key is taken first.
    issue_id uuid NOT NULL REFERENCES newsletter_issues (id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, idempotency_key)
);
