//! `POST /admin/subscribers/{id}/erase`: forgets a subscriber, for a
//! request to be erased.
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
//!   and the subscriber row itself;
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
//! The form must carry the subscriber's address, typed again: the one
//! thing here that cannot be undone should not be one click away.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::list::ERASED_PATH;
use super::page::{missing, render};
use super::paths::parse_subscriber_id;
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::campaigns::ledger;
use crate::db::Db;
use crate::delivery::inbox;
use crate::domain::Mentions;
use crate::keys::Keys;
use crate::outbox;
use crate::outgoing_webhooks::deliveries;
use crate::outgoing_webhooks::events::{self as outgoing, Event};
use crate::rate_limit::RateLimiter;
use crate::subscribers::history;
use crate::subscribers::record::{self, Subscriber};
use crate::subscribers::suppression;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};
use crate::webhooks;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EraseForm {
    /// The subscriber's address, typed by the admin to confirm.
    #[serde(default)]
    confirm_address: String,
}

/// How an erasure went.
enum Outcome {
    /// Gone; whether a hash of the address stays on the suppression list.
    Erased {
        hash_kept: bool,
    },
    /// The typed address was not theirs: nothing was done.
    NotConfirmed,
    Missing,
}

#[utoipa::path(post, path = "/admin/subscribers/{id}/erase", tag = "admin",
    params(("id" = String, Path, description = "The subscriber's id.")),
    request_body(content = inline(EraseForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Erased: to the list.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such subscriber.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "The typed address is not theirs: nothing was erased.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn erase_subscriber(
    request: HttpRequest,
    form: Protected<EraseForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let Some(id) = parse_subscriber_id(&id) else {
        return Ok(missing(&admin, true));
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match erase(&db, &keys, &actor, id, &form.confirm_address).await? {
        Outcome::Erased { .. } => Ok(see_other(ERASED_PATH)),
        Outcome::Missing => Ok(missing(&admin, false)),
        Outcome::NotConfirmed => refuse(&db, &keys, &admin, id).await,
    }
}

async fn refuse(
    db: &Db,
    keys: &Keys,
    admin: &SignedIn,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    let reason = "Nothing was erased: to confirm, type the subscriber's address exactly as it \
                  is shown.";
    render(
        db,
        keys,
        admin,
        id,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(reason.into()),
    )
    .await
}

#[tracing::instrument(name = "Erase a subscriber", skip(db, keys, actor, typed))]
async fn erase(
    db: &Db,
    keys: &Keys,
    actor: &Actor,
    id: Uuid,
    typed: &str,
) -> Result<Outcome, ApiError> {
    let outcome = db
        .transaction(async |tx| {
            // The tokens before the subscriber: a confirmation locks its
            // token, then the subscriber, and the two must take their locks
            // in one order or they deadlock.
            record::lock_tokens(tx, id).await?;
            let Some(subscriber) = record::lock(tx, id).await? else {
                return Ok(Outcome::Missing);
            };
            if !confirms(typed, &subscriber.email) {
                return Ok(Outcome::NotConfirmed);
            }
            let hash_kept =
                suppression::keep_only_the_hash(tx, keys, &subscriber.email, subscriber.left_at())
                    .await?;
            delete_personal_data(tx, keys, &subscriber).await?;
            ledger::erase_details_of(tx, subscriber.id).await?;
            history::remember_departure(tx, keys, &subscriber.email).await?;
            let mentions = Mentions::of(&subscriber.email, &subscriber.name);
            let cut = audit::erase_mentions(tx, &mentions).await?;
            // The id alone: the log outlives the erasure.
            let mut detail = format!("subscriber {id}");
            if hash_kept {
                detail.push_str("; the address stays on the suppression list as a hash");
            }
            if cut > 0 {
                detail.push_str(&format!("; mentions of them cut from {cut} audit entries"));
            }
            audit::record(tx, actor, Action::SubscriberErased, &detail).await?;
            Ok(Outcome::Erased { hash_kept })
        })
        .await
        .step("erase the subscriber")?;
    if let Outcome::Erased { hash_kept } = outcome {
        tracing::info!(%id, hash_kept, "Subscriber erased");
    }
    Ok(outcome)
}

/// Whether the admin typed the subscriber's address. Letter case and the
/// spaces around it do not matter: sign-up treats addresses the same way.
fn confirms(typed: &str, address: &str) -> bool {
    let typed = typed.trim();
    !typed.is_empty() && typed.to_lowercase() == address.to_lowercase()
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
    // Outgoing webhooks about them that hold their address lose it, sent
    // or not: a receiver gets the event late and without the address
    // rather than the address after the erasure.
    deliveries::forget_subscriber(&mut *conn, subscriber.id).await?;
    record::delete(&mut *conn, subscriber.id).await?;
    outgoing::emit(conn, &[Event::subscriber_erased(subscriber.id)]).await
}

#[cfg(test)]
mod tests {
    use super::confirms;

    #[test]
    fn only_the_subscribers_own_address_confirms_an_erasure() {
        assert!(confirms("ada@example.com", "ada@example.com"));
        assert!(confirms("  Ada@Example.COM ", "ada@example.com"));
        assert!(!confirms("", "ada@example.com"));
        assert!(!confirms("yes", "ada@example.com"));
        assert!(!confirms("ada@example.co", "ada@example.com"));
    }
}
