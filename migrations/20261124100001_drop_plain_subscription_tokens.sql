-- Contract. Removes the plain-text tokens and the constraint that only the
-- first release's upsert needed.
-- Requires: no running instance reads or writes subscription_tokens or relies
-- on ON CONFLICT (email); true since the release that stopped writing plain
-- tokens. Every token already has its hashed twin in confirmation_tokens
-- (backfill and trigger), so every link that was sent keeps working.
DROP TRIGGER mirror_subscription_token ON subscription_tokens;
DROP FUNCTION mirror_subscription_token();
DROP TABLE subscription_tokens;
-- subscriptions_email_lower_key enforces a stricter uniqueness already.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_email_key;
