//! `PATCH /api/v1/subscribers/{id}` (write): a subscriber's attributes,
//! through the admin form's own store function, and their lists: joined by
//! the sign-up's rules, left through the one leaving function.

use actix_web::{HttpRequest, HttpResponse, web};
use uuid::Uuid;

use crate::admin::audit;
use crate::admin::audit::Action;
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::{FieldError, Problem};
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::{NewSubscriber, SubscriberEmail, SubscriberName};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::signups::Signups;
use crate::subscribers::attributes::Written;
use crate::subscribers::attributes::{self};
use crate::subscribers::leaving::{self, Left};
use crate::subscribers::memberships::Join;
use crate::subscribers::welcome::Welcomer;
use crate::subscribers::{lists, memberships, record};
use crate::web::error::DatabaseStep;

use super::{SubscriberBody, SubscriberDetail, missing, read_detail, subscriber_id};

/// A change to a subscriber: their attributes and their lists. Only what
/// is sent changes.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "attributes": {"city": "Oslo", "plan": null},
    "lists": {"add": ["0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f"], "remove": []}
}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct SubscriberChange {
    /// Values by attribute name, each checked against its definition as
    /// the admin's form checks it: text, a number, `true`/`false`, or a
    /// date `YYYY-MM-DD`; null or `""` removes the value. Attributes not
    /// named keep theirs.
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
    lists: Option<ListsChange>,
}

/// Lists to put the reader on and to take them off.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct ListsChange {
    /// Ids of live lists to join, at most 50, as a sign-up joins them: at
    /// once for a confirmed address on a list without double opt-in (with
    /// the list's welcome), otherwise pending, with a confirmation email.
    /// A list the reader left waits for their confirmation again.
    #[schema(max_items = 50)]
    add: Option<Vec<Uuid>>,
    /// Ids of lists to leave, at most 50. Leaving the last list the reader
    /// is on unsubscribes them, as the one-click link does.
    #[schema(max_items = 50)]
    remove: Option<Vec<Uuid>>,
}

/// A parsed [`SubscriberChange`].
struct Change {
    /// `(attribute, text)` as the admin's form sends them: empty removes.
    attributes: Vec<(String, String)>,
    add: Vec<Uuid>,
    remove: Vec<Uuid>,
}

/// An attribute's name as a refusal shows it: no control characters, and
/// short (a real name is at most 63 characters).
fn shown_name(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn parse_change(body: &[u8]) -> Result<Change, Problem> {
    let mut fields = Fields::parse(body)?;
    let mut attributes = Vec::new();
    if let Some(values) = fields.object("attributes") {
        if values.len() > attributes::MAX_DEFINITIONS as usize {
            fields.refuse(
                "attributes",
                format!("At most {} attributes exist.", attributes::MAX_DEFINITIONS),
            );
        }
        for (name, value) in values.iter().take(attributes::MAX_DEFINITIONS as usize) {
            let text = match value {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Bool(yes) => yes.to_string(),
                serde_json::Value::Number(number) => number.to_string(),
                _ => {
                    fields.refuse(
                        &format!("attributes.{}", shown_name(name)),
                        "A value is text, a number, true or false, or null to remove it.",
                    );
                    continue;
                }
            };
            attributes.push((name.clone(), text));
        }
    }
    let (add, remove) = match fields.object("lists") {
        None => (Vec::new(), Vec::new()),
        Some(lists) => {
            let mut inner = Fields::of(lists);
            let add = inner.list_ids("add");
            let remove = inner.list_ids("remove");
            if add.iter().any(|id| remove.contains(id)) {
                inner.refuse("remove", "A list cannot be both joined and left.");
            }
            fields.adopt("lists", inner);
            (add, remove)
        }
    };
    fields.finish()?;
    Ok(Change {
        attributes,
        add,
        remove,
    })
}

/// What a change did, for the answer and the log.
enum Changed {
    Done {
        detail: SubscriberDetail,
        /// Lists the reader was left pending on: they need a confirmation.
        pending: Vec<Uuid>,
        summary: String,
    },
    Refused(Problem),
    Missing,
}

#[utoipa::path(patch, path = "/api/v1/subscribers/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    request_body(content = SubscriberChange, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed: the subscriber as they are now.", body = SubscriberDetail, content_type = "application/json"),
        crate::api::openapi::WriteOneRefusals,
    ))]
#[allow(clippy::too_many_arguments)] // Each is a piece of shared state the change uses.
pub async fn update_subscriber(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    body: web::Bytes,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    welcomer: web::Data<Welcomer>,
    signups: web::Data<Signups>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = subscriber_id(&id)?;
    let change = parse_change(&body)?;
    let budget = if change.add.is_empty() {
        None
    } else {
        Some(charge_for_joining(&request, &token, &db, id).await?)
    };
    let actor = token.actor(&request);
    let changed = db
        .transaction(async |tx| {
            let changed = change_subscriber(tx, &keys, &welcomer, id, &change).await?;
            if let Changed::Done { summary, .. } = &changed {
                let detail = format!("subscriber {id}: {summary}");
                audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
            }
            Ok(changed)
        })
        .await
        .step("change a subscriber")?;
    let (detail, pending) = match changed {
        Changed::Done {
            detail, pending, ..
        } => (detail, pending),
        Changed::Refused(problem) => return Err(problem),
        Changed::Missing => return Err(missing()),
    };
    if let Some(Some((email, decision))) = budget
        && !pending.is_empty()
    {
        ask_to_confirm(
            &request,
            &signups,
            &detail.subscriber,
            email,
            decision,
            pending,
        )
        .await?;
    }
    Ok(HttpResponse::Ok().json(detail))
}

