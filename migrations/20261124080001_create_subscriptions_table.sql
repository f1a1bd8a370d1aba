-- Step 1 of 4 (expand). Creates the subscriptions table.
-- Compatible with: the first release, which writes id, email, name and
-- subscribed_at only.
CREATE TABLE subscriptions (
    id uuid PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text NOT NULL,
    subscribed_at timestamptz NOT NULL
);
