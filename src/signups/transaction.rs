//! The sign-up transaction; its statements are the subscriber store's
//! ([`crate::subscribers::sign_ups`]). For every sign-up of the batch it is
//! given (one, or many that queued up together):
//!
//! 1. leave out the addresses on the suppression list: nothing is stored or
//!    sent for them;
//! 2. store a pending subscriber, or find the one that has the address;
//! 3. put them on the lists they chose (the default one if none), and tell
//!    the webhook endpoints of the new ones, lists included;
//! 4. store the confirmation token's hash, for those not yet confirmed or
//!    joining a list that asks for a confirmation;
//! 5. queue their email: the confirmation, or for a confirmed address an
//!    "already subscribed" notice;
//! 6. queue the welcome of each list a confirmed address joined at once.
//!
//! Every statement takes the whole batch at once, so a batch costs the
//! round trips of one sign-up. A batch of one is written exactly like a
//! sign-up among many, which is what lets the group commit retry the
//! sign-ups of a failed batch one at a time.

use std::collections::HashSet;

use chrono::Utc;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::Transaction;
use crate::domain::NewSubscriber;
use crate::emails::{self, Email};
use crate::outbox::Outbox;
use crate::signups::{SignUp, SignupSettings, Stored};
use crate::subscribers::memberships::{self, Join};
use crate::subscribers::sign_ups::{Known, NewToken, store_tokens, upsert_pending_subscribers};
use crate::subscribers::{suppression, welcome};

#[tracing::instrument(name = "Store sign-ups", level = "debug", skip_all, fields(sign_ups = sign_ups.len()))]
pub(super) async fn store(
    transaction: &mut Transaction<'_>,
    outbox: &Outbox,
    settings: &SignupSettings,
    sign_ups: &[SignUp],
) -> Result<Vec<Stored>, sqlx::Error> {
    let suppressed = suppressed_addresses(transaction, sign_ups).await?;
    let is_suppressed = |sign_up: &SignUp| suppressed.contains(&sign_up.address_hash);
    let wanted: Vec<&SignUp> = sign_ups.iter().filter(|s| !is_suppressed(s)).collect();
    if wanted.len() < sign_ups.len() {
        // Without the address: the log must not say who is suppressed.
        tracing::info!(
            suppressed = sign_ups.len() - wanted.len(),
            "Sign-up of a suppressed address: nothing stored or sent"
        );
    }

    let subscribers: Vec<&NewSubscriber> = wanted.iter().map(|s| &s.subscriber).collect();
    let (known, created) = upsert_pending_subscribers(transaction, &subscribers).await?;

    let joins: Vec<Join> = wanted
        .iter()
        .zip(&known)
        .flat_map(|(sign_up, known)| {
            let (subscriber_id, address_confirmed) = match known {
                Known::Pending(id) => (*id, false),
                Known::Confirmed(id) => (*id, true),
            };
            let lists = &sign_up.subscriber.lists;
            let chosen: Vec<Option<Uuid>> = if lists.is_empty() {
                vec![None]
            } else {
                lists.iter().copied().map(Some).collect()
            };
            chosen.into_iter().map(move |list_id| Join {
                subscriber_id,
                list_id,
                address_confirmed,
            })
        })
        .collect();
    let joined = memberships::join(transaction, &joins).await?;
    // Now that their lists are written, which the event carries.
    created.announce(transaction).await?;
    let still_pending = joined.pending_readers();
    // A pending address always gets a confirmation. A confirmed one gets
    // one only when a list it chose asks for it; otherwise a notice that
    // it is subscribed.
    let needs_confirmation = |known: &Known| match known {
        Known::Pending(id) => Some(*id),
        Known::Confirmed(id) => still_pending.contains(id).then_some(*id),
    };

    // Each link confirms the lists its own sign-up chose, so that a list
    // someone else adds later under the same address waits for its own.
    let tokens: Vec<NewToken> = wanted
        .iter()
        .zip(&known)
        .filter_map(|(sign_up, known)| {
            needs_confirmation(known).map(|subscriber_id| NewToken {
                subscriber_id,
                token: &sign_up.token,
                list_ids: joined.pending_lists(subscriber_id, &sign_up.subscriber.lists),
            })
        })
        .collect();
    store_tokens(transaction, &tokens, Utc::now() + settings.token_lifetime).await?;

    let emails: Vec<Email> = wanted
        .iter()
        .zip(&known)
        .map(|(sign_up, known)| Email {
            to: sign_up.subscriber.email.clone(),
            content: match needs_confirmation(known) {
                Some(_) => sign_up.confirmation.clone(),
                None => emails::already_subscribed(
                    &settings.newsletter,
                    &settings.base_url,
                    &sign_up.subscriber.name,
                ),
            },
            message_stream: settings.message_stream.clone(),
            delivery: None,
            outbox_id: None,
            // Asked for by the person: nothing to unsubscribe from yet.
            unsubscribe: None,
        })
        .collect();
    if !emails.is_empty() {
        outbox.enqueue(transaction, emails).await?;
    }
    if !joined.confirmed.is_empty() {
        welcome::queue_for(
            transaction,
            outbox,
            &settings.letterhead(),
            &joined.confirmed,
        )
        .await?;
    }

    // `known` has an entry per sign-up that was not suppressed, in order.
    let mut known = known.into_iter();
    Ok(sign_ups
        .iter()
        .map(|sign_up| {
            let suppressed = is_suppressed(sign_up);
            let known = if suppressed { None } else { known.next() };
            Stored {
                subscriber_id: known.as_ref().and_then(needs_confirmation),
                suppressed,
            }
        })
        .collect())
}

/// The address hashes of the batch that are on the suppression list.
async fn suppressed_addresses(
    connection: &mut PgConnection,
    sign_ups: &[SignUp],
) -> Result<HashSet<Vec<u8>>, sqlx::Error> {
    let hashes: Vec<&[u8]> = sign_ups.iter().map(|s| s.address_hash.as_slice()).collect();
    Ok(suppression::listed_among(connection, &hashes)
        .await?
        .into_iter()
        .collect())
}
