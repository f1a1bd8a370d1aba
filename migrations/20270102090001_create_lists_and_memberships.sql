-- Expand, step 1 of 2 (lists). Compatible with the previous release, which
-- knows one list and writes `subscriptions` only.
--
-- lists: the newsletters a reader can choose. One of them is the default:
-- where a sign-up that names no list goes, and where every subscriber who
-- was here before lists existed moves (step 2).
-- memberships: a subscriber on a list, with a status per list.
--
-- While the previous release still serves, what it writes reaches the
-- memberships through two triggers on `subscriptions`:
-- * a subscriber it inserts (`memberships_written` left false) joins the
--   default list with the status of the row;
-- * a status it changes is followed by the memberships: confirming
--   confirms the pending ones (or, for someone who had left, brings back
--   the default list), unsubscribing leaves every list.
-- This release writes its memberships itself and marks its rows, and makes
-- the same changes explicitly, so the triggers change nothing for it. The
-- contract step that drops them comes once no release without lists runs.
CREATE TABLE lists (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- Shown on the public form; a private list is filled by the admin only.
    public boolean NOT NULL DEFAULT true,
    -- Off: a reader already confirmed on another list joins it at once.
    double_opt_in boolean NOT NULL DEFAULT true,
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    archived_at timestamptz,
    CONSTRAINT lists_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT lists_description_length CHECK (char_length(description) <= 1000),
    -- The default list is where a sign-up naming no list goes: it must
    -- stay open.
    CONSTRAINT lists_default_is_live CHECK (NOT (is_default AND archived_at IS NOT NULL))
);

-- A new, empty table: no writer waits for these.
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX lists_name_key ON lists (lower(name));
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX lists_one_default ON lists (is_default) WHERE is_default;

INSERT INTO lists (name, description, public, double_opt_in, is_default)
VALUES ('Newsletter', '', true, true, true);

CREATE TABLE memberships (
    list_id uuid NOT NULL REFERENCES lists (id),
    subscriber_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    status text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    unsubscribed_at timestamptz,
    PRIMARY KEY (list_id, subscriber_id),
    CONSTRAINT memberships_status CHECK (status IN ('pending', 'confirmed', 'unsubscribed'))
);

-- A subscriber's lists, and the cascade of their erasure.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX memberships_subscriber_id_idx ON memberships (subscriber_id);

-- A constant default: no rewrite of the table, and the previous release's
-- inserts, which do not name the column, leave it false.
ALTER TABLE subscriptions
    ADD COLUMN memberships_written boolean NOT NULL DEFAULT false;

CREATE FUNCTION memberships_join_the_default_list() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memberships (list_id, subscriber_id, status, joined_at, confirmed_at, unsubscribed_at)
    SELECT l.id, s.id,
           CASE s.status WHEN 'confirmed' THEN 'confirmed'
                         WHEN 'unsubscribed' THEN 'unsubscribed'
                         ELSE 'pending' END,
           s.subscribed_at, s.confirmed_at, s.unsubscribed_at
    FROM inserted s CROSS JOIN lists l
    WHERE l.is_default AND NOT s.memberships_written
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriptions_join_the_default_list
    AFTER INSERT ON subscriptions
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_join_the_default_list();

CREATE FUNCTION memberships_follow_the_subscriber() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A subscriber on no list yet (step 2 may not have reached them)
    -- joins the default list with their new status. Against step 2's
    -- insert of the same row this waits for it and then does nothing,
    -- and the updates below, each reading anew, change what it wrote.
    INSERT INTO memberships (list_id, subscriber_id, status, joined_at, confirmed_at, unsubscribed_at)
    SELECT l.id, s.id,
           CASE s.status WHEN 'confirmed' THEN 'confirmed'
                         WHEN 'unsubscribed' THEN 'unsubscribed'
                         ELSE 'pending' END,
           s.subscribed_at, s.confirmed_at, s.unsubscribed_at
    FROM changed s CROSS JOIN lists l
    WHERE l.is_default
      AND NOT EXISTS (SELECT 1 FROM memberships o WHERE o.subscriber_id = s.id)
    ON CONFLICT DO NOTHING;
    -- Only rows whose status changed: any other update (a name, a time)
    -- says nothing about the lists.
    UPDATE memberships m
    SET status = 'unsubscribed', unsubscribed_at = COALESCE(s.unsubscribed_at, now())
    FROM changed s JOIN before b ON b.id = s.id
    WHERE m.subscriber_id = s.id AND s.status = 'unsubscribed' AND b.status <> 'unsubscribed'
      AND m.status <> 'unsubscribed';
    -- Someone who had left every list and confirmed again through the
    -- previous release came back to its one list: the default one.
    UPDATE memberships m
    SET status = 'confirmed', confirmed_at = COALESCE(s.confirmed_at, now()), unsubscribed_at = NULL
    FROM changed s JOIN before b ON b.id = s.id, lists l
    WHERE m.subscriber_id = s.id AND m.list_id = l.id AND l.is_default
      AND s.status = 'confirmed' AND b.status = 'unsubscribed' AND m.status = 'unsubscribed'
      AND NOT EXISTS (SELECT 1 FROM memberships o
                      WHERE o.subscriber_id = s.id AND o.status <> 'unsubscribed');
    UPDATE memberships m
    SET status = 'confirmed', confirmed_at = COALESCE(m.confirmed_at, s.confirmed_at, now())
    FROM changed s JOIN before b ON b.id = s.id
    WHERE m.subscriber_id = s.id AND s.status = 'confirmed' AND b.status <> 'confirmed'
      AND m.status = 'pending';
    RETURN NULL;
END;
$$;

CREATE TRIGGER subscriptions_memberships_follow
    AFTER UPDATE ON subscriptions
    REFERENCING OLD TABLE AS before NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION memberships_follow_the_subscriber();
