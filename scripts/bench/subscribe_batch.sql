-- pgbench: the subscribe handler's transaction for a batch of ten sign-ups,
-- the size the service's writers reach at 64 connections. Postgres's own
-- limit for sign-ups written the way the service writes them under load;
-- its TPS times ten is sign-ups per second. Subscriber ids derive from the
-- row, so that the token insert can name them as the handler does.
\set r random(1, 9000000000000000000)
BEGIN;
INSERT INTO subscriptions (id, email, name, subscribed_at, status)
SELECT md5(:client_id || '-' || :r || '-' || i)::uuid, 'pgb-' || :client_id || '-' || :r || '-' || i || '@example.com', 'Reader', now(), 'pending_confirmation'
FROM generate_series(1, 10) AS i
ORDER BY 2
ON CONFLICT DO NOTHING
RETURNING id;
INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
SELECT sha256(convert_to(md5(random()::text), 'UTF8')), md5(:client_id || '-' || :r || '-' || i)::uuid, now() + interval '7 days'
FROM generate_series(1, 10) AS i;
INSERT INTO email_outbox
    (id, recipient, subject, html_body, text_body, message_stream, claimed_until, attempts)
SELECT gen_random_uuid(), 'pgb-' || :client_id || '-' || :r || '-' || i || '@example.com', 'Please confirm your subscription',
       repeat('h', 330), repeat('t', 300), 'outbound', now() + make_interval(secs => 60), 1
FROM generate_series(1, 10) AS i;
COMMIT;
