//! The SQL behind the outbox. Every state change of a message is one
//! statement, so a worker that dies between two of them leaves the message in
//! a state another worker can pick up.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::SubscriberEmail;

/// An email to be sent once the caller's transaction commits.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub recipient: SubscriberEmail,
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    pub message_stream: String,
}

/// A message a worker holds until its claim lapses.
#[derive(Debug)]
pub struct ClaimedEmail {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub html_body: Option<String>,
    pub text_body: Option<String>,
    pub message_stream: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
}

/// Records `emails` in the outbox as part of the caller's transaction and
/// returns their ids, in order. An email with a claim is held by the caller's
/// process for that long, its first attempt counted, exactly as if it had
/// claimed it with [`claim_due`]: it is about to send it itself.
#[tracing::instrument(name = "Enqueue emails", level = "debug", skip_all, fields(emails = emails.len()))]
pub async fn enqueue(
    connection: &mut PgConnection,
    emails: &[(&OutgoingEmail, Option<Duration>)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = emails.iter().map(|_| Uuid::new_v4()).collect();
    let column = |field: fn(&OutgoingEmail) -> &str| -> Vec<&str> {
        emails.iter().map(|(email, _)| field(email)).collect()
    };
    let claims: Vec<Option<f64>> = emails
        .iter()
        .map(|(_, claim)| claim.map(|c| c.as_secs_f64()))
        .collect();
    sqlx::query!(
        r#"
        INSERT INTO email_outbox
            (id, recipient, subject, html_body, text_body, message_stream, claimed_until, attempts)
        SELECT id, recipient, subject, html_body, text_body, message_stream,
               now() + make_interval(secs => claim), CASE WHEN claim IS NULL THEN 0 ELSE 1 END
        FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[])
            AS new (id, recipient, subject, html_body, text_body, message_stream, claim)
        "#,
        &ids,
        &column(|e| e.recipient.as_ref()) as &[&str],
        &column(|e| &e.subject) as &[&str],
        &column(|e| &e.html_body) as &[&str],
        &column(|e| &e.text_body) as &[&str],
        &column(|e| &e.message_stream) as &[&str],
        &claims as &[Option<f64>]
    )
    .execute(connection)
    .await?;
    Ok(ids)
}

/// Claims up to `limit` due messages for `lease`. `SKIP LOCKED` lets
/// concurrent workers claim disjoint sets without waiting on each other; a
/// message whose claim lapsed (its worker died) is due again. The attempt is
/// counted here, so a message that crashes every worker that touches it still
/// runs out of attempts.
pub async fn claim_due(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
) -> Result<Vec<ClaimedEmail>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedEmail,
        r#"
        UPDATE email_outbox
        SET claimed_until = now() + make_interval(secs => $1),
            attempts = attempts + 1
        WHERE id IN (
            SELECT id FROM email_outbox
            WHERE status = 'pending'
              AND next_attempt_at <= now()
              AND (claimed_until IS NULL OR claimed_until < now())
            ORDER BY next_attempt_at
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, recipient, subject, html_body, text_body, message_stream, attempts
        "#,
        lease.as_secs_f64(),
        limit
    )
    .fetch_all(pool)
    .await
}

/// The API accepted these messages. The bodies are cleared: they hold a
/// confirmation link, and a copy of the database must not confirm anyone.
pub async fn mark_sent(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE email_outbox
        SET status = 'sent', sent_at = now(), claimed_until = NULL,
            html_body = NULL, text_body = NULL, last_error = NULL
        WHERE id = ANY($1)
        "#,
        ids
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The attempt failed in a way that may pass: try again after `delay`.
pub async fn reschedule(
    pool: &PgPool,
    id: Uuid,
    delay: Duration,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE email_outbox
        SET next_attempt_at = now() + make_interval(secs => $2),
            claimed_until = NULL, last_error = $3
        WHERE id = $1
        "#,
        id,
        delay.as_secs_f64(),
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The message cannot be delivered: keep it, with the reason, for an
/// operator. The bodies are cleared for the same reason as in [`mark_sent`].
pub async fn mark_failed(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE email_outbox
        SET status = 'failed', failed_at = now(), claimed_until = NULL,
            html_body = NULL, text_body = NULL, last_error = $2
        WHERE id = $1
        "#,
        id,
        error
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands claimed messages back untouched (on shutdown), without counting the
/// attempt that never happened.
pub async fn release(pool: &PgPool, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE email_outbox
        SET claimed_until = NULL, attempts = attempts - 1
        WHERE id = ANY($1) AND status = 'pending'
        "#,
        ids
    )
    .execute(pool)
    .await?;
    Ok(())
}
