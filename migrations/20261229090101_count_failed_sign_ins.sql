-- Expand: a new table, nothing else. The previous release neither reads nor
-- writes it (it keeps writing one audit row per failed sign-in, which stays
-- valid), so it keeps working against this schema.
-- sign_in_failures: failed sign-ins counted per fixed window and account,
-- upserted, so that a flood of guesses adds to a counter instead of a row
-- each. `account` is the admin's username, or '' for every username that
-- names no account (what was typed is not kept: it may be anyone's
-- address). Admin data only: no subscriber is ever named here.
CREATE TABLE sign_in_failures (
    window_start timestamptz NOT NULL,
    account text NOT NULL,
    failures bigint NOT NULL,
    last_at timestamptz NOT NULL,
    last_client_ip inet NULL,
    PRIMARY KEY (window_start, account)
);
