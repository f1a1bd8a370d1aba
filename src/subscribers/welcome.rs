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

use std::collections::{BTreeMap, BTreeSet};

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
