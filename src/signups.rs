//! Storing sign-ups: a pending subscriber (or the one already there with the
//! address), a confirmation token and the email for them, all in one
//! transaction.
//!
//! Sign-ups that arrive on one HTTP worker thread while its earlier ones are
//! being written share the next transaction. Every statement of the
//! transaction takes the whole batch at once, so a busy instance pays a
//! transaction's round trips, and Postgres a commit, once per batch instead
//! of once per sign-up. Nothing waits to fill a batch: a sign-up that finds a
//! writer and a connection free is written at once, alone. Each sign-up still
//! gets its subscriber, token and email in the same transaction, and the
//! answer to each request waits for that commit.
//!
//! A failed transaction fails every sign-up in it, with the same error, as
//! if each had failed on its own.
//!
//! A batch is kept small enough to go to Postgres as one write: see
//! [`BATCH_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::connections::Connections;
use crate::domain::{NewSubscriber, SubscriptionToken};
use crate::emails::{self, EmailContent};
use crate::outbox::{self, OutgoingEmail, Slot};

/// Most sign-ups written in one transaction.
const MAX_BATCH: usize = 64;
/// Most bytes of email a batch carries. The outbox insert sends every email
/// of the batch in one message, and one larger than a TLS record (16 KiB)
/// leaves in more than one write. sqlx 0.9.0 does not set `TCP_NODELAY`, so
/// the second write waits for the first to be acknowledged, and Postgres,
/// still missing the rest of the message, delays that acknowledgement (up to
/// 40 ms on Linux). A typical confirmation is under 1 KiB.
const BATCH_BYTES: usize = 14 * 1024;
/// Bytes of an outbox row besides its email (id, lengths, stream, claim).
const ROW_BYTES: usize = 128;
/// Sign-ups a worker thread holds before new ones wait to be queued.
const QUEUE: usize = 1024;

/// What the sign-up emails need to know.
#[derive(Debug, Clone)]
pub struct SignupSettings {
    pub base_url: String,
    pub token_lifetime: chrono::Duration,
    /// Message stream for confirmations and notices.
    pub message_stream: String,
}

/// One worker thread's sign-up writers.
pub struct Signups {
    queue: mpsc::Sender<Waiting>,
    settings: Arc<SignupSettings>,
}

/// What became of a stored sign-up.
#[derive(Debug)]
pub struct Stored {
    /// The pending subscriber who was sent a confirmation; `None` when the
    /// address was already confirmed and got a notice instead.
    pub subscriber_id: Option<Uuid>,
}

/// Why a sign-up was not stored: a step of its transaction failed. Shared by
/// every sign-up of that transaction.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Failed to {step}")]
pub struct StoreError {
    step: &'static str,
    #[source]
    cause: Arc<sqlx::Error>,
}

impl StoreError {
    fn at(step: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |cause| Self {
            step,
            cause: Arc::new(cause),
        }
    }

    pub fn cause(&self) -> &sqlx::Error {
        &self.cause
    }
}

