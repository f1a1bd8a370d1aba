//! `/api/v1/subscribers`: the subscribers, and what a program may do to
//! them, over the subscriber store's own functions (the same the
//! newsroom's pages call):
//! - here: `GET /api/v1/subscribers` (read), the subscribers, newest
//!   first, a page at a time, through the admin directory's own queries
//!   ([`crate::subscribers::directory`]): the same search, status and list
//!   filters, the same keyset cursor, and a saved segment or a filter in
//!   the segments' format; `GET /api/v1/subscribers/{id}` (read), one
//!   subscriber with their lists;
//! - [`sign_up`]: `POST /api/v1/subscribers` (write), a sign-up by the
//!   form's path, or a confirmed addition on attested consent;
//! - [`change`]: `PATCH /api/v1/subscribers/{id}` (write), attributes and
//!   lists;
//! - [`leave`]: `POST /api/v1/subscribers/{id}/unsubscribe` and `DELETE
//!   /api/v1/subscribers/{id}` (write), leaving and erasure.
//!
//! A page's `next` is the cursor of its last row, given only when more
//! rows follow (one row more than the page is read to know): a client
//! walks until `next` is null, and sign-ups arriving meanwhile neither
//! shift rows between pages nor repeat one.

pub mod change;
pub mod leave;
pub mod sign_up;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::guard::ApiToken;
use crate::api::problem::{FieldError, Problem};
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::subscribers::attributes::{self, Values};
use crate::subscribers::directory::{self, Cursor, Row, Selection};
use crate::subscribers::segments::{self, Filter, FilterSpec};
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

/// Where a subscriber is in the API.
fn subscriber_path(id: Uuid) -> String {
    format!("/api/v1/subscribers/{id}")
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
