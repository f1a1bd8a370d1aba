//! `GET /api/v1/subscribers` (read): the subscribers, newest first, a page
//! at a time, through the admin directory's own queries
//! ([`crate::subscribers::directory`]): the same search, status and list
//! filters, the same keyset cursor. `GET /api/v1/subscribers/{id}` (read):
//! one subscriber, with their lists. `POST /api/v1/subscribers` (write):
//! signs a reader up through the form's own path, double opt-in: they are
//! on no list until they confirm by email. `DELETE
//! /api/v1/subscribers/{id}` (write): the admin page's erasure, through the
//! same store function. `POST /api/v1/subscribers/{id}/unsubscribe`
//! (write): off some lists or everything, as the one-click link of an
//! issue does it.
//!
//! A page's `next` is the cursor of its last row, given only when more
//! rows follow (one row more than the page is read to know): a client
//! walks until `next` is null, and sign-ups arriving meanwhile neither
//! shift rows between pages nor repeat one.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admin::audit;
use crate::admin::audit::Action;
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::{FieldError, Problem};
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::{ConsentSource, NewSubscriber, SubscriberEmail, SubscriberName};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::signups::Signups;
use crate::subscribers::attributes::Written;
use crate::subscribers::attributes::{self, Values};
use crate::subscribers::directory::{self, Cursor, Row, Selection};
use crate::subscribers::erasure::{self, Erasure};
use crate::subscribers::leaving::{self, Left};
use crate::subscribers::memberships::Join;
use crate::subscribers::segments::{self, Filter, FilterSpec};
use crate::subscribers::sign_ups::{self, Attested};
use crate::subscribers::welcome::Welcomer;
use crate::subscribers::{lists, memberships, record};
use crate::web::error::DatabaseStep;

/// The page size when `limit` is not given, and the largest one.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 500;

/// A subscriber as the API shows them.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "5f0c3e1a-8d2b-4c6e-9a7f-1b2c3d4e5f60",
    "email": "ursula@example.com",
    "name": "Ursula Le Guin",
    "status": "confirmed",
    "subscribed_at": "2027-01-14T09:00:00Z",
    "confirmed_at": "2027-01-14T09:05:00Z",
    "attributes": {"city": "Portland"}
}))]
pub struct SubscriberBody {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// `pending_confirmation`, `confirmed` or `unsubscribed`; with a `list`
    /// filter, the status on that list.
    pub status: String,
    pub subscribed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Their custom attributes' values, by attribute name.
    #[schema(value_type = Object)]
    pub attributes: Values,
}

impl From<Row> for SubscriberBody {
    fn from(row: Row) -> Self {
        SubscriberBody {
            id: row.id,
            email: row.email,
            name: row.name,
            status: row.status,
            subscribed_at: row.subscribed_at,
            confirmed_at: row.confirmed_at,
            attributes: row.attributes.0,
        }
    }
}

/// A page of subscribers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriberPage {
    pub data: Vec<SubscriberBody>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(example = "1768381200000000_5f0c3e1a-8d2b-4c6e-9a7f-1b2c3d4e5f60")]
    pub next: Option<String>,
}

/// A reader's place on one list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MembershipBody {
    pub list_id: Uuid,
    pub list_name: String,
    /// `pending`, `confirmed` or `unsubscribed`.
    pub status: String,
    pub joined_at: DateTime<Utc>,
}

/// One subscriber, with the lists they are or were on.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SubscriberDetail {
    #[serde(flatten)]
    pub subscriber: SubscriberBody,
    pub lists: Vec<MembershipBody>,
}

/// The query of `GET /api/v1/subscribers`, as sent: each is parsed with
/// its own reason, so that a refusal names the parameter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParameters {
    /// The `next` of the page before; absent for the first page.
    after: Option<String>,
    /// Rows on the page, 1 to 500; 100 when absent.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Only the readers of this list (its id).
    #[param(value_type = Option<Uuid>)]
    list: Option<String>,
    /// `pending_confirmation`, `confirmed` or `unsubscribed` (on the list,
    /// with `list`).
    status: Option<String>,
    /// Part of an address or a name, at least 3 characters.
    q: Option<String>,
    /// Only the readers a saved segment matches (its id).
    #[param(value_type = Option<Uuid>)]
    segment: Option<String>,
    /// Only the readers this filter matches: JSON in the segments' own
    /// format, e.g. `{"all": [{"attribute": {"name": "plan", "op": "eq",
    /// "value": "pro"}}]}`. With `segment`, readers must match both.
    filter: Option<String>,
}

