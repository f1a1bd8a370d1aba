//! The statements a batch of sign-ups is stored with: pending subscribers
//! (or the ones already there with the addresses), and their confirmation
//! tokens' hashes. Each takes the whole batch at once, so a batch costs the
//! round trips of one sign-up. And the one sign-up that needs no
//! confirmation: a reader whose consent an admin attests ([`add_attested`]).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{NewSubscriber, SubscriptionToken};
use crate::outgoing_webhooks::events::{self as outgoing, Event};

/// What the database holds for an address once the sign-up is stored.
pub enum Known {
    /// Not (or no longer) confirmed: pending, or unsubscribed and signing up
    /// again. Either way a new confirmation, and the status stays as it is
    /// until the link is opened: coming back is a new consent.
    Pending(Uuid),
    /// Confirmed: what happens next depends on the lists they chose.
    Confirmed(Uuid),
}

/// The subscribers a batch of sign-ups created, still to be announced to
/// the webhook endpoints ([`Created::announce`]). `subscriber.created`
/// carries the lists the reader joined, so it can only be queued once the
/// memberships are written: announcing when the rows go in told every
/// endpoint `lists: []`.
#[must_use = "announce the created subscribers once their memberships are written"]
pub struct Created(Vec<Uuid>);

impl Created {
    /// Queues `subscriber.created` for each, in the caller's transaction:
    /// call it after their memberships are written.
    pub async fn announce(self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let events: Vec<Event> = self.0.into_iter().map(Event::subscriber_created).collect();
        outgoing::emit(connection, &events, super::record::event_data).await
    }
}

/// Rounds of insert-then-look-up before a sign-up gives up; see
/// [`upsert_pending_subscribers`].
const UPSERT_ROUNDS: usize = 3;

/// Inserts pending subscribers, and finds the ones that already have these
/// addresses in any letter case. `ON CONFLICT DO NOTHING` without a target
/// covers every unique index, whichever the schema step has (the address as
/// typed, its lower-case form, or both), so concurrent sign-ups of one
/// address all succeed: each waits for the first to commit, then reads its
/// row. Rows go in in address order, so two batches that share addresses
/// wait for each other in the same order and cannot deadlock.
///
/// The retention job deletes old unconfirmed sign-ups while this runs: an
/// address can conflict on the insert and be gone by the look-up that
/// follows. Such addresses are inserted again, a few rounds at most, rather
/// than failing a sign-up that would succeed a moment later. A row the
/// look-up finds is key-share locked until the sign-up commits: the job
/// skips locked rows, so it cannot delete one between the look-up and the
/// token that refers to it.
///
/// Returns, beside what each address is now, the subscribers this call
/// created, for the caller to announce once their lists are written.
pub async fn upsert_pending_subscribers(
    connection: &mut PgConnection,
    subscribers: &[&NewSubscriber],
) -> Result<(Vec<Known>, Created), sqlx::Error> {
    let ids: Vec<Uuid> = subscribers.iter().map(|_| Uuid::new_v4()).collect();
    let mut known: Vec<Option<Known>> = subscribers.iter().map(|_| None).collect();
    let mut unresolved: Vec<usize> = (0..subscribers.len()).collect();
    for _ in 0..UPSERT_ROUNDS {
        if unresolved.is_empty() {
            break;
        }
        let round: Vec<&NewSubscriber> = unresolved.iter().map(|&i| subscribers[i]).collect();
        let round_ids: Vec<Uuid> = unresolved.iter().map(|&i| ids[i]).collect();
        let inserted = insert_pending(connection, &round_ids, &round).await?;
        for &i in &unresolved {
            if inserted.contains(&ids[i]) {
                known[i] = Some(Known::Pending(ids[i]));
            }
        }
        // Addresses already there, or taken by an earlier sign-up of this batch.
        unresolved.retain(|&i| known[i].is_none());
        if unresolved.is_empty() {
            break;
        }
        let addresses: Vec<&str> = unresolved
            .iter()
            .map(|&i| subscribers[i].email.as_ref())
            .collect();
        for (n, id, status) in find_existing(connection, &addresses).await? {
            let index = unresolved[usize::try_from(n - 1).expect("ordinality starts at 1")];
            known[index] = Some(if status == "confirmed" {
                Known::Confirmed(id)
            } else {
                Known::Pending(id)
            });
        }
        unresolved.retain(|&i| known[i].is_none());
    }
    let known: Vec<Known> = known
        .into_iter()
        .map(|k| k.ok_or(sqlx::Error::RowNotFound))
        .collect::<Result<_, _>>()?;
    // Each new subscriber once: the rows this call inserted.
    let created = ids
        .iter()
        .zip(&known)
        .filter(|(id, known)| matches!(known, Known::Pending(k) if k == *id))
        .map(|(id, _)| *id)
        .collect();
    Ok((known, Created(created)))
}

