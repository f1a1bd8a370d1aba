-- pgbench: the subscribe handler's transaction, statement for statement, for
-- one sign-up (the service writes the sign-ups that queue up on a worker in
-- one such transaction, one array element each).
\set r random(1, 9000000000000000000)
BEGIN;
INSERT INTO subscriptions (id, email, name, subscribed_at, status)
SELECT id, email, name, now(), 'pending_confirmation'
FROM UNNEST(ARRAY[gen_random_uuid()], ARRAY['pg-' || :client_id || '-' || :r || '@example.com'], ARRAY['Reader'])
    AS new (id, email, name)
ORDER BY lower(email)
ON CONFLICT DO NOTHING
RETURNING id AS subscriber_id \gset
INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
SELECT token_hash, subscriber_id, now() + interval '7 days'
FROM UNNEST(ARRAY[sha256(convert_to(md5(random()::text), 'UTF8'))], ARRAY[:subscriber_id]::uuid[])
    AS new (token_hash, subscriber_id);
INSERT INTO email_outbox
    (id, recipient, subject, html_body, text_body, message_stream, claimed_until, attempts)
SELECT id, recipient, subject, html_body, text_body, message_stream,
       now() + make_interval(secs => claim), CASE WHEN claim IS NULL THEN 0 ELSE 1 END
FROM UNNEST(ARRAY[gen_random_uuid()], ARRAY['pg-' || :client_id || '-' || :r || '@example.com'],
            ARRAY['Please confirm your subscription'], ARRAY[repeat('h', 330)], ARRAY[repeat('t', 300)],
            ARRAY['outbound'], ARRAY[60::float8])
    AS new (id, recipient, subject, html_body, text_body, message_stream, claim);
COMMIT;