/// What a page is of, parsed.
struct PageQuery {
    selection: Selection,
    after: Option<Cursor>,
    limit: i64,
    segment: Option<Uuid>,
    filter: Option<FilterSpec>,
}

fn parse_query(raw: &str) -> Result<PageQuery, Problem> {
    let parameters: PageParameters = serde_urlencoded::from_str(raw)
        .map_err(|e| Problem::BadRequest(format!("The query string could not be read: {e}.")))?;
    let mut errors = Vec::new();
    let limit = match parameters.limit.as_deref().map(str::trim) {
        None | Some("") => Some(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("`limit` is a whole number from 1 to {MAX_LIMIT}."),
                ));
                None
            }
        },
    };
    let after = match parameters.after.as_deref() {
        None | Some("") => None,
        Some(raw) => Cursor::parse(raw)
            .map_err(|_| {
                errors.push(FieldError::new(
                    "after",
                    "`after` is not a cursor: pass the `next` of the page before.",
                ))
            })
            .ok(),
    };
    let selection = Selection::parse(
        parameters.q.as_deref().unwrap_or(""),
        parameters.status.as_deref().unwrap_or(""),
        parameters.list.as_deref().unwrap_or(""),
    );
    // The selection's reasons name no parameter: tell which by what it
    // says, trying each alone.
    let selection = match selection {
        Ok(selection) => Some(selection),
        Err(reason) => {
            let culprit = if Selection::parse("", "", parameters.list.as_deref().unwrap_or(""))
                .is_err()
            {
                "list"
            } else if Selection::parse("", parameters.status.as_deref().unwrap_or(""), "").is_err()
            {
                "status"
            } else {
                "q"
            };
            errors.push(FieldError::new(culprit, reason));
            None
        }
    };
    let segment = match parameters.segment.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Uuid::try_parse(raw)
            .map_err(|_| {
                errors.push(FieldError::new(
                    "segment",
                    "`segment` is not a segment's id.",
                ))
            })
            .ok(),
    };
    let filter = match parameters.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => FilterSpec::from_json(raw)
            .map_err(|reason| errors.push(FieldError::new("filter", reason.to_string())))
            .ok(),
    };
    match (selection, limit, errors.is_empty()) {
        (Some(selection), Some(limit), true) => Ok(PageQuery {
            selection,
            after,
            limit,
            segment,
            filter,
        }),
        _ => Err(Problem::Invalid(errors)),
    }
}

#[utoipa::path(get, path = "/api/v1/subscribers", tag = "api",
    security(("bearer" = [])),
    params(PageParameters),
    responses(
        (status = 200, description = "A page of subscribers, newest first.", body = SubscriberPage, content_type = "application/json"),
        crate::api::openapi::ReadPageRefusals,
    ))]
pub async fn list_subscribers(
    request: HttpRequest,
    token: ApiToken,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let query = parse_query(request.query_string())?;
    let mut rows = db
        .transaction(async |tx| {
            if let Some(list) = query.selection.list()
                && lists::find(tx, list).await?.is_none()
            {
                return Ok(Err(Problem::invalid("list", "No list has this id.")));
            }
            let filter = match narrowing(tx, &query).await? {
                Ok(filter) => filter,
                Err(refused) => return Ok(Err(refused)),
            };
            let (after, limit) = (query.after, query.limit + 1);
            Ok(Ok(match filter {
                None => directory::page(tx, &query.selection, after, limit).await?,
                Some(filter) => {
                    directory::page_matching(tx, &query.selection, &filter, after, limit).await?
                }
            }))
        })
        .await
        .step("read a page of subscribers")??;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let next = more
        .then(|| rows.last().map(|row| row.cursor().encode()))
        .flatten();
    Ok(HttpResponse::Ok().json(SubscriberPage {
        data: rows.into_iter().map(SubscriberBody::from).collect(),
        next,
    }))
}

