//! The SQL behind the outbox. Every state change of a message is one
//! statement, so a worker that dies between two of them leaves the message in
//! a state another worker can pick up. Every change a worker makes to a
//! message it claimed names its claim (`claim_id`): once the claim lapsed and
//! another worker claimed the message, the first worker's late updates match
//! no row.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use uuid::Uuid;

use crate::delivery::answer::INVALID_RECIPIENT;
use crate::domain::SubscriberEmail;
use crate::emails::{Email, EmailContent};
use crate::subscribers::suppression;

/// A message a worker holds: the email, and what the outbox knows of it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    /// The claim under which it is held; every update names it.
    pub claim: Uuid,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub email: Email,
}

impl Message {
    /// The message `id`, its email marked as that message's: what lets a
    /// provider that keeps emails keep a retried one once.
    pub fn new(id: Uuid, claim: Uuid, attempts: i32, email: Email) -> Self {
        Self {
            id,
            claim,
            attempts,
            email: Email {
                outbox_id: Some(id),
                ..email
            },
        }
    }
}

/// Placeholder values for one recipient of a shared content, filled in at
/// send time: `{{name}}` in a body becomes the value of `name`.
pub type Personalisation = BTreeMap<String, String>;

/// A row as claimed, before its recipient is parsed and its content put
/// together.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    claim_id: Uuid,
    attempts: i32,
    recipient: String,
    message_stream: String,
    subject: Option<String>,
    html_body: Option<String>,
    text_body: Option<String>,
    personalisation: Option<sqlx::types::Json<Personalisation>>,
    /// Why the recipient must not be mailed, when their address is on the
    /// suppression list.
    suppressed: Option<String>,
}

impl Claimed {
    /// The message, or why it can never be sent.
    fn into_message(self) -> Result<Message, Unsendable> {
        let unsendable = |reason: String| Unsendable {
            id: self.id,
            claim: self.claim_id,
            attempts: self.attempts,
            reason,
        };
        if let Some(why) = &self.suppressed {
            return Err(unsendable(why.clone()));
        }
        // The parser's reason quotes the address: the outbox keeps only that
        // it was not one.
        let to = SubscriberEmail::parse(&self.recipient)
            .map_err(|_| unsendable(INVALID_RECIPIENT.to_owned()))?;
        let (Some(subject), Some(html_body), Some(text_body)) =
            (&self.subject, &self.html_body, &self.text_body)
        else {
            return Err(unsendable("the message has no body".into()));
        };
        let mut content = EmailContent {
            subject: subject.clone(),
            html_body: html_body.clone(),
            text_body: text_body.clone(),
        };
        if let Some(values) = &self.personalisation {
            content = personalise(&content, values);
        }
        Ok(Message::new(
            self.id,
            self.claim_id,
            self.attempts,
            Email {
                to,
                content,
                message_stream: self.message_stream,
                delivery: None,
                outbox_id: None,
                unsubscribe: None,
            },
        ))
    }
}

/// Fills `{{key}}` placeholders with one recipient's values: as they are in
/// the subject and the text body, HTML-escaped in the HTML body. A
/// placeholder without a value is left as it is. One pass over each body:
/// a value that itself looks like a placeholder is not filled in again.
/// [`LITERAL_BRACES`] is how a body says `{{` and means it: it becomes `{{`
/// and is never read as the start of a placeholder.
pub fn personalise(content: &EmailContent, values: &Personalisation) -> EmailContent {
    EmailContent {
        subject: fill(&content.subject, values, false, None),
        html_body: fill(&content.html_body, values, true, None),
        text_body: fill(&content.text_body, values, false, None),
    }
}

/// Markup the service wrote itself for one placeholder: `html` goes into
/// the HTML body and `text` into the text body as they are, unescaped.
/// Never a value a person typed: that goes through [`personalise`].
#[derive(Debug, Clone, Copy)]
pub struct Markup<'a> {
    pub key: &'a str,
    pub html: &'a str,
    pub text: &'a str,
}

