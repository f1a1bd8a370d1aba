//! The local inbox: a provider that sends nothing and keeps every email it
//! is given in Postgres, as its recipient would get it, for the newsroom's
//! `/admin/inbox` pages. In a local run the confirmation link is then one
//! click away in a browser, not a search through a terminal. Production
//! refuses to start with it (see `configuration::production`): its emails
//! reach nobody.
//!
//! This module owns `inbox_emails` and holds all of its SQL: the
//! provider's insert, the pages' reads, the erasure of one recipient's
//! emails and retention's pruning. Unlike the other providers it knows the
//! database, since the database is where it delivers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::configuration::{EmailBackend, EmailClientSettings};
use crate::db::Db;
use crate::delivery::answer::{Answer, Refusal};
use crate::delivery::postmark::{MAX_BATCH, Sender};
use crate::delivery::provider::{Failure, Provider};
use crate::emails::Email;

/// Its name in the configuration, the metrics and the ledger.
pub const NAME: &str = "inbox";

/// Keeps each email in `inbox_emails` under an id of its own, which is
/// also the message id the engine records.
#[derive(Clone)]
pub struct InboxProvider {
    db: Db,
    sender: Sender,
    longest_call: Duration,
}

impl std::fmt::Debug for InboxProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxProvider")
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl InboxProvider {
    /// Writes through `db`, whose acquire timeout and work timeout add up
    /// to `longest_call`: a batch's claim must outlast the wait for a
    /// connection and the insert together.
    pub fn new(db: Db, sender: Sender, longest_call: Duration) -> Self {
        Self {
            db,
            sender,
            longest_call,
        }
    }
}