/// The segment's and the query's filters as one, checked against the
/// lists, attributes and imports of now, as the segment pages check them;
/// `None` when the query names neither. A refusal names the parameter.
async fn narrowing(
    tx: &mut sqlx::PgConnection,
    query: &PageQuery,
) -> Result<Result<Option<Filter>, Problem>, sqlx::Error> {
    if query.segment.is_none() && query.filter.is_none() {
        return Ok(Ok(None));
    }
    let imports = crate::imports::store::known(&mut *tx).await?;
    let catalogue = segments::catalogue(&mut *tx, imports).await?;
    let mut filters = Vec::new();
    if let Some(id) = query.segment {
        let Some(segment) = segments::store::find(&mut *tx, id).await? else {
            return Ok(Err(Problem::invalid("segment", "No segment has this id.")));
        };
        match Filter::parse(&segment.filter, &catalogue) {
            Ok(filter) => filters.push(filter),
            Err(reason) => {
                return Ok(Err(Problem::invalid(
                    "segment",
                    format!("The segment no longer fits the lists and attributes: {reason}"),
                )));
            }
        }
    }
    if let Some(spec) = &query.filter {
        match Filter::parse(spec, &catalogue) {
            Ok(filter) => filters.push(filter),
            Err(reason) => return Ok(Err(Problem::invalid("filter", reason.to_string()))),
        }
    }
    Ok(Ok(Some(Filter::All(filters))))
}

#[utoipa::path(get, path = "/api/v1/subscribers/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    responses(
        (status = 200, description = "The subscriber and their lists.", body = SubscriberDetail, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_subscriber(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = subscriber_id(&id)?;
    let found = db
        .transaction(async |tx| read_detail(tx, id).await)
        .await
        .step("read a subscriber")?;
    Ok(HttpResponse::Ok().json(found.ok_or_else(missing)?))
}

fn missing() -> Problem {
    Problem::NotFound("No subscriber has this id.".into())
}

/// A subscriber id from the path: anything that is not one names nobody.
fn subscriber_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| missing())
}

