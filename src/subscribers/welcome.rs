//! A list's welcome email: sent to a reader once they are confirmed on the
//! list, once per reader and list, whatever happens after (a second click
//! of the link, leaving and joining again, two replicas confirming at the
//! same moment).
//!
//! [`queue_for`] is the one way it is sent. The confirmation link, a
//! confirmed reader joining a list without double opt-in (the form, their
//! page of lists) call it in the transaction that confirms them; an import
//! calls it only when the admin asks. Recording and queueing are one step:
//! `memberships.welcomed_at` is set by a statement that matches only rows
//! where it is still empty, in the same transaction as the outbox row, so
//! whichever of two transactions updates the row first sends the email,
//! and the other, waiting on the row's lock, then finds it set and sends
//! nothing. If the transaction rolls back, neither the record nor the
//! email remains.
//!
//! It goes on the transactional stream, with confirmations: it is the
//! direct answer to the reader's own act and is expected within seconds,
//! where the broadcast stream's throttle would queue it behind an issue to
//! every reader.
//!
//! An import is the exception on both counts ([`queue_for_import`]): the
//! readers an attested import confirms are welcomed only when the admin
//! asked, in the import's transaction, set by set rather than one email at
//! a time, and on the broadcast stream under its throttle, since a file
//! may hold a million of them. A reader an import left pending is welcomed
//! when their own click confirms them, again only if the import asked.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Transaction;
use crate::domain::{Newsletter, SubscriberEmail};
use crate::emails::{Email, UnsubscribeLinks};
use crate::keys::Keys;
use crate::newsletters::{self, PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL};
use crate::outbox::{Outbox, Personalisation, personalise};

/// What a welcome email needs besides the list: the newsletter it names,
/// where its links point and the keys that sign them, and its stream.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub newsletter: Newsletter,
    pub base_url: String,
    pub keys: Keys,
    /// The transactional stream.
    pub message_stream: String,
}

/// The outbox and the letterhead together: what a handler that confirms
/// readers is given, to call [`queue_for`] with.
#[derive(Clone)]
pub struct Welcomer {
    pub outbox: Outbox,
    pub letterhead: Letterhead,
}

impl Welcomer {
    /// [`queue_for`] with this outbox and letterhead.
    pub async fn queue_for(
        &self,
        transaction: &mut Transaction<'_>,
        joined: &[(Uuid, Uuid)],
    ) -> Result<usize, sqlx::Error> {
        queue_for(transaction, &self.outbox, &self.letterhead, joined).await
    }
}

/// One welcome owed, as the statement that records it returns it.
#[derive(sqlx::FromRow)]
struct Owed {
    subscriber_id: Uuid,
    email: String,
    name: String,
    list_id: Uuid,
    list_name: String,
    subject: String,
    body: String,
}

/// Queues the welcome of each (subscriber, list) in `joined` whose list
/// has one, where the reader is confirmed on it and was never sent it, and
/// records that it was sent. Returns how many were queued. Pairs that owe
/// nothing (no welcome, not confirmed, welcomed before) are passed over,
/// so a caller may pass every list it just confirmed.
#[tracing::instrument(name = "Queue welcome emails", level = "debug", skip_all, fields(joined = joined.len()))]
pub async fn queue_for(
    transaction: &mut Transaction<'_>,
    outbox: &Outbox,
    letterhead: &Letterhead,
    joined: &[(Uuid, Uuid)],
) -> Result<usize, sqlx::Error> {
    if joined.is_empty() {
        return Ok(0);
    }
    // Each pair once, and in one order, so that two transactions updating
    // the same memberships wait for each other instead of deadlocking.
    let pairs: BTreeSet<(Uuid, Uuid)> = joined.iter().copied().collect();
    let (subscribers, lists): (Vec<Uuid>, Vec<Uuid>) = pairs.into_iter().unzip();
    let owed: Vec<Owed> = sqlx::query_as(
        "UPDATE memberships m SET welcomed_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS w (subscriber_id, list_id), \
              lists l, subscriptions s \
         WHERE m.subscriber_id = w.subscriber_id AND m.list_id = w.list_id \
           AND m.status = 'confirmed' AND m.welcomed_at IS NULL \
           AND l.id = m.list_id AND l.welcome_subject IS NOT NULL \
           AND s.id = m.subscriber_id AND s.status = 'confirmed' \
           AND NOT EXISTS (SELECT 1 FROM imports i WHERE i.id = m.import_id AND NOT i.welcome) \
         RETURNING m.subscriber_id, s.email, s.name, m.list_id, l.name AS list_name, \
                   l.welcome_subject AS subject, l.welcome_body AS body",
    )
    .bind(&subscribers)
    .bind(&lists)
    .fetch_all(&mut **transaction)
    .await?;
    if owed.is_empty() {
        return Ok(0);
    }
    let emails = emails(letterhead, owed);
    let queued = emails.len();
    outbox.enqueue(transaction, emails).await?;
    Ok(queued)
}

/// How many readers of an import are welcomed per round trip: their
/// links are signed here, a chunk at a time, so memory stays flat
/// whatever the file's size.
const IMPORT_CHUNK: i64 = 5_000;

