//! Erasing a subscriber, for a request to be erased: the one erasure the
//! admin's page (`POST /admin/subscribers/{id}/erase`) and the API
//! (`DELETE /api/v1/subscribers/{id}`) both run.
//!
//! Afterwards no table holds their address or name in any form (letter
//! case, the local part, the mailbox without its `+tag`, URL-encoded, inside
//! other text), except as keyed hashes: the suppression list's, and the
//! one that marks the address as having been here. One transaction, with
//! their confirmation tokens and then their row locked first (a
//! confirmation or an unsubscribe arriving meanwhile waits, then finds
//! nobody):
//! * deletes what holds their address or points at them: their
//!   confirmation tokens, the outbox emails addressed to them (bodies,
//!   personalisation and errors with them), the local inbox's emails to
//!   them (local runs keep every email there), their run of soft bounces,
//!   and the subscriber row itself, whose trigger takes their address and
//!   name out of the outgoing webhook payloads about them;
//! * replaces the reasons of their deliveries in the ledger and forgets
//!   the provider's message ids (the ids of webhook records are digests
//!   over a message id and the address), and the detail
//!   of their suppression entry: the previous release wrote the provider's
//!   own words there, which often quote the address (this one writes codes
//!   and fixed text only: see [`crate::delivery::answer::Refusal`]);
//! * cuts every mention of them out of the audit log: an admin's search
//!   kept by the previous release, a failed sign-in's typed username.
//!
//! What must outlive them is kept without the address:
//! * If they unsubscribed, or the address is on the suppression list (a
//!   bounce, a complaint, the provider's own unsubscribe), the list keeps
//!   the address's keyed hash and its reason, nothing else, so that a later
//!   sign-up with it is still recognised and never mailed. Someone who
//!   never left and was never suppressed leaves no entry there: they may
//!   sign up again.
//! * The keyed hash of their mailbox goes to `former_addresses`
//!   ([`crate::subscribers::history`]): whoever signs the address up again, it
//!   is confirmed only by pressing the button, never by a link scanner
//!   opening the link.
//! * The delivery ledger keeps its rows, with their states: they hold only
//!   the subscriber id, which from now on matches nobody. A delivery still
//!   queued for them is skipped by the sender, which looks the recipient up
//!   when it sends, and the counts stay true.
//! * `webhook_records` keeps the ids of the provider's records: a number,
//!   or a digest of the record's fields, never the record itself.
//!

use sqlx::PgConnection;
use uuid::Uuid;

use crate::admin::audit::{self, Action, Actor};
use crate::campaigns::ledger;
use crate::db::Transaction;
use crate::delivery::inbox;
use crate::domain::Mentions;
use crate::keys::Keys;
use crate::outbox;
use crate::outgoing_webhooks::events::{self as outgoing, Event};
use crate::subscribers::record::{self, Subscriber};
use crate::subscribers::{history, suppression};
use crate::webhooks;

/// How an erasure went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// Gone; whether a hash of the address stays on the suppression list.
    Erased { hash_kept: bool },
    /// The caller's confirmation did not hold for them: nothing was done.
    NotConfirmed,
    /// No subscriber has the id.
    Missing,
}

/// Erases subscriber `id` in the caller's transaction, if `confirmed`
/// holds for their row (the admin's page asks for their address typed
/// again; the API's `DELETE` is its own confirmation), and writes it in
/// the audit log under `actor`. The transaction must commit for any of it
/// to stand.
#[tracing::instrument(name = "Erase a subscriber", skip(transaction, keys, actor, confirmed))]
pub async fn erase(
    transaction: &mut Transaction<'_>,
    keys: &Keys,
    actor: &Actor,
    id: Uuid,
    confirmed: impl Fn(&Subscriber) -> bool,
) -> Result<Erasure, sqlx::Error> {
    // The tokens before the subscriber: a confirmation locks its token,
    // then the subscriber, and the two must take their locks in one order
    // or they deadlock.
    record::lock_tokens(transaction, id).await?;
    let Some(subscriber) = record::lock(transaction, id).await? else {
        return Ok(Erasure::Missing);
    };
    if !confirmed(&subscriber) {
        return Ok(Erasure::NotConfirmed);
    }
    let hash_kept =
        suppression::keep_only_the_hash(transaction, keys, &subscriber.email, subscriber.left_at())
            .await?;
    delete_personal_data(transaction, keys, &subscriber).await?;
    ledger::erase_details_of(transaction, subscriber.id).await?;
    history::remember_departure(transaction, keys, &subscriber.email).await?;
    let mentions = Mentions::of(&subscriber.email, &subscriber.name);
    let cut = audit::erase_mentions(transaction, &mentions).await?;
    // The id alone: the log outlives the erasure.
    let mut detail = format!("subscriber {id}");
    if hash_kept {
        detail.push_str("; the address stays on the suppression list as a hash");
    }
    if cut > 0 {
        detail.push_str(&format!("; mentions of them cut from {cut} audit entries"));
    }
    audit::record(transaction, actor, Action::SubscriberErased, &detail).await?;
    Ok(Erasure::Erased { hash_kept })
}

/// Deletes every row that holds the subscriber's address or names them,
/// their own row last (the tokens refer to it).
async fn delete_personal_data(
    conn: &mut PgConnection,
    keys: &Keys,
    subscriber: &Subscriber,
) -> Result<(), sqlx::Error> {
    // Sent or not: an unsent confirmation would otherwise still go out,
    // and a sent one keeps the address until retention. A worker holding
    // one now finds its claim gone and changes nothing; if it sends through
    // the local inbox, the inbox's insert waits for this transaction and
    // then drops the email (see `delivery::inbox`).
    outbox::store::erase_to(&mut *conn, &subscriber.email).await?;
    inbox::erase_to(&mut *conn, &subscriber.email).await?;
    webhooks::erase_soft_bounces(&mut *conn, keys, &subscriber.email).await?;
    // Deleting the row also takes their address and name out of the
    // outgoing webhooks about them, sent or not, by a trigger (see
    // `outgoing_webhooks::deliveries`): a receiver gets an event late and
    // without the address rather than the address after the erasure. The
    // trigger, not a statement here, so that the release before this one,
    // which knows nothing of those payloads, erases them too.
    record::delete(&mut *conn, subscriber.id).await?;
    let events = [Event::subscriber_erased(subscriber.id)];
    outgoing::emit(conn, &events, record::event_data).await
}
