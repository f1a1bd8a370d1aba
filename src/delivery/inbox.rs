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
//! database, since the database is where it delivers; its insert also
//! locks the outbox row or the subscriber an email is for, so that an
//! email a sender held while its recipient was erased is dropped, not kept
//! (see [`Batch::insert`]).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{AssertSqlSafe, PgConnection};
use tracing::Instrument;
use uuid::Uuid;

use crate::configuration::{EmailBackend, EmailClientSettings};
use crate::db::Db;
use crate::delivery::answer::{Answer, Refusal};
use crate::delivery::postmark::{MAX_BATCH, Sender};
use crate::delivery::provider::{Failure, Provider};
use crate::emails::Email;
use crate::subscribers::audience;

/// Its name in the configuration, the metrics and the ledger.
pub const NAME: &str = EmailBackend::Inbox.as_str();

/// Keeps each email in `inbox_emails` under an id of its own, which is
/// also the message id the engine records: one id per message, however
/// often it is tried (see [`id_of`]).
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
                    Ok(kept) => Ok(ids.into_iter().map(|id| answer(id, &kept)).collect()),
                    Err(e) => {
                        tracing::warn!(
                            error = %crate::telemetry::error_chain_line(&e),
                            "The local inbox could not keep a batch"
                        );
                        // The insert may have committed all the same: the
                        // retry finds the emails under the same ids.
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

/// What became of the email kept under `id`: in the inbox (now or by an
/// earlier attempt), or dropped because the message it is was withdrawn
/// meanwhile. Dropped is refused for good: there is nobody to send it to
/// any more, and trying again would find the same.
fn answer(id: Uuid, kept: &[Uuid]) -> Answer {
    if kept.contains(&id) {
        Answer::Sent {
            message_id: Some(id.to_string()),
            provider: NAME,
            code: None,
        }
    } else {
        Answer::Refused(DROPPED)
    }
}

/// Why an email was not kept: fixed text, as every refusal is.
const DROPPED: Refusal = Refusal::new("the local inbox dropped it")
    .because("the message was withdrawn while it was sent: its recipient was erased");

/// An email's id in the inbox, the same for every attempt at one message:
/// an insert that timed out may have committed, and the engine then tries
/// the message again, which must not keep it twice. Derived from what the
/// message is (its outbox row, or its delivery of an issue); an email that
/// is neither (a tool driving the provider) is known by its whole content.
fn id_of(email: &Email) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    // Each part with its length first: no two different emails hash the
    // same parts in the same order.
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    match (&email.outbox_id, &email.delivery) {
        (Some(id), _) => {
            part(b"outbox");
            part(id.as_bytes());
        }
        (None, Some(delivery)) => {
            part(b"delivery");
            part(delivery.issue_id.as_bytes());
            part(&delivery.seq.to_be_bytes());
        }
        (None, None) => {
            part(b"content");
            for text in [
                email.to.as_ref(),
                &email.message_stream,
                &email.content.subject,
                &email.content.html_body,
                &email.content.text_body,
                &header_lines(email),
            ] {
                part(text.as_bytes());
            }
        }
    }
    let digest = hash.finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
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
    /// What each email is, if it is a message the service can withdraw:
    /// its outbox row, or its delivery of an issue.
    outbox_ids: Vec<Option<Uuid>>,
    issue_ids: Vec<Option<Uuid>>,
    seqs: Vec<Option<i32>>,
}

impl Batch {
    fn of(sender: &str, emails: &[&Email]) -> Self {
        let n = emails.len();
        let mut batch = Self {
            ids: Vec::with_capacity(n),
            sender: sender.to_owned(),
            recipients: Vec::with_capacity(n),
            subjects: Vec::with_capacity(n),
            html_bodies: Vec::with_capacity(n),
            text_bodies: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            outbox_ids: Vec::with_capacity(n),
            issue_ids: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
        };
        for email in emails {
            batch.ids.push(id_of(email));
            batch.recipients.push(email.to.as_ref().to_owned());
            batch.subjects.push(email.content.subject.clone());
            batch.html_bodies.push(email.content.html_body.clone());
            batch.text_bodies.push(email.content.text_body.clone());
            batch.headers.push(header_lines(email));
            batch.streams.push(email.message_stream.clone());
            batch.outbox_ids.push(email.outbox_id);
            batch.issue_ids.push(email.delivery.map(|d| d.issue_id));
            batch.seqs.push(email.delivery.map(|d| d.seq));
        }
        batch
    }

    /// Keeps the emails whose message is still there, and returns their
    /// ids: those inserted now and those an earlier attempt inserted.
    ///
    /// An erasure deletes its subscriber's outbox rows and their emails
    /// here, but a sender may hold one of those emails already, claimed
    /// before the erasure and kept after it: its address and its live links
    /// would stay until retention. So the insert takes a key-share lock on
    /// what each email is: its outbox row, or the subscriber of its
    /// delivery (a campaign's delivery outlives an erasure; its subscriber
    /// does not). An erasure holding or deleting that row makes the insert
    /// wait for it to commit, and the row is then gone: the email is
    /// dropped. An insert that locked first makes the erasure wait, whose
    /// next statement, the deletion of the inbox's emails, then finds it.
    /// Checking a record the erasure leaves instead (the keyed hashes of
    /// `former_addresses`) would race with an erasure not yet committed,
    /// and would drop the confirmation of someone who left and came back.
    ///
    /// The statement reads two tables it does not own because the lock
    /// and the insert must be one: split, the lock would be released before
    /// the insert or need a transaction around three modules' calls. The
    /// join that holds the subscriber is the subscriber store's
    /// ([`audience::held_sql`]).
    async fn insert(self, conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(AssertSqlSafe(INSERT.as_str()))
            .bind(&self.ids)
            .bind(&self.sender)
            .bind(&self.recipients)
            .bind(&self.subjects)
            .bind(&self.html_bodies)
            .bind(&self.text_bodies)
            .bind(&self.headers)
            .bind(&self.streams)
            .bind(&self.outbox_ids)
            .bind(&self.issue_ids)
            .bind(&self.seqs)
            .fetch_all(conn)
            .await
    }
}