/// [`personalise`], with `markup` filled in as well, in the same pass: a
/// second pass would read the braces the first one restored from
/// [`LITERAL_BRACES`] as placeholders.
pub fn personalise_with(
    content: &EmailContent,
    values: &Personalisation,
    markup: Markup<'_>,
) -> EmailContent {
    EmailContent {
        subject: fill(&content.subject, values, false, None),
        html_body: fill(
            &content.html_body,
            values,
            true,
            Some((markup.key, markup.html)),
        ),
        text_body: fill(
            &content.text_body,
            values,
            false,
            Some((markup.key, markup.text)),
        ),
    }
}

/// What a stored body holds where it means two opening braces as they are
/// (text a person wrote), not a placeholder: filling turns it into `{{`.
pub const LITERAL_BRACES: &str = "{{{{}}";

fn fill(
    body: &str,
    values: &Personalisation,
    escape: bool,
    markup: Option<(&str, &str)>,
) -> String {
    // Room for each value once: sized to the body alone, a filled body
    // outgrows it and doubles, and a campaign holds a batch of them.
    let values_len: usize = values.values().map(String::len).sum();
    let mut filled = String::with_capacity(body.len() + values_len);
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        filled.push_str(&rest[..start]);
        if let Some(after) = rest[start..].strip_prefix(LITERAL_BRACES) {
            filled.push_str("{{");
            rest = after;
            continue;
        }
        let after = &rest[start + 2..];
        if let Some((key, markup)) = markup
            && let Some(end) = after
                .strip_prefix(key)
                .and_then(|tail| tail.strip_prefix("}}"))
        {
            filled.push_str(markup);
            rest = end;
            continue;
        }
        let value = after
            .find("}}")
            .and_then(|end| Some((values.get(&after[..end])?, end)));
        match value {
            Some((value, end)) => {
                if escape {
                    let escaped = askama::filters::escape(value, askama::filters::Html)
                        .expect("escaping into a string cannot fail");
                    filled.push_str(&escaped.to_string());
                } else {
                    filled.push_str(value);
                }
                rest = &after[end + 2..];
            }
            None => {
                filled.push_str("{{");
                rest = after;
            }
        }
    }
    filled.push_str(rest);
    filled
}

/// How a new row starts out: free for any worker, or already claimed by the
/// process that inserts it, which will send it itself.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Unclaimed,
    /// Held for this long from the insert, under this claim, its first
    /// attempt counted.
    Claimed {
        claim: Uuid,
        lease: Duration,
    },
}

impl Start {
    fn columns(self) -> (Option<Uuid>, Option<f64>) {
        match self {
            Start::Unclaimed => (None, None),
            Start::Claimed { claim, lease } => (Some(claim), Some(lease.as_secs_f64())),
        }
    }
}

/// What [`insert`] stored for one email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub id: Uuid,
    /// The recipient's address is on the suppression list: the row was
    /// stored as failed, with the reason, and must not be sent.
    pub suppressed: bool,
}

/// Records one-off `emails` (each with its own content) in the caller's
/// transaction; returns what became of each, in order. A claim runs from
/// the statement's own clock, which is never earlier than the moment the
/// caller decided on it. An email to a suppressed address is stored
/// failed, unclaimed, with the suppression as its error: kept, so that the
/// outbox shows what was held back and why.
pub async fn insert(
    connection: &mut PgConnection,
    emails: &[(&Email, Start)],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let ids: Vec<Uuid> = emails.iter().map(|_| Uuid::new_v4()).collect();
    let column = |field: fn(&Email) -> &str| -> Vec<&str> {
        emails.iter().map(|(email, _)| field(email)).collect()
    };
    let (claims, leases): (Vec<Option<Uuid>>, Vec<Option<f64>>) =
        emails.iter().map(|(_, start)| start.columns()).unzip();
    let suppressed: Vec<Option<Uuid>> = sqlx::query_scalar(AssertSqlSafe(INSERT.as_str()))
        .bind(&ids)
        .bind(column(|e| e.to.as_ref()))
        .bind(column(|e| &e.content.subject))
        .bind(column(|e| &e.content.html_body))
        .bind(column(|e| &e.content.text_body))
        .bind(column(|e| &e.message_stream))
        .bind(&claims)
        .bind(&leases)
        .fetch_all(connection)
        .await?;
    Ok(ids
        .into_iter()
        .map(|id| Inserted {
            id,
            suppressed: suppressed.contains(&Some(id)),
        })
        .collect())
}

