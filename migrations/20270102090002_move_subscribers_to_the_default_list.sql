-- Expand, step 2 of 2 (lists). Compatible with the previous release.
-- Every subscriber who was here before lists existed joins the default list
-- with their status. A step of its own: it reads the whole table, and does
-- so after step 1 has committed, so that a subscriber the previous release
-- inserts meanwhile either is seen here or joins through step 1's trigger.
-- It takes no lock that sign-ups wait for.
INSERT INTO memberships (list_id, subscriber_id, status, joined_at, confirmed_at, unsubscribed_at)
SELECT l.id, s.id,
       CASE s.status WHEN 'confirmed' THEN 'confirmed'
                     WHEN 'unsubscribed' THEN 'unsubscribed'
                     ELSE 'pending' END,
       s.subscribed_at, s.confirmed_at, s.unsubscribed_at
FROM subscriptions s CROSS JOIN lists l
WHERE l.is_default
ON CONFLICT DO NOTHING;