/// The subscriber as the API shows one, with their lists; `None` when no
/// subscriber has the id.
async fn read_detail(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<SubscriberDetail>, sqlx::Error> {
    let Some(subscriber) = record::find(tx, id).await? else {
        return Ok(None);
    };
    let values = attributes::of_subscriber(tx, id).await?.unwrap_or_default();
    let lists = memberships::of_subscriber(tx, id).await?;
    Ok(Some(SubscriberDetail {
        subscriber: SubscriberBody {
            id: subscriber.id,
            email: subscriber.email,
            name: subscriber.name,
            status: subscriber.status,
            subscribed_at: subscriber.subscribed_at,
            confirmed_at: subscriber.confirmed_at,
            attributes: values,
        },
        lists: lists
            .into_iter()
            .map(|m| MembershipBody {
                list_id: m.list_id,
                list_name: m.list_name,
                status: m.status,
                joined_at: m.joined_at,
            })
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/api/v1/subscribers/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    responses(
        (status = 204, description = "Erased, as from the admin's page: nothing holds their address or name any more, but the keyed hashes that keep a suppressed or departed address from being mailed again."),
        crate::api::openapi::EraseRefusals,
    ))]
pub async fn erase_subscriber(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = subscriber_id(&id)?;
    let actor = token.actor(&request);
    // The request is the confirmation: a program has no address to type.
    let outcome = db
        .transaction(async |tx| erasure::erase(tx, &keys, &actor, id, |_| true).await)
        .await
        .step("erase the subscriber")?;
    match outcome {
        Erasure::Erased { hash_kept } => {
            tracing::info!(%id, hash_kept, "Subscriber erased");
            Ok(HttpResponse::NoContent().finish())
        }
        Erasure::Missing | Erasure::NotConfirmed => Err(missing()),
    }
}

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
            let add = parse_list_ids(&mut inner, "add");
            let remove = parse_list_ids(&mut inner, "remove");
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
    if !pending.is_empty() {
        ask_to_confirm(&request, &token, &signups, &detail.subscriber, pending).await?;
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

/// Sends the confirmation for the lists a change left the reader pending
/// on, through the sign-up's own path (a token naming those lists, the
/// email, in one transaction) and within the token's sign-up budget, which
/// bounds what a leaked token can send. After the change's commit: the
/// memberships stand either way, and a confirmation that could not be
/// sent now goes out with the reader's next sign-up.
async fn ask_to_confirm(
    request: &HttpRequest,
    token: &ApiToken,
    signups: &Signups,
    subscriber: &SubscriberBody,
    lists: Vec<Uuid>,
) -> Result<(), Problem> {
    let (Ok(email), Ok(name)) = (
        SubscriberEmail::parse(&subscriber.email),
        SubscriberName::parse(&subscriber.name),
    ) else {
        // Stored before today's rules: no email to a doubtful address.
        tracing::warn!(subscriber_id = %subscriber.id, "No confirmation for an address stored before today's rules");
        return Ok(());
    };
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data");
    let metrics = request
        .app_data::<web::Data<Metrics>>()
        .expect("the metrics are registered as app data");
    let decision = limiter.check_api_signup(token.token().id, &email).await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(Problem::TooManyRequests(retry_after));
    }
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

/// What to unsubscribe from.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"lists": ["0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f"]}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct Unsubscription {
    /// The ids of the lists to leave, at least one; leaving the last list
    /// the reader is on unsubscribes them. Absent (or an empty body):
    /// everything.
    #[schema(max_items = 50)]
    lists: Option<Vec<Uuid>>,
}

#[utoipa::path(post, path = "/api/v1/subscribers/{id}/unsubscribe", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    request_body(content = Option<Unsubscription>, content_type = "application/json"),
    responses(
        (status = 200, description = "Off the lists asked, or off everything: the subscriber as they are now.", body = SubscriberDetail, content_type = "application/json"),
        crate::api::openapi::WriteOneRefusals,
    ))]
pub async fn unsubscribe(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    body: web::Bytes,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = subscriber_id(&id)?;
    let lists = parse_unsubscription(&body)?;
    let actor = token.actor(&request);
    let done = db
        .transaction(async |tx| {
            if let Some(lists) = &lists
                && lists::names(tx, lists).await?.len() != lists.len()
            {
                return Ok(Err(Problem::invalid(
                    "lists",
                    "No list has one of these ids.",
                )));
            }
            let detail = match leaving::leave(tx, &keys, id, lists.as_deref()).await? {
                Left::Nobody => return Ok(Err(missing())),
                Left::Lists { .. } => format!(
                    "subscriber {id} left {} lists",
                    lists.as_ref().map_or(0, Vec::len)
                ),
                Left::Everything { .. } => format!("subscriber {id} unsubscribed from everything"),
            };
            audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
            Ok(Ok(read_detail(tx, id).await?))
        })
        .await
        .step("unsubscribe a subscriber")??;
    Ok(HttpResponse::Ok().json(done.ok_or_else(missing)?))
}

/// The lists to leave; `None` for everything.
fn parse_unsubscription(body: &[u8]) -> Result<Option<Vec<Uuid>>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut fields = Fields::parse(body)?;
    let given = fields.present("lists");
    let lists = parse_list_ids(&mut fields, "lists");
    // An empty array, not one refused already for what it holds.
    if given && lists.is_empty() && !fields.has_refusals() {
        fields.refuse(
            "lists",
            "Name at least one list, or leave `lists` out to unsubscribe from everything.",
        );
    }
    fields.finish()?;
    Ok(given.then_some(lists))
}

/// An array of list ids, each once, at most [`MAX_LISTS`]; each refusal
/// recorded under `name`.
fn parse_list_ids(fields: &mut Fields, name: &str) -> Vec<Uuid> {
    let raw_lists = fields.strings(name);
    if raw_lists.len() > MAX_LISTS {
        fields.refuse(name, format!("At most {MAX_LISTS} lists at once."));
        return Vec::new();
    }
    let mut lists: Vec<Uuid> = Vec::new();
    for raw in &raw_lists {
        match Uuid::try_parse(raw.trim()) {
            Ok(id) if !lists.contains(&id) => lists.push(id),
            Ok(_) => {}
            Err(_) => {
                let shown: String = raw.chars().take(40).filter(|c| !c.is_control()).collect();
                fields.refuse(name, format!("`{shown}` is not a list's id."));
                break;
            }
        }
    }
    lists
}

/// At most this many lists in one sign-up, as on the form.
const MAX_LISTS: usize = 50;