impl Provider for InboxProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// As many as Postmark takes, so that a batch made for one provider
    /// fits the others.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn longest_call(&self) -> Duration {
        self.longest_call
    }

    fn send<'a>(&'a self, emails: &'a [&'a Email]) -> BoxFuture<'a, Result<Vec<Answer>, Failure>> {
        let span = tracing::info_span!("Keep emails in the local inbox", size = emails.len());
        Box::pin(
            async move {
                let batch = Batch::of(self.sender.as_ref(), emails);
                let ids = batch.ids.clone();
                match self
                    .db
                    .bounded(move |conn| Box::pin(batch.insert(conn)))
                    .await
                {
                    Ok(()) => Ok(ids
                        .into_iter()
                        .map(|id| Answer::Sent {
                            message_id: Some(id.to_string()),
                            provider: NAME,
                        })
                        .collect()),
                    Err(e) => {
                        tracing::warn!(
                            error = %crate::telemetry::error_chain_line(&e),
                            "The local inbox could not keep a batch"
                        );
                        Err(Failure {
                            answer: Answer::Passing {
                                error: Refusal::new("the local inbox could not store the email"),
                                retry_after: None,
                            },
                            down: e.is_unavailable(),
                        })
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// A batch as columns, inserted in one statement.
struct Batch {
    ids: Vec<Uuid>,
    sender: String,
    recipients: Vec<String>,
    subjects: Vec<String>,
    html_bodies: Vec<String>,
    text_bodies: Vec<String>,
    headers: Vec<String>,
    streams: Vec<String>,
}

impl Batch {
    fn of(sender: &str, emails: &[&Email]) -> Self {
        let mut batch = Self {
            ids: Vec::with_capacity(emails.len()),
            sender: sender.to_owned(),
            recipients: Vec::with_capacity(emails.len()),
            subjects: Vec::with_capacity(emails.len()),
            html_bodies: Vec::with_capacity(emails.len()),
            text_bodies: Vec::with_capacity(emails.len()),
            headers: Vec::with_capacity(emails.len()),
            streams: Vec::with_capacity(emails.len()),
        };
        for email in emails {
            batch.ids.push(Uuid::new_v4());
            batch.recipients.push(email.to.as_ref().to_owned());
            batch.subjects.push(email.content.subject.clone());
            batch.html_bodies.push(email.content.html_body.clone());
            batch.text_bodies.push(email.content.text_body.clone());
            batch.headers.push(header_lines(email));
            batch.streams.push(email.message_stream.clone());
        }
        batch
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO inbox_emails \
                 (id, sender, recipient, subject, html_body, text_body, headers, message_stream) \
             SELECT e.id, $2, e.recipient, e.subject, e.html_body, e.text_body, e.headers, \
                    e.message_stream \
             FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::text[], $8::text[]) \
                  AS e(id, recipient, subject, html_body, text_body, headers, message_stream)",
        )
        .bind(&self.ids)
        .bind(&self.sender)
        .bind(&self.recipients)
        .bind(&self.subjects)
        .bind(&self.html_bodies)
        .bind(&self.text_bodies)
        .bind(&self.headers)
        .bind(&self.streams)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The headers an email goes out with beyond From, To and Subject, one
/// `Name: value` per line: what a mail client's "show original" lists.
/// Every value is built from parsed parts and holds no line break (see
/// [`crate::emails::UnsubscribeLinks`]), so a line is a header.
fn header_lines(email: &Email) -> String {
    email
        .unsubscribe
        .iter()
        .flat_map(|links| links.headers())
        .map(|(name, value)| format!("{name}: {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether emails go to the local inbox, for the pages that show it and
/// for the navigation that links to them.
#[derive(Debug, Clone)]
pub struct LocalInbox {
    /// Why the pages are not there, when the inbox is not configured.
    off: Option<String>,
}

impl LocalInbox {
    /// On when either stream lists the `inbox` provider.
    pub fn new(settings: &EmailClientSettings) -> Self {
        let on = settings.providers.contains(&EmailBackend::Inbox)
            || settings.broadcast_providers.contains(&EmailBackend::Inbox);
        let off = (!on).then(|| {
            let providers: Vec<&str> = settings.providers.iter().map(|p| p.as_str()).collect();
            format!(
                "The local inbox is off: emails go through {}.",
                providers.join(", then ")
            )
        });
        Self { off }
    }

    pub fn is_on(&self) -> bool {
        self.off.is_none()
    }

    /// Why there is no inbox to show, if there is none.
    pub fn off_reason(&self) -> Option<&str> {
        self.off.as_deref()
    }
}

/// One email of the list.
#[derive(Debug, sqlx::FromRow)]
pub struct Summary {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub message_stream: String,
    pub received_at: DateTime<Utc>,
}

/// One email, whole.
#[derive(Debug, sqlx::FromRow)]
pub struct InboxEmail {
    pub id: Uuid,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    headers: String,
    pub message_stream: String,
    pub received_at: DateTime<Utc>,
}

impl InboxEmail {
    /// The headers beyond From, To and Subject, in order, as (name, value).
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .lines()
            .filter_map(|line| line.split_once(": "))
            .collect()
    }
}

/// The newest `limit` emails, newest first.
pub async fn newest(conn: &mut PgConnection, limit: i64) -> Result<Vec<Summary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, recipient, subject, message_stream, received_at FROM inbox_emails \
         ORDER BY received_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM inbox_emails")
        .fetch_one(conn)
        .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<InboxEmail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, sender, recipient, subject, html_body, text_body, headers, message_stream, \
                received_at \
         FROM inbox_emails WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Deletes every email to `address`, in any letter case, as sign-up
/// compares addresses: part of erasing its subscriber. No index on the
/// recipient: only local runs fill the table, and retention keeps it short.
pub async fn erase_to(conn: &mut PgConnection, address: &str) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM inbox_emails WHERE lower(recipient) = lower($1)")
        .bind(address)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected())
}

/// Deletes up to `limit` of the emails kept before `cutoff`, oldest first,
/// skipping any that a live transaction holds; returns how many went.
pub async fn prune(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH picked AS ( \
             SELECT id FROM inbox_emails WHERE received_at < $2 \
             ORDER BY received_at LIMIT $1 \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM inbox_emails WHERE id IN (SELECT id FROM picked) RETURNING 1 \
         ) \
         SELECT count(*) FROM deleted",
    )
    .bind(limit)
    .bind(cutoff)
    .fetch_one(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Newsletter, SubscriberEmail};
    use crate::emails::{EmailContent, UnsubscribeLinks};

    fn email(unsubscribe: Option<UnsubscribeLinks>) -> Email {
        Email {
            to: SubscriberEmail::parse("ursula@example.com").unwrap(),
            content: EmailContent {
                subject: "Subject".into(),
                html_body: "<p>Hi</p>".into(),
                text_body: "Hi".into(),
            },
            message_stream: "broadcast".into(),
            delivery: None,
            unsubscribe,
        }
    }

    #[test]
    fn a_newsletter_keeps_its_unsubscribe_headers_one_per_line_and_other_emails_none() {
        let keys = crate::keys::Keys::derive(&secrecy::SecretString::from(
            "0123456789abcdef0123456789abcdef",
        ))
        .unwrap();
        let links = UnsubscribeLinks::new(
            "https://news.example.com",
            &keys.unsubscribe_token(Uuid::new_v4()),
            None,
        );

        let lines = header_lines(&email(Some(links.clone())));

        assert_eq!(
            lines,
            format!(
                "List-Unsubscribe: <{}>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click",
                links.url()
            )
        );
        assert_eq!(header_lines(&email(None)), "");
    }

    #[test]
    fn a_batch_keeps_each_email_under_an_id_of_its_own_from_the_one_sender() {
        let newsletter = Newsletter::parse("Desk", "", "Desk").unwrap();
        let sender = Sender::new(
            &newsletter,
            &SubscriberEmail::parse("news@example.com").unwrap(),
        );
        let (a, b) = (email(None), email(None));

        let batch = Batch::of(sender.as_ref(), &[&a, &b]);

        assert_eq!(batch.ids.len(), 2);
        assert_ne!(batch.ids[0], batch.ids[1]);
        assert_eq!(batch.sender, r#""Desk" <news@example.com>"#);
        assert_eq!(batch.recipients, ["ursula@example.com"; 2]);
        assert_eq!(batch.streams, ["broadcast"; 2]);
    }
}