/// The statement of [`insert`]; returns the ids of the rows stored failed
/// because their recipient is suppressed.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO email_outbox \
             (id, recipient, subject, html_body, text_body, message_stream, \
              claim_id, claimed_until, attempts, status, last_error, failed_at) \
         SELECT new.id, new.recipient, new.subject, new.html_body, new.text_body, \
                new.message_stream, \
                CASE WHEN sup.reason IS NULL THEN new.claim_id END, \
                CASE WHEN sup.reason IS NULL \
                     THEN clock_timestamp() + make_interval(secs => new.lease) END, \
                CASE WHEN new.lease IS NULL OR sup.reason IS NOT NULL THEN 0 ELSE 1 END, \
                CASE WHEN sup.reason IS NULL THEN 'pending' ELSE 'failed' END, \
                {why}, \
                CASE WHEN sup.reason IS NOT NULL THEN now() END \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::uuid[], $8::float8[]) \
             AS new (id, recipient, subject, html_body, text_body, message_stream, claim_id, lease) \
         {listed} \
         RETURNING CASE WHEN status = 'failed' THEN id END",
        listed = suppression::entry_join_sql("new.recipient"),
        why = suppression::skipped_because_sql("sup.reason"),
    )
});

/// Queues one email to many recipients in a single statement: `content`
/// stored once, and one row per recipient of `recipients`, the caller's
/// own SQL (never input) yielding `(n bigint, recipient text,
/// personalisation jsonb)`, `n` counting from 1. A million rows due at once
/// would sit ahead of every confirmation a reader is waiting for, so row
/// `n` is due `(n - 1) / per_second` seconds from now: the stream's
/// throttle would hold them back that long anyway, and the transactional
/// emails queued meanwhile are claimed between them. Returns how many rows
/// were queued.
pub async fn insert_spread(
    connection: &mut PgConnection,
    content: &EmailContent,
    message_stream: &str,
    recipients: &str,
    per_second: u32,
) -> Result<u64, sqlx::Error> {
    let content_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO email_contents (id, subject, html_body, text_body) VALUES ($1, $2, $3, $4)",
    )
    .bind(content_id)
    .bind(&content.subject)
    .bind(&content.html_body)
    .bind(&content.text_body)
    .execute(&mut *connection)
    .await?;
    let queued = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO email_outbox \
             (id, recipient, content_id, personalisation, message_stream, next_attempt_at) \
         SELECT gen_random_uuid(), r.recipient, $1, r.personalisation, $2, \
                now() + make_interval(secs => (r.n - 1)::float8 / $3) \
         FROM ({recipients}) AS r (n, recipient, personalisation)"
    )))
    .bind(content_id)
    .bind(message_stream)
    .bind(f64::from(per_second.max(1)))
    .execute(&mut *connection)
    .await?
    .rows_affected();
    // Workers in every process poll the outbox; this wakes them at commit.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::CHANNEL)
        .execute(connection)
        .await?;
    Ok(queued)
}

/// What [`claim_due`] found: messages to send, and rows that can never be
/// sent.
pub struct Claim {
    pub messages: Vec<Message>,
    pub unsendable: Vec<Unsendable>,
}

/// A claimed row that can never be sent as it is, and why.
pub struct Unsendable {
    pub id: Uuid,
    pub claim: Uuid,
    pub attempts: i32,
    pub reason: String,
}