struct Waiting {
    subscriber: NewSubscriber,
    /// The token and its email, used unless the address is confirmed.
    token: SubscriptionToken,
    confirmation: EmailContent,
    slot: Slot,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

impl Waiting {
    /// What this sign-up adds to its batch's outbox insert.
    fn bytes(&self) -> usize {
        let EmailContent {
            subject,
            html_body,
            text_body,
        } = &self.confirmation;
        ROW_BYTES
            + self.subscriber.email.as_ref().len()
            + subject.len()
            + html_body.len()
            + text_body.len()
    }
}

/// A sign-up as written: who, and the email that goes out once it commits.
struct Written {
    subscriber_id: Option<Uuid>,
    outbox_id: Uuid,
    email: OutgoingEmail,
}

impl Signups {
    /// Starts `writers` writers on the current runtime, each writing one
    /// batch at a time on a connection from `connections`. Fewer writers than
    /// connections make bigger batches; the rest of the connections serve
    /// other requests. The writers stop when this is dropped.
    pub fn start(connections: Connections, settings: Arc<SignupSettings>, writers: usize) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(Queue {
            receiver,
            held_over: None,
        }));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(
                receiver.clone(),
                connections.clone(),
                settings.clone(),
            ));
        }
        Self { queue, settings }
    }

    /// Stores `subscriber` and returns once it has committed. `slot` is the
    /// delivery hand-off's place for the email, reserved before the call.
    pub async fn store(&self, subscriber: NewSubscriber, slot: Slot) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::at("queue the sign-up")(sqlx::Error::PoolClosed);
        // Nearly every sign-up is a new or pending address: its email is
        // rendered here, on the request's time, rather than by the writer.
        let token = SubscriptionToken::generate();
        let confirmation = emails::confirmation(&self.settings.base_url, &subscriber.name, &token);
        self.queue
            .send(Waiting {
                subscriber,
                token,
                confirmation,
                slot,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Sign-ups queued and not yet taken into a batch.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// The sign-ups waiting for a writer, and the one that did not fit in the
/// last batch taken.
struct Queue {
    receiver: mpsc::Receiver<Waiting>,
    held_over: Option<Waiting>,
}

impl Queue {
    async fn next(&mut self) -> Option<Waiting> {
        match self.held_over.take() {
            Some(waiting) => Some(waiting),
            None => self.receiver.recv().await,
        }
    }

    /// `first` and the sign-ups queued behind it, as many as fit in a batch.
    fn batch(&mut self, first: Waiting) -> Vec<Waiting> {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH
            && let Ok(next) = self.receiver.try_recv()
        {
            bytes += next.bytes();
            if bytes > BATCH_BYTES {
                self.held_over = Some(next);
                break;
            }
            batch.push(next);
        }
        batch
    }
}

async fn write_batches(
    queue: Arc<Mutex<Queue>>,
    connections: Connections,
    settings: Arc<SignupSettings>,
) {
    loop {
        let mut queue = queue.lock().await;
        let Some(first) = queue.next().await else {
            return;
        };
        // Sign-ups that arrive while a connection is found join this batch.
        let connection = connections.acquire().await;
        let mut batch = queue.batch(first);
        drop(queue);
        // A request that gave up before its batch started stores nothing,
        // as it would have on its own.
        batch.retain(|waiting| !waiting.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let outcome = match connection {
            Ok(mut connection) => {
                let written = write(&mut connection, &batch, &settings).await;
                if written.is_ok() {
                    connection.give_back();
                }
                written
            }
            Err(e) => Err(StoreError::at("get a connection")(e)),
        };
        match outcome {
            Ok(written) => {
                for (waiting, written) in batch.into_iter().zip(written) {
                    waiting.slot.committed(written.outbox_id, written.email);
                    let _ = waiting.reply.send(Ok(Stored {
                        subscriber_id: written.subscriber_id,
                    }));
                }
            }
            Err(error) => {
                for waiting in batch {
                    let _ = waiting.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The batch's transaction. Returns what was written, in the batch's order.
#[tracing::instrument(name = "Store sign-ups", level = "debug", skip_all, fields(sign_ups = batch.len()))]
async fn write(
    connection: &mut PgConnection,
    batch: &[Waiting],
    settings: &SignupSettings,
) -> Result<Vec<Written>, StoreError> {
    let mut transaction = connection
        .begin()
        .await
        .map_err(StoreError::at("begin a transaction"))?;
    let subscribers: Vec<&NewSubscriber> = batch.iter().map(|w| &w.subscriber).collect();
    let known = upsert_pending_subscribers(&mut transaction, &subscribers)
        .await
        .map_err(StoreError::at("store the subscribers"))?;

    let expires_at = Utc::now() + settings.token_lifetime;
    let mut tokens = Vec::new();
    let mut emails = Vec::with_capacity(batch.len());
    for (waiting, known) in batch.iter().zip(&known) {
        let subscriber = &waiting.subscriber;
        let content = match known {
            Known::Pending(id) => {
                tokens.push((*id, &waiting.token));
                waiting.confirmation.clone()
            }
            Known::Confirmed => emails::already_subscribed(&settings.base_url, &subscriber.name),
        };
        emails.push(OutgoingEmail {
            recipient: subscriber.email.clone(),
            subject: content.subject.to_owned(),
            html_body: content.html_body,
            text_body: content.text_body,
            message_stream: settings.message_stream.clone(),
        });
    }
    store_tokens(&mut transaction, &tokens, expires_at)
        .await
        .map_err(StoreError::at("store the confirmation tokens"))?;
    let queued: Vec<(&OutgoingEmail, Option<Duration>)> = emails
        .iter()
        .zip(batch)
        .map(|(email, waiting)| (email, waiting.slot.claim()))
        .collect();
    let outbox_ids = outbox::enqueue(&mut transaction, &queued)
        .await
        .map_err(StoreError::at("enqueue the emails"))?;
    transaction
        .commit()
        .await
        .map_err(StoreError::at("commit the sign-ups"))?;

    Ok(known
        .into_iter()
        .zip(outbox_ids)
        .zip(emails)
        .map(|((known, outbox_id), email)| Written {
            subscriber_id: match known {
                Known::Pending(id) => Some(id),
                Known::Confirmed => None,
            },
            outbox_id,
            email,
        })
        .collect())
}

/// What the database holds for an address once the sign-up is stored.
enum Known {
    Pending(Uuid),
    Confirmed,
}

/// Inserts pending subscribers, and finds the ones that already have these
/// addresses in any letter case. `ON CONFLICT DO NOTHING` without a target
/// covers every unique index, whichever the schema step has (the address as
/// typed, its lower-case form, or both), so concurrent sign-ups of one
/// address all succeed: each waits for the first to commit, then reads its
/// row. Rows go in in address order, so two batches that share addresses
/// wait for each other in the same order and cannot deadlock.
async fn upsert_pending_subscribers(
    connection: &mut PgConnection,
    subscribers: &[&NewSubscriber],
) -> Result<Vec<Known>, sqlx::Error> {
    let ids: Vec<Uuid> = subscribers.iter().map(|_| Uuid::new_v4()).collect();
    let emails: Vec<&str> = subscribers.iter().map(|s| s.email.as_ref()).collect();
    let names: Vec<&str> = subscribers.iter().map(|s| s.name.as_ref()).collect();
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO subscriptions (id, email, name, subscribed_at, status)
        SELECT id, email, name, $4, 'pending_confirmation'
        FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS new (id, email, name)
        ORDER BY lower(email)
        ON CONFLICT DO NOTHING
        RETURNING id
        "#,
        &ids,
        &emails as &[&str],
        &names as &[&str],
        Utc::now()
    )
    .fetch_all(&mut *connection)
    .await?;
    let mut known: Vec<Option<Known>> = ids
        .iter()
        .map(|id| inserted.contains(id).then_some(Known::Pending(*id)))
        .collect();

    // Addresses already there, or taken by an earlier sign-up of this batch.
    let missing: Vec<usize> = (0..known.len()).filter(|&i| known[i].is_none()).collect();
    if !missing.is_empty() {
        let addresses: Vec<&str> = missing.iter().map(|&i| emails[i]).collect();
        let existing = sqlx::query!(
            r#"
            SELECT wanted.n AS "n!", s.id, s.status
            FROM UNNEST($1::text[]) WITH ORDINALITY AS wanted (email, n)
            JOIN subscriptions s ON lower(s.email) = lower(wanted.email)
            "#,
            &addresses as &[&str]
        )
        .fetch_all(&mut *connection)
        .await?;
        for row in existing {
            let index = missing[usize::try_from(row.n - 1).expect("ordinality starts at 1")];
            known[index] = Some(if row.status == "confirmed" {
                Known::Confirmed
            } else {
                Known::Pending(row.id)
            });
        }
    }
    known
        .into_iter()
        .map(|k| k.ok_or(sqlx::Error::RowNotFound))
        .collect()
}

/// Stores the tokens' hashes, never the tokens: a copy of the database cannot
/// confirm anyone.
async fn store_tokens(
    connection: &mut PgConnection,
    tokens: &[(Uuid, &SubscriptionToken)],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if tokens.is_empty() {
        return Ok(());
    }
    let subscriber_ids: Vec<Uuid> = tokens.iter().map(|(id, _)| *id).collect();
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|(_, token)| token.hash()).collect();
    sqlx::query!(
        r#"
        INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
        SELECT token_hash, subscriber_id, $3
        FROM UNNEST($1::bytea[], $2::uuid[]) AS new (token_hash, subscriber_id)
        "#,
        &hashes,
        &subscriber_ids,
        expires_at
    )
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SubscriberEmail, SubscriberName};
    use crate::outbox::{Doorbell, Handoff};

    fn waiting(i: usize) -> Waiting {
        let subscriber = NewSubscriber {
            name: SubscriberName::parse("Le Guin").unwrap(),
            email: SubscriberEmail::parse(&format!("reader{i:03}@example.com")).unwrap(),
        };
        let token = SubscriptionToken::generate();
        let confirmation = emails::confirmation("http://127.0.0.1", &subscriber.name, &token);
        Waiting {
            subscriber,
            token,
            confirmation,
            slot: Handoff::doorbell_only(Doorbell::default()).reserve(),
            reply: oneshot::channel().0,
        }
    }

    fn recipient(waiting: &Waiting) -> &str {
        waiting.subscriber.email.as_ref()
    }

    #[tokio::test]
    async fn a_batch_stops_before_its_bytes_limit_and_the_next_sign_up_starts_the_next() {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let mut queue = Queue {
            receiver,
            held_over: None,
        };
        let per_sign_up = waiting(0).bytes();
        let fit = BATCH_BYTES / per_sign_up;
        assert!(fit < MAX_BATCH, "the bytes limit is the one that applies");
        for i in 0..fit + 5 {
            sender.try_send(waiting(i)).ok().unwrap();
        }

        let first = queue.next().await.unwrap();
        let batch = queue.batch(first);

        assert_eq!(batch.len(), fit);
        assert!(batch.iter().map(Waiting::bytes).sum::<usize>() <= BATCH_BYTES);
        let next = queue.next().await.unwrap();
        assert_eq!(recipient(&next), format!("reader{fit:03}@example.com"));
        assert_eq!(queue.batch(next).len(), 5);
    }
}