/// A sign-up. `email` and `name` are required.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"email": "ursula@example.com", "name": "Ursula", "lists": []}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct NewSignUp {
    /// The reader's address.
    #[schema(format = Email)]
    email: String,
    /// The reader's name, 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    name: String,
    /// The ids of public, live lists to join, at most 50; none for the
    /// default list.
    #[schema(max_items = 50)]
    lists: Option<Vec<Uuid>>,
    /// Where the reader's consent came from, as the token's owner attests
    /// it ("signed up at our stand, 2027-01-14"), 1 to 500 characters.
    /// With it, the reader is added confirmed at once, on any live lists
    /// named (private ones too), with no confirmation email, as an
    /// attested import adds them; the attestation is kept in the audit
    /// log. Without it, the form's double opt-in.
    #[schema(min_length = 1, max_length = 500)]
    consent_source: Option<String>,
}

/// What became of a sign-up.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignUpAccepted {
    /// The pending subscriber a confirmation email was sent to; null when
    /// the address was confirmed already (it gets a notice instead), is on
    /// the suppression list, or has had its share of email for now.
    pub subscriber_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/subscribers", tag = "api",
    security(("bearer" = [])),
    request_body(content = NewSignUp, content_type = "application/json"),
    responses(
        (status = 201, description = "With `consent_source`: added, confirmed, on the lists named.", body = SubscriberDetail, content_type = "application/json",
         headers(("Location" = String, description = "The subscriber's address in the API."))),
        (status = 202, description = "Accepted: the reader is asked to confirm by email, as from the form.", body = SignUpAccepted, content_type = "application/json",
         headers(("Location" = String, description = "The pending subscriber's address in the API, when `subscriber_id` is not null."))),
        crate::api::openapi::WriteRefusals,
    ))]
pub async fn create_subscriber(
    request: HttpRequest,
    token: ApiToken,
    body: web::Bytes,
    db: web::Data<Db>,
    signups: web::Data<Signups>,
    limiter: web::Data<RateLimiter>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let (new_subscriber, consent) = parse_sign_up(&body)?;
    if let Some(consent) = consent {
        return create_attested(&request, &token, &db, &limiter, new_subscriber, consent).await;
    }
    if !new_subscriber.lists.is_empty() {
        let offered = db
            .transaction(async |tx| lists::offered_among(tx, &new_subscriber.lists).await)
            .await
            .step("look up the lists chosen")?;
        if offered.len() != new_subscriber.lists.len() {
            return Err(Problem::invalid(
                "lists",
                "One of the lists is not a public, live list.",
            ));
        }
    }
    let actor = token.actor(&request);
    // The same budget as the form's for the address: a token must not be
    // a way to flood an inbox either. The token's sign-up budget stands in
    // for the form's per-IP one, and bounds what a leaked token can send.
    let decision = limiter
        .check_api_signup(token.token().id, &new_subscriber.email)
        .await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(Problem::TooManyRequests(retry_after));
    }
    let subscriber_id = signups
        .store_within_limit(&limiter, &metrics, decision, new_subscriber)
        .await
        .step("store the sign-up")?
        .and_then(|stored| stored.subscriber_id);
    // The log outlives the reader: it names them by id, never by address.
    // Written after the sign-up's commit, not in it: sign-ups commit in
    // batches shared with the form's (`crate::signups`), a transaction this
    // request does not own, and an address over its limit or suppressed
    // commits nothing at all, yet the token's call is still recorded.
    let detail = match subscriber_id {
        Some(id) => format!("sign-up of subscriber {id}, asked to confirm"),
        None => "sign-up with no confirmation sent".to_owned(),
    };
    crate::admin::actor::record(&db, &actor, Action::ApiWrite, &detail).await?;
    let mut answer = HttpResponse::Accepted();
    if let Some(id) = subscriber_id {
        answer.insert_header(("Location", subscriber_path(id)));
    }
    Ok(answer.json(SignUpAccepted { subscriber_id }))
}

/// Where a subscriber is in the API.
fn subscriber_path(id: Uuid) -> String {
    format!("/api/v1/subscribers/{id}")
}