/// The change's steps, in the caller's transaction, with the reader's row
/// locked throughout: attributes, lists joined, lists left (after joining,
/// so that swapping one list for another is not leaving the last one).
async fn change_subscriber(
    tx: &mut crate::db::Transaction<'_>,
    keys: &Keys,
    welcomer: &Welcomer,
    id: Uuid,
    change: &Change,
) -> Result<Changed, sqlx::Error> {
    // The tokens, then the subscriber, as every change to both takes them.
    record::lock_tokens(tx, id).await?;
    let Some(subscriber) = record::lock(tx, id).await? else {
        return Ok(Changed::Missing);
    };
    if !change.add.is_empty() && lists::live_among(tx, &change.add).await?.len() != change.add.len()
    {
        let reason = "One of these lists does not exist or is archived.";
        return Ok(Changed::Refused(Problem::invalid("lists.add", reason)));
    }
    if !change.remove.is_empty()
        && lists::names(tx, &change.remove).await?.len() != change.remove.len()
    {
        let reason = "One of these lists does not exist.";
        return Ok(Changed::Refused(Problem::invalid("lists.remove", reason)));
    }
    let mut summary = Vec::new();
    if !change.attributes.is_empty() {
        match attributes::set(tx, id, &change.attributes).await? {
            Written::Done(changes) => summary.push(changes.summary()),
            Written::Missing => return Ok(Changed::Missing),
            Written::Refused(errors) => {
                let errors = errors
                    .into_iter()
                    .map(|e| {
                        FieldError::new(&format!("attributes.{}", shown_name(&e.name)), e.reason)
                    })
                    .collect();
                return Ok(Changed::Refused(Problem::Invalid(errors)));
            }
        }
    }
    let mut pending = Vec::new();
    if !change.add.is_empty() {
        let address_confirmed = subscriber.status == "confirmed";
        let joins: Vec<Join> = change
            .add
            .iter()
            .map(|&list| Join {
                subscriber_id: id,
                list_id: Some(list),
                address_confirmed,
            })
            .collect();
        let joined = memberships::join(tx, &joins).await?;
        welcomer.queue_for(tx, &joined.confirmed).await?;
        pending = joined.pending.iter().map(|p| p.list_id).collect();
        summary.push(format!(
            "joined {} lists, {} of them pending",
            joined.confirmed.len() + pending.len(),
            pending.len()
        ));
    }
    if !change.remove.is_empty() {
        match leaving::leave(tx, keys, id, Some(&change.remove)).await? {
            Left::Nobody => return Ok(Changed::Missing),
            Left::Lists { .. } => summary.push(format!("left {} lists", change.remove.len())),
            Left::Everything { .. } => summary.push("left their last list: unsubscribed".into()),
        }
    }
    let Some(detail) = read_detail(tx, id).await? else {
        return Ok(Changed::Missing);
    };
    let summary = if summary.is_empty() {
        "nothing changed".to_owned()
    } else {
        summary.join("; ")
    };
    Ok(Changed::Done {
        detail,
        pending,
        summary,
    })
}

/// Charges the token's sign-up budget, and the reader's address, for a
/// change that joins lists, before anything is written: joining may send a
/// confirmation, and a token over its budget is refused (429) with nothing
/// changed, rather than after a commit it could not tell from a failure.
/// A join that sends nothing stays charged, as a sign-up of a suppressed
/// address does. `None` for an address stored before today's rules, which
/// is sent nothing.
async fn charge_for_joining(
    request: &HttpRequest,
    token: &ApiToken,
    db: &Db,
    id: Uuid,
) -> Result<Option<(SubscriberEmail, SubscriptionDecision)>, Problem> {
    let address = db
        .transaction(async |tx| record::address_of(tx, id).await)
        .await
        .step("read the subscriber's address")?
        .ok_or_else(missing)?;
    let Ok(email) = SubscriberEmail::parse(&address) else {
        tracing::warn!(subscriber_id = %id, "No confirmation for an address stored before today's rules");
        return Ok(None);
    };
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data");
    match limiter.check_api_signup(token.token().id, &email).await {
        SubscriptionDecision::IpLimited { retry_after } => {
            Err(Problem::TooManyRequests(retry_after))
        }
        decision => Ok(Some((email, decision))),
    }
}

/// Sends the confirmation for the lists a change left the reader pending
/// on, through the sign-up's own path (a token naming those lists, the
/// email, in one transaction), as the address's limit decided
/// ([`charge_for_joining`]). After the change's commit: the memberships
/// stand either way, and a confirmation that could not be sent now goes
/// out when the same lists are joined again, or with the reader's next
/// sign-up.
async fn ask_to_confirm(
    request: &HttpRequest,
    signups: &Signups,
    subscriber: &SubscriberBody,
    email: SubscriberEmail,
    decision: SubscriptionDecision,
    lists: Vec<Uuid>,
) -> Result<(), Problem> {
    let Ok(name) = SubscriberName::parse(&subscriber.name) else {
        tracing::warn!(subscriber_id = %subscriber.id, "No confirmation for a name stored before today's rules");
        return Ok(());
    };
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data");
    let metrics = request
        .app_data::<web::Data<Metrics>>()
        .expect("the metrics are registered as app data");
    signups
        .store_within_limit(
            limiter,
            metrics,
            decision,
            NewSubscriber { email, name, lists },
        )
        .await
        .step("ask the reader to confirm their lists")?;
    Ok(())
}
