-- Step 4 of 4 (expand). Creates the table of confirmation tokens.
-- Compatible with: the release from step 3 (it does not read the table) and
-- the release that stores a token with every pending subscriber.
CREATE TABLE subscription_tokens (
    subscription_token text PRIMARY KEY,
    subscriber_id uuid NOT NULL REFERENCES subscriptions (id)
);