/// Adds a confirmed subscriber on the token's attestation of their
/// consent ([`sign_ups::add_attested`]), with their lists' welcomes, and
/// the attestation in the audit log, in one transaction. The token's
/// sign-up budget bounds how many welcomes a leaked token can send.
async fn create_attested(
    request: &HttpRequest,
    token: &ApiToken,
    db: &Db,
    limiter: &RateLimiter,
    new_subscriber: NewSubscriber,
    consent: ConsentSource,
) -> Result<HttpResponse, Problem> {
    let decision = limiter
        .check_api_signup(token.token().id, &new_subscriber.email)
        .await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(Problem::TooManyRequests(retry_after));
    }
    let keys = request
        .app_data::<web::Data<Keys>>()
        .expect("the keys are registered as app data");
    let welcomer = request
        .app_data::<web::Data<Welcomer>>()
        .expect("the welcomer is registered as app data");
    let actor = token.actor(request);
    let added = db
        .transaction(async |tx| {
            let lists = &new_subscriber.lists;
            if !lists.is_empty() && lists::live_among(tx, lists).await?.len() != lists.len() {
                let reason = "One of the lists does not exist or is archived.";
                return Ok(Err(Problem::invalid("lists", reason)));
            }
            let (id, joined) = match sign_ups::add_attested(tx, keys, &new_subscriber).await? {
                Attested::Added { id, joined } => (id, joined),
                Attested::Refused(reason) => return Ok(Err(Problem::invalid("email", reason))),
            };
            let welcomes: Vec<(Uuid, Uuid)> = joined.iter().map(|&list| (id, list)).collect();
            welcomer.queue_for(tx, &welcomes).await?;
            // By id, never by address: the log outlives the reader.
            let detail = format!(
                "subscriber {id} added confirmed on {} lists, consent attested: {}",
                joined.len(),
                consent.as_ref()
            );
            audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
            Ok(Ok(read_detail(tx, id).await?))
        })
        .await
        .step("add an attested subscriber")??
        .ok_or_else(missing)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", subscriber_path(added.subscriber.id)))
        .json(added))
}

fn parse_sign_up(body: &[u8]) -> Result<(NewSubscriber, Option<ConsentSource>), Problem> {
    let mut fields = Fields::parse(body)?;
    let email = fields
        .required_string("email")
        .and_then(|raw| fields.parsed("email", SubscriberEmail::parse(&raw)));
    let name = fields
        .required_string("name")
        .and_then(|raw| fields.parsed("name", SubscriberName::parse(&raw)));
    let lists = parse_list_ids(&mut fields, "lists");
    let consent = fields
        .string("consent_source")
        .and_then(|raw| fields.parsed("consent_source", ConsentSource::parse(&raw)));
    fields.finish()?;
    let new_subscriber = NewSubscriber {
        email: email.expect("refused when absent"),
        name: name.expect("refused when absent"),
        lists,
    };
    Ok((new_subscriber, consent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str) -> (u16, Vec<String>) {
        let Err(problem) = parse_query(query) else {
            panic!("{query} was accepted");
        };
        let names = match &problem {
            Problem::Invalid(errors) => errors.iter().map(|e| e.name.clone()).collect(),
            _ => Vec::new(),
        };
        use actix_web::ResponseError;
        (problem.status_code().as_u16(), names)
    }

    #[test]
    fn each_refused_parameter_is_named() {
        for (query, names) in [
            ("limit=0", vec!["limit"]),
            ("limit=501", vec!["limit"]),
            ("limit=ten", vec!["limit"]),
            ("after=yesterday", vec!["after"]),
            ("list=nope", vec!["list"]),
            ("status=gone", vec!["status"]),
            ("q=ab", vec!["q"]),
            ("limit=-1&after=x", vec!["limit", "after"]),
        ] {
            assert_eq!(
                refused(query),
                (422, names.iter().map(|s| s.to_string()).collect()),
                "{query}"
            );
        }
    }

    #[test]
    fn a_query_given_twice_cannot_be_read() {
        assert_eq!(refused("limit=1&limit=2").0, 400);
    }

    #[test]
    fn the_defaults_are_a_first_page_of_a_hundred() {
        let query = parse_query("").unwrap();
        assert_eq!(query.limit, DEFAULT_LIMIT);
        assert!(query.after.is_none());
        assert_eq!(parse_query("limit=500").unwrap().limit, 500);
    }
}