/// Claims up to `limit` due messages for `lease`. `SKIP LOCKED` lets
/// concurrent workers claim disjoint sets without waiting on each other; a
/// message whose claim lapsed (its worker died) is due again. The attempt is
/// counted here, so a message that crashes every worker that touches it still
/// runs out of attempts. A message whose recipient was suppressed after it
/// was queued comes back unsendable, the suppression its reason: it is
/// never handed to the email API.
pub async fn claim_due(
    connection: &mut PgConnection,
    lease: Duration,
    limit: i64,
) -> Result<Claim, sqlx::Error> {
    let rows: Vec<Claimed> = sqlx::query_as(AssertSqlSafe(format!(
        r#"
        WITH claimed AS (
            UPDATE email_outbox
            SET claimed_until = now() + make_interval(secs => $1),
                claim_id = gen_random_uuid(),
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
            RETURNING id, claim_id, attempts, recipient, message_stream, subject,
                      html_body, text_body, content_id, personalisation
        )
        SELECT claimed.id, claimed.claim_id, claimed.attempts,
               claimed.recipient, claimed.message_stream,
               COALESCE(content.subject, claimed.subject) AS subject,
               COALESCE(content.html_body, claimed.html_body) AS html_body,
               COALESCE(content.text_body, claimed.text_body) AS text_body,
               claimed.personalisation,
               {why} AS suppressed
        FROM claimed
        LEFT JOIN email_contents content ON content.id = claimed.content_id
        {listed}
        "#,
        listed = suppression::entry_join_sql("claimed.recipient"),
        why = suppression::skipped_because_sql("sup.reason"),
    )))
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(connection)
    .await?;
    let mut claim = Claim {
        messages: Vec::with_capacity(rows.len()),
        unsendable: Vec::new(),
    };
    for row in rows {
        match row.into_message() {
            Ok(message) => claim.messages.push(message),
            Err(unsendable) => claim.unsendable.push(unsendable),
        }
    }
    Ok(claim)
}

/// The API accepted these messages. Inline bodies are cleared: a
/// confirmation's hold its link, and a copy of the database must not confirm
/// anyone. Each message records the provider that took it. Returns, for
/// each message still held under these claims, the seconds from its commit
/// to now.
pub async fn mark_sent(
    connection: &mut PgConnection,
    held: Vec<((Uuid, Uuid), &'static str)>,
) -> Result<Vec<f64>, sqlx::Error> {
    let (ids, (claims, providers)): (Vec<Uuid>, (Vec<Uuid>, Vec<&str>)) = held
        .into_iter()
        .map(|((id, claim), provider)| (id, (claim, provider)))
        .unzip();
    // `enqueued_at` is the insert's clock time, a moment before the commit.
    sqlx::query_scalar(
        r#"
        UPDATE email_outbox
        SET status = 'sent', sent_at = now(), claimed_until = NULL,
            html_body = NULL, text_body = NULL, last_error = NULL,
            provider = held.provider
        FROM UNNEST($1::uuid[], $2::uuid[], $3::text[]) AS held (id, claim_id, provider)
        WHERE email_outbox.id = held.id AND email_outbox.claim_id = held.claim_id
          AND email_outbox.status = 'pending'
        RETURNING EXTRACT(EPOCH FROM clock_timestamp() - email_outbox.enqueued_at)::float8
        "#,
    )
    .bind(&ids)
    .bind(&claims)
    .bind(&providers)
    .fetch_all(connection)
    .await
}

/// Whether the attempt the claim counted stands: a throttled message gives
/// it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Counted,
    GivenBack,
}

/// The attempt failed in a way that may pass, or the API asked us to slow
/// down: try again after `delay`. Returns whether the message was still
/// held under `claim`. Once done it matches nothing: written again (its
/// first answer lost on the way back), it cannot give an attempt back
/// twice.
pub async fn reschedule(
    connection: &mut PgConnection,
    (id, claim): (Uuid, Uuid),
    delay: Duration,
    error: String,
    attempt: Attempt,
) -> Result<u64, sqlx::Error> {
    let given_back = i32::from(attempt == Attempt::GivenBack);
    let done = sqlx::query!(
        r#"
        UPDATE email_outbox
        SET next_attempt_at = now() + make_interval(secs => $3),
            claimed_until = NULL, last_error = $4, attempts = attempts - $5
        WHERE id = $1 AND claim_id = $2 AND status = 'pending' AND claimed_until IS NOT NULL
        "#,
        id,
        claim,
        delay.as_secs_f64(),
        error,
        given_back
    )
    .execute(connection)
    .await?;
    Ok(done.rows_affected())
}

