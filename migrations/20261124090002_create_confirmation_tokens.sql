-- Expand. Confirmation tokens stored as SHA-256 hashes, with an expiry and the
-- time of first use. Replaces subscription_tokens, which holds tokens in plain
-- text and is dropped by a later contract step.
-- Compatible with: the previous release, which keeps writing and reading
-- subscription_tokens. The trigger below gives each token it writes a hashed
-- twin here, so the new release can confirm links the previous one sent; the
-- new release writes both tables until the previous one is gone.
CREATE TABLE confirmation_tokens (
    token_hash bytea PRIMARY KEY,
    subscriber_id uuid NOT NULL REFERENCES subscriptions (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz NULL
);
CREATE INDEX confirmation_tokens_subscriber_id_idx ON confirmation_tokens (subscriber_id);

-- Tokens issued so far get the default lifetime from now on.
INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
SELECT sha256(convert_to(subscription_token, 'UTF8')), subscriber_id, now() + interval '7 days'
FROM subscription_tokens
ON CONFLICT (token_hash) DO NOTHING;

CREATE FUNCTION mirror_subscription_token() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
    VALUES (sha256(convert_to(NEW.subscription_token, 'UTF8')), NEW.subscriber_id, now() + interval '7 days')
    ON CONFLICT (token_hash) DO NOTHING;
    RETURN NEW;
END;
$$;

CREATE TRIGGER mirror_subscription_token
AFTER INSERT ON subscription_tokens
FOR EACH ROW EXECUTE FUNCTION mirror_subscription_token();