/// Inserts the subscribers whose addresses are free; returns the ids of
/// those inserted.
async fn insert_pending(
    connection: &mut PgConnection,
    ids: &[Uuid],
    subscribers: &[&NewSubscriber],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let emails: Vec<&str> = subscribers.iter().map(|s| s.email.as_ref()).collect();
    let names: Vec<&str> = subscribers.iter().map(|s| s.name.as_ref()).collect();
    sqlx::query_scalar(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, memberships_written) \
         SELECT id, email, name, $4, 'pending_confirmation', true \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS new (id, email, name) \
         ORDER BY lower(email) \
         ON CONFLICT DO NOTHING \
         RETURNING id",
    )
    .bind(ids)
    .bind(&emails)
    .bind(&names)
    .bind(Utc::now())
    .fetch_all(connection)
    .await
}

/// The subscribers that have these addresses, in any letter case, as
/// (1-based position in `addresses`, id, status).
async fn find_existing(
    connection: &mut PgConnection,
    addresses: &[&str],
) -> Result<Vec<(i64, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT wanted.n, s.id, s.status \
         FROM UNNEST($1::text[]) WITH ORDINALITY AS wanted (email, n) \
         JOIN subscriptions s ON lower(s.email) = lower(wanted.email) \
         FOR KEY SHARE OF s",
    )
    .bind(addresses)
    .fetch_all(connection)
    .await
}

/// Stores the tokens' hashes, never the tokens: a copy of the database cannot
/// confirm anyone. Each token names the lists it confirms.
pub async fn store_tokens(
    connection: &mut PgConnection,
    tokens: &[NewToken<'_>],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if tokens.is_empty() {
        return Ok(());
    }
    let subscriber_ids: Vec<Uuid> = tokens.iter().map(|t| t.subscriber_id).collect();
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| t.token.hash()).collect();
    // A uuid[] per token, and Postgres has no arrays of arrays of unequal
    // length: each token's lists travel as one text in array syntax.
    let lists: Vec<String> = tokens
        .iter()
        .map(|t| {
            let ids: Vec<String> = t.list_ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at, list_ids) \
         SELECT token_hash, subscriber_id, $3, list_ids::uuid[] \
         FROM UNNEST($1::bytea[], $2::uuid[], $4::text[]) \
              AS new (token_hash, subscriber_id, list_ids)",
    )
    .bind(&hashes)
    .bind(&subscriber_ids)
    .bind(expires_at)
    .bind(&lists)
    .execute(connection)
    .await?;
    Ok(())
}

/// A confirmation token to store: whose it is, and the lists it confirms.
pub struct NewToken<'a> {
    pub subscriber_id: Uuid,
    pub token: &'a SubscriptionToken,
    pub list_ids: Vec<Uuid>,
}

/// What became of a subscriber added on an admin's word that they
/// consented ([`add_attested`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// Added, confirmed, on the lists named.
    Added { id: Uuid, joined: Vec<Uuid> },
    /// Not added, for this reason: the address's own past outweighs an
    /// attestation, as it does for an attested import's row.
    Refused(&'static str),
}

/// Adds a confirmed subscriber on an admin's (or a token's) attestation
/// that they consented, without a confirmation email: the API's sign-up
/// with `consent_source`, one reader of an attested import. Refused, as
/// the import refuses a row, when the address is on the suppression list
/// (by itself or its mailbox), belongs to a subscriber already (their
/// lists are changed, not re-consented), or left or was erased before in
/// any spelling (`former_addresses`). In the caller's transaction.
pub async fn add_attested(
    connection: &mut PgConnection,
    keys: &crate::keys::Keys,
    subscriber: &NewSubscriber,
) -> Result<Attested, sqlx::Error> {
    let address = subscriber.email.as_ref();
    let mailbox_hash = keys.address_hash(subscriber.email.mailbox().as_ref());
    let hashes = [keys.address_hash(address), mailbox_hash.clone()];
    let hashes: Vec<&[u8]> = hashes.iter().map(Vec::as_slice).collect();
    if !super::suppression::listed_among(&mut *connection, &hashes)
        .await?
        .is_empty()
    {
        return Ok(Attested::Refused(
            "The address is on the suppression list (it bounced, complained or unsubscribed): \
             it is never mailed again.",
        ));
    }
    if super::history::left_before(&mut *connection, keys, address).await? {
        return Ok(Attested::Refused(
            "The address unsubscribed or was erased before: it is not subscribed again on an \
             attestation.",
        ));
    }
    let id: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO subscriptions \
             (id, email, name, subscribed_at, status, confirmed_at, memberships_written) \
         VALUES ($1, $2, $3, now(), 'confirmed', now(), true) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(address)
    .bind(subscriber.name.as_ref())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(id) = id else {
        return Ok(Attested::Refused(
            "A subscriber has this address already: change their lists instead.",
        ));
    };
    let joined = super::memberships::add_attested(&mut *connection, id, &subscriber.lists).await?;
    // Created and confirmed at once: a receiver following either event
    // hears of them, as it would of a reader who confirmed by email.
    outgoing::emit(
        connection,
        &[
            Event::subscriber_created(id),
            Event::subscriber_confirmed(id, &joined),
        ],
        super::record::event_data,
    )
    .await?;
    Ok(Attested::Added { id, joined })
}
