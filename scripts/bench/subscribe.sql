-- pgbench: the subscribe handler's transaction, statement for statement.
\set r random(1, 9000000000000000000)
BEGIN;
INSERT INTO subscriptions (id, email, name, subscribed_at, status)
VALUES (gen_random_uuid(), 'pg-' || :client_id || '-' || :r || '@example.com', 'Reader', now(), 'pending_confirmation')
ON CONFLICT DO NOTHING
RETURNING id AS subscriber_id \gset
INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
VALUES (sha256(convert_to(md5(random()::text), 'UTF8')), :subscriber_id, now() + interval '7 days');
INSERT INTO email_outbox
    (id, recipient, subject, html_body, text_body, message_stream, claimed_until, attempts)
VALUES (gen_random_uuid(), 'pg-' || :client_id || '-' || :r || '@example.com', 'Please confirm your subscription',
        repeat('h', 330), repeat('t', 300), 'outbound', now() + make_interval(secs => 60), 1);
COMMIT;