/// The readers an import confirmed on its list, welcomed: every one still
/// owed the list's welcome is recorded as sent and their email queued on
/// `letterhead`'s stream, spread at `per_second` as an import's
/// confirmations are, all in the caller's transaction (the import's
/// merge). Returns how many were queued; none when the list has no
/// welcome.
#[tracing::instrument(name = "Queue an import's welcome emails", level = "info", skip_all)]
pub async fn queue_for_import(
    connection: &mut PgConnection,
    letterhead: &Letterhead,
    import_id: Uuid,
    list_id: Uuid,
    per_second: u32,
) -> Result<u64, sqlx::Error> {
    let welcome: Option<(String, String, String)> = sqlx::query_as(
        "SELECT name, welcome_subject, welcome_body FROM lists \
         WHERE id = $1 AND welcome_subject IS NOT NULL",
    )
    .bind(list_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((list_name, subject, body)) = welcome else {
        return Ok(0);
    };
    sqlx::query(
        "CREATE TEMP TABLE import_welcomes (n bigint, recipient text, personalisation jsonb) \
         ON COMMIT DROP",
    )
    .execute(&mut *connection)
    .await?;
    let mut after = Uuid::nil();
    let mut n: i64 = 0;
    loop {
        // In the order of the list's key, from where the last chunk ended:
        // each chunk is a range of that index, and a reader skipped below
        // (an address that no longer parses) is still behind `after`.
        let chunk: Vec<(Uuid, String, String)> = sqlx::query_as(
            "WITH chunk AS ( \
                 SELECT m.subscriber_id FROM memberships m \
                 JOIN subscriptions s ON s.id = m.subscriber_id AND s.status = 'confirmed' \
                 WHERE m.list_id = $1 AND m.subscriber_id > $3 AND m.import_id = $2 \
                   AND m.status = 'confirmed' AND m.welcomed_at IS NULL \
                 ORDER BY m.subscriber_id LIMIT $4 \
             ) \
             UPDATE memberships m SET welcomed_at = now() \
             FROM chunk c, subscriptions s \
             WHERE m.list_id = $1 AND m.subscriber_id = c.subscriber_id AND s.id = c.subscriber_id \
             RETURNING m.subscriber_id, s.email, s.name",
        )
        .bind(list_id)
        .bind(import_id)
        .bind(after)
        .bind(IMPORT_CHUNK)
        .fetch_all(&mut *connection)
        .await?;
        let Some(last) = chunk.iter().map(|(id, _, _)| *id).max() else {
            break;
        };
        after = last;
        let full = chunk.len() as i64 == IMPORT_CHUNK;
        let mut numbers = Vec::with_capacity(chunk.len());
        let mut recipients = Vec::with_capacity(chunk.len());
        let mut values = Vec::with_capacity(chunk.len());
        for (subscriber_id, email, name) in chunk {
            if SubscriberEmail::parse(&email).is_err() {
                tracing::warn!(%subscriber_id, "A stored address no longer parses: no welcome email");
                continue;
            }
            let links = links(letterhead, subscriber_id);
            n += 1;
            numbers.push(n);
            recipients.push(email);
            values.push(sqlx::types::Json(Personalisation::from([
                (RECIPIENT_NAME.to_owned(), name),
                (UNSUBSCRIBE_URL.to_owned(), links.url().to_owned()),
                (
                    PREFERENCES_URL.to_owned(),
                    links.preferences_url().to_owned(),
                ),
            ])));
        }
        sqlx::query(
            "INSERT INTO import_welcomes (n, recipient, personalisation) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[])",
        )
        .bind(&numbers)
        .bind(&recipients)
        .bind(&values)
        .execute(&mut *connection)
        .await?;
        if !full {
            break;
        }
    }
    if n == 0 {
        return Ok(0);
    }
    let content = newsletters::welcome(&letterhead.newsletter, &list_name, &subject, &body);
    crate::outbox::store::insert_spread(
        connection,
        &content,
        &letterhead.message_stream,
        "SELECT n, recipient, personalisation FROM import_welcomes",
        per_second,
    )
    .await
}

/// Each welcome for its reader: rendered once per list, filled in per
/// reader as an issue is.
fn emails(letterhead: &Letterhead, owed: Vec<Owed>) -> Vec<Email> {
    let mut by_list: BTreeMap<Uuid, Vec<Owed>> = BTreeMap::new();
    for one in owed {
        by_list.entry(one.list_id).or_default().push(one);
    }
    let mut emails = Vec::new();
    for readers in by_list.into_values() {
        let first = &readers[0];
        let content = newsletters::welcome(
            &letterhead.newsletter,
            &first.list_name,
            &first.subject,
            &first.body,
        );
        for reader in &readers {
            // Stored addresses were parsed on the way in; one that no
            // longer parses (a rule tightened since) is not mailed.
            let Ok(to) = SubscriberEmail::parse(&reader.email) else {
                tracing::warn!(
                    subscriber_id = %reader.subscriber_id,
                    "A stored address no longer parses: no welcome email"
                );
                continue;
            };
            let links = links(letterhead, reader.subscriber_id);
            let values = Personalisation::from([
                (RECIPIENT_NAME.to_owned(), reader.name.clone()),
                (UNSUBSCRIBE_URL.to_owned(), links.url().to_owned()),
                (
                    PREFERENCES_URL.to_owned(),
                    links.preferences_url().to_owned(),
                ),
            ]);
            emails.push(Email {
                to,
                content: personalise(&content, &values),
                message_stream: letterhead.message_stream.clone(),
                delivery: None,
                outbox_id: None,
                // The links are in the bodies; the outbox keeps no
                // headers, and a transactional email carries none.
                unsubscribe: None,
            });
        }
    }
    emails
}

/// The reader's way out: the unsubscribe link (which leaves everything, as
/// an issue to every reader's does) and their page of lists.
fn links(letterhead: &Letterhead, subscriber_id: Uuid) -> UnsubscribeLinks {
    UnsubscribeLinks::new(
        &letterhead.base_url,
        &letterhead.keys.unsubscribe_token(subscriber_id),
        None,
    )
}
