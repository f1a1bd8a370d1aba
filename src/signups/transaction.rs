//! The sign-up transaction and its SQL. For every sign-up of the batch it is
//! given (one, or many that queued up together):
//!
//! 1. store a pending subscriber, or find the one that has the address;
//! 2. store the confirmation token's hash, for those not yet confirmed;
//! 3. queue their email: the confirmation, or for a confirmed address an
//!    "already subscribed" notice.
//!
//! Every statement takes the whole batch at once, so a batch costs the
//! round trips of one sign-up. A batch of one is written exactly like a
//! sign-up among many, which is what lets the group commit retry the
//! sign-ups of a failed batch one at a time.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Transaction;
use crate::domain::{NewSubscriber, SubscriptionToken};
use crate::emails::{self, Email};
use crate::outbox::Outbox;
use crate::signups::{SignUp, SignupSettings, Stored};

#[tracing::instrument(name = "Store sign-ups", level = "debug", skip_all, fields(sign_ups = sign_ups.len()))]
pub(super) async fn store(
    transaction: &mut Transaction<'_>,
    outbox: &Outbox,
    settings: &SignupSettings,
    sign_ups: &[SignUp],
) -> Result<Vec<Stored>, sqlx::Error> {
    let subscribers: Vec<&NewSubscriber> = sign_ups.iter().map(|s| &s.subscriber).collect();
    let known = upsert_pending_subscribers(transaction, &subscribers).await?;

    let tokens: Vec<(Uuid, &SubscriptionToken)> = sign_ups
        .iter()
        .zip(&known)
        .filter_map(|(sign_up, known)| match known {
            Known::Pending(id) => Some((*id, &sign_up.token)),
            Known::Confirmed => None,
        })
        .collect();
    store_tokens(transaction, &tokens, Utc::now() + settings.token_lifetime).await?;

    let emails = sign_ups
        .iter()
        .zip(&known)
        .map(|(sign_up, known)| Email {
            to: sign_up.subscriber.email.clone(),
            content: match known {
                Known::Pending(_) => sign_up.confirmation.clone(),
                Known::Confirmed => emails::already_subscribed(
                    &settings.newsletter,
                    &settings.base_url,
                    &sign_up.subscriber.name,
                ),
            },
            message_stream: settings.message_stream.clone(),
            delivery: None,
        })
        .collect();
    outbox.enqueue(transaction, emails).await?;

    Ok(known
        .into_iter()
        .map(|known| Stored {
            subscriber_id: match known {
                Known::Pending(id) => Some(id),
                Known::Confirmed => None,
            },
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
