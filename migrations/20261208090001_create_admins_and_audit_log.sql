-- Expand. The newsroom's own tables; nothing the public side reads changes.
-- * admins: who may sign in. The password is an Argon2id hash in PHC format
--   (the parameters travel with the hash, so they can be raised later).
--   Usernames are unique case-insensitively. A TOTP secret is present once
--   the admin has enrolled a second factor; totp_last_step is the last time
--   step a code was accepted for, so that one code cannot be used twice.
--   session_generation goes up with every password change: a session made
--   under an older generation is no longer honoured, on any replica.
-- * admin_recovery_codes: the SHA-256 of each one-time recovery code.
-- * audit_log: who did what and when. Rows outlive the admin they name
--   (admin_id is set to NULL, the username stays).
CREATE TABLE admins (
    id uuid PRIMARY KEY,
    username text NOT NULL,
    email text NULL,
    password_hash text NOT NULL,
    totp_secret bytea NULL,
    totp_last_step bigint NULL,
    session_generation bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX admins_username_key ON admins (lower(username));

CREATE TABLE admin_recovery_codes (
    admin_id uuid NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at timestamptz NULL,
    PRIMARY KEY (admin_id, code_hash)
);

CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    admin_id uuid NULL REFERENCES admins (id) ON DELETE SET NULL,
    username text NULL,
    action text NOT NULL,
    detail text NOT NULL DEFAULT '',
    client_ip inet NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);