/// The message cannot be delivered as things stand: keep it, whole, with
/// the reason, so that an operator can send it again once the cause is
/// fixed ([`requeue_failed`]). Returns whether it was still held under
/// `claim`.
pub async fn mark_failed(
    connection: &mut PgConnection,
    (id, claim): (Uuid, Uuid),
    error: String,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        UPDATE email_outbox
        SET status = 'failed', failed_at = now(), claimed_until = NULL, last_error = $3
        WHERE id = $1 AND claim_id = $2 AND status = 'pending'
        "#,
        id,
        claim,
        error
    )
    .execute(connection)
    .await?;
    Ok(done.rows_affected())
}

/// Hands claimed messages back untouched (on shutdown), without counting the
/// attempt that never happened.
pub async fn release(
    connection: &mut PgConnection,
    held: Vec<(Uuid, Uuid)>,
) -> Result<u64, sqlx::Error> {
    let (ids, claims): (Vec<Uuid>, Vec<Uuid>) = held.into_iter().unzip();
    let done = sqlx::query!(
        r#"
        UPDATE email_outbox
        SET claimed_until = NULL, attempts = attempts - 1
        FROM UNNEST($1::uuid[], $2::uuid[]) AS held (id, claim_id)
        WHERE email_outbox.id = held.id AND email_outbox.claim_id = held.claim_id
          AND email_outbox.status = 'pending'
        "#,
        &ids,
        &claims
    )
    .execute(connection)
    .await?;
    Ok(done.rows_affected())
}

/// What [`requeue_failed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    /// Failed messages queued again, with a fresh count of attempts.
    pub requeued: u64,
    /// Failed messages left as they are: their bodies were cleared by an
    /// earlier release, so there is nothing to send.
    pub without_body: u64,
}

/// Queues every failed message that can still be sent again, as if new, and
/// counts the ones that cannot, in one statement.
pub async fn requeue_failed(pool: &PgPool) -> Result<Requeued, sqlx::Error> {
    let counts = sqlx::query!(
        r#"
        WITH requeued AS (
            UPDATE email_outbox
            SET status = 'pending', attempts = 0, next_attempt_at = now(),
                claimed_until = NULL, claim_id = NULL, failed_at = NULL
            WHERE status = 'failed'
              AND (content_id IS NOT NULL OR (html_body IS NOT NULL AND text_body IS NOT NULL))
            RETURNING id
        )
        SELECT
            (SELECT count(*) FROM requeued) AS "requeued!",
            (SELECT count(*) FROM email_outbox
             WHERE status = 'failed' AND id NOT IN (SELECT id FROM requeued)) AS "without_body!"
        "#
    )
    .fetch_one(pool)
    .await?;
    Ok(Requeued {
        requeued: counts.requeued as u64,
        without_body: counts.without_body as u64,
    })
}

/// An email in the outbox addressed to the subscriber, without its bodies:
/// until it is sent they hold a live confirmation link.
#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct OutboxEmail {
    pub id: Uuid,
    pub subject: Option<String>,
    pub message_stream: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// The outbox has no index on the recipient: this reads it whole. It holds
/// one-off emails (confirmations, notices) until retention removes them,
/// and is read so for one subscriber at an admin's request, rarely.
pub async fn outbox_emails(
    conn: &mut PgConnection,
    address: &str,
) -> Result<Vec<OutboxEmail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, COALESCE(o.subject, c.subject) AS subject, o.message_stream, o.status, \
                o.attempts, o.last_error, o.enqueued_at, o.sent_at, o.failed_at \
         FROM email_outbox o LEFT JOIN email_contents c ON c.id = o.content_id \
         WHERE lower(o.recipient) = lower($1) \
         ORDER BY o.enqueued_at",
    )
    .bind(address)
    .fetch_all(conn)
    .await
}

/// Emails waiting to be sent and emails given up on, as the dashboard
/// shows them.
pub struct QueueCounts {
    pub queued: i64,
    pub failed: i64,
}

/// The failed count reads every failed row; the queued one uses the index
/// of due messages.
pub async fn queue_counts(connection: &mut PgConnection) -> Result<QueueCounts, sqlx::Error> {
    let (queued, failed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM email_outbox WHERE status = 'pending'), \
                (SELECT count(*) FROM email_outbox WHERE status = 'failed')",
    )
    .fetch_one(connection)
    .await?;
    Ok(QueueCounts { queued, failed })
}

