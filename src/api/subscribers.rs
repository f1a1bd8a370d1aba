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

use crate::admin::audit::Action;
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::{FieldError, Problem};
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::{NewSubscriber, SubscriberEmail, SubscriberName};
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::signups::Signups;
use crate::subscribers::attributes::{self, Values};
use crate::subscribers::directory::{self, Cursor, Row, Selection};
use crate::admin::audit;
use crate::keys::Keys;
use crate::subscribers::erasure::{self, Erasure};
use crate::subscribers::leaving::{self, Left};
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
}

/// What a page is of, parsed.
struct PageQuery {
    selection: Selection,
    after: Option<Cursor>,
    limit: i64,
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
    match (selection, limit, errors.is_empty()) {
        (Some(selection), Some(limit), true) => Ok(PageQuery {
            selection,
            after,
            limit,
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
    let (known_list, mut rows) = db
        .transaction(async |tx| {
            if let Some(list) = query.selection.list()
                && lists::find(tx, list).await?.is_none()
            {
                return Ok((false, Vec::new()));
            }
            let rows = directory::page(tx, &query.selection, query.after, query.limit + 1).await?;
            Ok((true, rows))
        })
        .await
        .step("read a page of subscribers")?;
    if !known_list {
        return Err(Problem::invalid("list", "No list has this id."));
    }
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
                return Ok(Err(Problem::invalid("lists", "No list has one of these ids.")));
            }
            let detail = match leaving::leave(tx, &keys, id, lists.as_deref()).await? {
                Left::Nobody => return Ok(Err(missing())),
                Left::Lists { .. } => format!("subscriber {id} left {} lists", lists.as_ref().map_or(0, Vec::len)),
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
    if given && lists.is_empty() {
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
        (status = 202, description = "Accepted: the reader is asked to confirm by email, as from the form.", body = SignUpAccepted, content_type = "application/json"),
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
    let new_subscriber = parse_sign_up(&body)?;
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
    Ok(HttpResponse::Accepted().json(SignUpAccepted { subscriber_id }))
}

fn parse_sign_up(body: &[u8]) -> Result<NewSubscriber, Problem> {
    let mut fields = Fields::parse(body)?;
    let email = fields
        .required_string("email")
        .and_then(|raw| fields.parsed("email", SubscriberEmail::parse(&raw)));
    let name = fields
        .required_string("name")
        .and_then(|raw| fields.parsed("name", SubscriberName::parse(&raw)));
    let lists = parse_list_ids(&mut fields, "lists");
    fields.finish()?;
    Ok(NewSubscriber {
        email: email.expect("refused when absent"),
        name: name.expect("refused when absent"),
        lists,
    })
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
