-- Expand. API tokens for /api/v1 (src/api/tokens.rs). A new table: the
-- previous release neither reads nor writes it, and this one works with it
-- empty.
--
-- * token_sha256: SHA-256 of the token's 32 random bytes. The token itself
--   is shown once, when it is made, and stored nowhere; a request's token is
--   found by its hash.
-- * scopes: what the token may do, `read` always among them (write and
--   publish imply read, and the application stores it so).
-- * last_used_at: refreshed at most once a minute per token, so that a busy
--   client does not turn every read into a write.
-- * name: unique among all tokens, revoked ones included, so that the audit
--   log's mention of a name always means one token.
CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    token_sha256 bytea NOT NULL,
    scopes text[] NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NULL,
    revoked_at timestamptz NULL,
    last_used_at timestamptz NULL,
    CONSTRAINT api_tokens_name_unique UNIQUE (name),
    CONSTRAINT api_tokens_sha256_unique UNIQUE (token_sha256),
    CONSTRAINT api_tokens_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT api_tokens_sha256_length CHECK (octet_length(token_sha256) = 32),
    CONSTRAINT api_tokens_scopes_known
        CHECK (scopes <@ ARRAY['read', 'write', 'publish']::text[] AND 'read' = ANY (scopes))
);