/// How deep the outbox is now, for the metrics' gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth {
    /// Pending and claimable: waiting for a worker (a retry among them).
    pub pending: i64,
    /// Pending and claimed: a worker is sending them now.
    pub claimed: i64,
    /// How long the oldest pending message has waited; 0 when none waits.
    pub oldest_pending_seconds: f64,
}

/// The outbox's depth, in one statement over the pending rows only: sent
/// and failed ones stay for weeks (see retention) and counting them would
/// grow with the table.
pub async fn depth(connection: &mut PgConnection) -> Result<Depth, sqlx::Error> {
    let (pending, claimed, oldest_pending_seconds): (i64, i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE claimed_until IS NULL OR claimed_until < now()), \
                    count(*) FILTER (WHERE claimed_until >= now()), \
                    COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(enqueued_at)), 0)::float8 \
             FROM email_outbox WHERE status = 'pending'",
    )
    .fetch_one(connection)
    .await?;
    Ok(Depth {
        pending,
        claimed,
        oldest_pending_seconds,
    })
}

/// Deletes every email addressed to `address`, sent or not, for its
/// owner's erasure. No index on the recipient: the outbox is read whole,
/// which for a table that retention keeps short is cheaper than an index
/// every enqueue pays.
pub async fn erase_to(connection: &mut PgConnection, address: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM email_outbox WHERE lower(recipient) = lower($1)")
        .bind(address)
        .execute(connection)
        .await?;
    Ok(())
}

// What the retention job forgets of the outbox, one batch per call (the
// job, in `crate::retention`, does the sweeping): `scanned` reads the next
// `limit` keys of an index after the cursor without locking anything,
// `picked` locks those still to be acted on and skips any a worker holds,
// and the last step acts. A keyed batch answers as its statement does: rows
// acted on, keys read, and the last key read (NULL when it read none).