/// The statement of the inbox's insert: see its comment for the locks.
static INSERT: LazyLock<String> = LazyLock::new(|| {
    let held = audience::held_sql("d.subscriber_id");
    format!(
        "WITH e AS ( \
                 SELECT * FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[], \
                                      $6::text[], $7::text[], $8::text[], $9::uuid[], \
                                      $10::uuid[], $11::int[]) \
                     AS e(id, recipient, subject, html_body, text_body, headers, \
                          message_stream, outbox_id, issue_id, seq) \
             ), queued AS ( \
                 SELECT o.id FROM email_outbox o \
                 WHERE o.id IN (SELECT outbox_id FROM e WHERE outbox_id IS NOT NULL) \
                 ORDER BY o.ctid \
                 FOR KEY SHARE \
             ), addressed AS ( \
                 SELECT d.issue_id, d.seq \
                 FROM deliveries d {join} \
                 WHERE (d.issue_id, d.seq) IN \
                       (SELECT issue_id, seq FROM e WHERE issue_id IS NOT NULL) \
                 {hold} \
             ), kept AS ( \
                 SELECT e.* FROM e \
                 WHERE (e.outbox_id IS NULL OR e.outbox_id IN (SELECT id FROM queued)) \
                   AND (e.issue_id IS NULL \
                        OR (e.issue_id, e.seq) IN (SELECT issue_id, seq FROM addressed)) \
             ), inserted AS ( \
                 INSERT INTO inbox_emails \
                     (id, sender, recipient, subject, html_body, text_body, headers, \
                      message_stream) \
                 SELECT id, $2, recipient, subject, html_body, text_body, headers, \
                        message_stream \
                 FROM kept \
                 ON CONFLICT (id) DO NOTHING \
             ) \
             SELECT id FROM kept",
        join = held.join,
        hold = held.hold,
    )
});

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
        let on = settings.uses(EmailBackend::Inbox);
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
            outbox_id: None,
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
    fn a_batch_keeps_each_message_under_an_id_of_its_own_from_the_one_sender() {
        let newsletter = Newsletter::parse("Desk", "", "Desk").unwrap();
        let sender = Sender::new(
            &newsletter,
            &SubscriberEmail::parse("news@example.com").unwrap(),
        );
        // The same words, as two messages of the outbox: a test send made
        // twice.
        let (mut a, mut b) = (email(None), email(None));
        a.outbox_id = Some(Uuid::new_v4());
        b.outbox_id = Some(Uuid::new_v4());

        let batch = Batch::of(sender.as_ref(), &[&a, &b]);

        assert_eq!(batch.ids.len(), 2);
        assert_ne!(batch.ids[0], batch.ids[1]);
        assert_eq!(batch.sender, r#""Desk" <news@example.com>"#);
        assert_eq!(batch.recipients, ["ursula@example.com"; 2]);
        assert_eq!(batch.streams, ["broadcast"; 2]);
        assert_eq!(batch.outbox_ids, [a.outbox_id, b.outbox_id]);
    }

    #[test]
    fn every_attempt_at_one_message_keeps_it_under_the_same_id_and_other_messages_under_others() {
        let outbox = |id: Uuid| Email {
            outbox_id: Some(id),
            ..email(None)
        };
        let delivery = |issue_id: Uuid, seq: i32| Email {
            delivery: Some(crate::campaigns::DeliveryId { issue_id, seq }),
            ..email(None)
        };
        let with_subject = |subject: &str| {
            let mut email = email(None);
            email.content.subject = subject.into();
            email
        };
        let (row, issue) = (Uuid::new_v4(), Uuid::new_v4());
        let mut reworded = outbox(row);
        reworded.content.subject = "Another subject".into();

        for (case, first, second) in [
            ("an outbox message", outbox(row), outbox(row)),
            ("an outbox message, its words aside", outbox(row), reworded),
            ("a delivery", delivery(issue, 3), delivery(issue, 3)),
            ("an email that is neither", email(None), email(None)),
        ] {
            assert_eq!(id_of(&first), id_of(&second), "{case}");
        }
        for (case, first, second) in [
            ("two outbox messages", outbox(row), outbox(Uuid::new_v4())),
            ("two deliveries", delivery(issue, 3), delivery(issue, 4)),
            (
                "two issues",
                delivery(issue, 3),
                delivery(Uuid::new_v4(), 3),
            ),
            (
                "an outbox message and its words alone",
                outbox(row),
                email(None),
            ),
            (
                "two emails that are neither",
                with_subject("One"),
                with_subject("Two"),
            ),
        ] {
            assert_ne!(id_of(&first), id_of(&second), "{case}");
        }
    }

    #[test]
    fn an_email_withdrawn_while_it_was_sent_is_refused_and_the_others_are_sent_under_their_ids() {
        let (kept, dropped) = (Uuid::new_v4(), Uuid::new_v4());

        assert_eq!(
            answer(kept, &[kept]),
            Answer::Sent {
                message_id: Some(kept.to_string()),
                provider: NAME,
                code: None,
            }
        );
        assert_eq!(answer(dropped, &[kept]), Answer::Refused(DROPPED));
    }
}
