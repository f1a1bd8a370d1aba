-- Expand. Compatible with the previous release, which neither reads nor
-- writes these columns, and with this one. One table a migration: each
-- takes its table's lock alone, and a wait for one (behind a long read)
-- holds no other table up.
--
-- confirmation_tokens.list_ids: the lists a confirmation link was issued
-- for; the link confirms those only, so a list someone else added later
-- under the same address waits for its own link. NULL on the previous
-- release's tokens, which confirm every pending list, as they always did.
-- The function replaced below takes no table's lock.
ALTER TABLE confirmation_tokens ADD COLUMN list_ids uuid[];

-- The trigger that keeps a release without lists reflected in the
-- memberships confirms every pending list of a subscriber whose status
-- turns to confirmed. This release confirms the lists of the link itself,
-- and says so for the transaction (`newsletter.lists_confirmed_by_app`);
-- the trigger then leaves the lists alone. Every other case, the release
-- without lists first, is as before.
CREATE OR REPLACE FUNCTION memberships_follow_the_subscriber() RETURNS trigger
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
    IF current_setting('newsletter.lists_confirmed_by_app', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN NULL;
    END IF;
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