/// Sent or failed outbox rows that finished before `cutoff`, in the order
/// they finished (the partial index `email_outbox_finished_idx`).
pub async fn delete_finished(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<(i64, i64, Option<DateTime<Utc>>, Option<Uuid>), sqlx::Error> {
    sqlx::query_as(
        "WITH scanned AS ( \
             SELECT id, COALESCE(sent_at, failed_at) AS finished_at FROM email_outbox \
             WHERE status <> 'pending' AND COALESCE(sent_at, failed_at) < $2 \
               AND (COALESCE(sent_at, failed_at), id) > ($3, $4) \
             ORDER BY COALESCE(sent_at, failed_at), id \
             LIMIT $1 \
         ), picked AS ( \
             SELECT id FROM email_outbox \
             WHERE id IN (SELECT id FROM scanned) AND status <> 'pending' \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM email_outbox WHERE id IN (SELECT id FROM picked) RETURNING 1 \
         ), last AS ( \
             SELECT finished_at, id FROM scanned ORDER BY finished_at DESC, id DESC LIMIT 1 \
         ) \
         SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM scanned), \
                (SELECT finished_at FROM last), (SELECT id FROM last)",
    )
    .bind(limit)
    .bind(cutoff)
    .bind(at)
    .bind(key)
    .fetch_one(conn)
    .await
}

/// Clears what a sent or failed row still holds of its email: inline
/// bodies (a failed one keeps them for `outbox requeue-failed` until now),
/// personalisation, and its reference to a shared content, whose subject it
/// keeps in place of the reference (a row has a subject or a content). Once
/// cleared, a failed row can no longer be queued again.
pub async fn clear_finished_bodies(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<(i64, i64, Option<DateTime<Utc>>, Option<Uuid>), sqlx::Error> {
    sqlx::query_as(
        "WITH scanned AS ( \
             SELECT id, COALESCE(sent_at, failed_at) AS finished_at, \
                    html_body IS NOT NULL OR text_body IS NOT NULL \
                        OR personalisation IS NOT NULL OR content_id IS NOT NULL AS has_body \
             FROM email_outbox \
             WHERE status <> 'pending' AND COALESCE(sent_at, failed_at) < $2 \
               AND (COALESCE(sent_at, failed_at), id) > ($3, $4) \
             ORDER BY COALESCE(sent_at, failed_at), id \
             LIMIT $1 \
         ), picked AS ( \
             SELECT id FROM email_outbox \
             WHERE id IN (SELECT id FROM scanned WHERE has_body) AND status <> 'pending' \
             FOR UPDATE SKIP LOCKED \
         ), cleared AS ( \
             UPDATE email_outbox o \
             SET html_body = NULL, text_body = NULL, personalisation = NULL, \
                 content_id = NULL, \
                 subject = COALESCE(o.subject, \
                     (SELECT c.subject FROM email_contents c WHERE c.id = o.content_id)) \
             WHERE o.id IN (SELECT id FROM picked) \
             RETURNING 1 \
         ), last AS ( \
             SELECT finished_at, id FROM scanned ORDER BY finished_at DESC, id DESC LIMIT 1 \
         ) \
         SELECT (SELECT count(*) FROM cleared), (SELECT count(*) FROM scanned), \
                (SELECT finished_at FROM last), (SELECT id FROM last)",
    )
    .bind(limit)
    .bind(cutoff)
    .bind(at)
    .bind(key)
    .fetch_one(conn)
    .await
}

/// Shared contents written before `cutoff` that no outbox row refers to.
/// Pending rows keep theirs; finished ones let go in [`clear_finished_bodies`].
/// A content is written with its rows, so none gains a reference later.
/// Few rows (one per shared send): no cursor, each batch takes the oldest.
pub async fn delete_unused_contents(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let (deleted,): (i64,) = sqlx::query_as(
        "WITH picked AS ( \
             SELECT id FROM email_contents c \
             WHERE created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM email_outbox o WHERE o.content_id = c.id) \
             ORDER BY created_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM email_contents WHERE id IN (SELECT id FROM picked) RETURNING 1 \
         ) \
         SELECT count(*) FROM deleted",
    )
    .bind(limit)
    .bind(cutoff)
    .fetch_one(conn)
    .await?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> EmailContent {
        EmailContent {
            subject: "Issue 7 for {{name}}".into(),
            html_body: "<p>Dear {{name}}, <a href=\"{{unsubscribe}}\">leave</a></p>".into(),
            text_body: "Dear {{name}}, leave: {{unsubscribe}} {{unknown}}".into(),
        }
    }

    #[test]
    fn literal_braces_come_out_as_typed_and_are_never_filled() {
        let content = EmailContent {
            subject: format!("{LITERAL_BRACES}name}}}} for {{{{name}}}}"),
            html_body: format!("<p>{LITERAL_BRACES}{LITERAL_BRACES}</p>"),
            text_body: format!("{LITERAL_BRACES}{{{{name}}}}"),
        };
        let values = Personalisation::from([("name".to_owned(), "Ada".to_owned())]);

        let filled = personalise(&content, &values);

        assert_eq!(filled.subject, "{{name}} for Ada");
        assert_eq!(filled.html_body, "<p>{{{{</p>");
        assert_eq!(filled.text_body, "{{Ada");
    }

    #[test]
    fn placeholders_are_filled_per_recipient_and_escaped_in_html_only() {
        let values = Personalisation::from([
            ("name".to_owned(), "Tom & <Jerry>".to_owned()),
            (
                "unsubscribe".to_owned(),
                "https://x.test/u?a=1&b=2".to_owned(),
            ),
        ]);

        let filled = personalise(&content(), &values);

        assert_eq!(filled.subject, "Issue 7 for Tom & <Jerry>");
        assert_eq!(
            filled.text_body,
            "Dear Tom & <Jerry>, leave: https://x.test/u?a=1&b=2 {{unknown}}"
        );
        assert!(
            filled.html_body.contains("Dear Tom &#38; &#60;Jerry&#62;,"),
            "{}",
            filled.html_body
        );
        assert!(!filled.html_body.contains("<Jerry>"));
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_filled_in_again() {
        let values = Personalisation::from([
            ("name".to_owned(), "{{unsubscribe}}".to_owned()),
            ("unsubscribe".to_owned(), "https://x.test/u".to_owned()),
        ]);

        let filled = personalise(&content(), &values);

        assert!(
            filled
                .text_body
                .starts_with("Dear {{unsubscribe}}, leave: https://x.test/u"),
            "{}",
            filled.text_body
        );
    }
}
