//! `GET /admin/subscribers/{id}`: one subscriber, as far as this service
//! knows them: their status and consent, their entry on the suppression
//! list, the lists they are on, the latest issues sent to them; and the forms to export and to
//! erase what is stored about them.
//!
//! An address that names nobody answers 404, with a page that says whether
//! the id was malformed or matches no one (erased, perhaps).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::attribute_fields::{self, Refused};
use super::paths::{issue_path, parse_subscriber_id, subscriber_path};
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::campaigns::ledger;
use crate::db::Db;
use crate::keys::Keys;
use crate::pages::page;
use crate::routes::admin::lists::list_path;
use crate::routes::admin::pages::{
    DeliveryRow, MembershipView, SubscriberMissingPage, SubscriberPage, SubscriberView,
    SuppressionView, membership_label, status_label,
};
use crate::subscribers::attributes::{self, Definition, Values};
use crate::subscribers::memberships::{self, Membership};
use crate::subscribers::record;
use crate::subscribers::suppression::{self, Suppression};
use crate::web::error::{ApiError, DatabaseStep};

/// Deliveries the page lists; the export has every one.
const DELIVERIES_SHOWN: i64 = 20;

#[utoipa::path(get, path = "/admin/subscribers/{id}", tag = "admin",
    params(("id" = String, Path, description = "The subscriber's id.")),
    responses(
        (status = 200, description = "The subscriber's page.", body = String, content_type = "text/html"),
        (status = 404, description = "No such subscriber.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn subscriber_page(
    admin: SignedIn,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_subscriber_id(&id) else {
        return Ok(missing(&admin, true));
    };
    render(&db, &keys, &admin, id, StatusCode::OK, None).await
}

/// What the page shows, read in one transaction so that its parts agree.
struct Read {
    subscriber: record::Subscriber,
    suppression: Option<Suppression>,
    lists: Vec<Membership>,
    deliveries: Vec<ledger::Delivery>,
    delivery_count: i64,
    definitions: Vec<Definition>,
    values: Values,
}

#[tracing::instrument(name = "Read a subscriber's record", skip(db, keys))]
async fn read(db: &Db, keys: &Keys, id: Uuid) -> Result<Option<Read>, ApiError> {
    db.transaction(async |tx| {
        let Some(subscriber) = record::find(tx, id).await? else {
            return Ok(None);
        };
        let suppression = suppression::find(tx, keys, &subscriber.email).await?;
        let lists = memberships::of_subscriber(tx, id).await?;
        let deliveries = ledger::deliveries(tx, id, DELIVERIES_SHOWN).await?;
        let delivery_count = ledger::delivery_count(tx, id).await?;
        let definitions = attributes::definitions(tx).await?;
        let values = attributes::of_subscriber(tx, id).await?.unwrap_or_default();
        Ok(Some(Read {
            subscriber,
            suppression,
            lists,
            deliveries,
            delivery_count,
            definitions,
            values,
        }))
    })
    .await
    .step("read the subscriber")
}

/// The subscriber's page with `status`, and why an erase was refused if one
/// was; the not-found page if they do not exist (any more).
pub(super) async fn render(
    db: &Db,
    keys: &Keys,
    admin: &SignedIn,
    id: Uuid,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, ApiError> {
    render_with(db, keys, admin, id, status, error, None).await
}

/// [`render`], with the attributes' form as typed and refused, if it was.
pub(super) async fn render_with(
    db: &Db,
    keys: &Keys,
    admin: &SignedIn,
    id: Uuid,
    status: StatusCode,
    error: Option<String>,
    refused_attributes: Option<Refused>,
) -> Result<HttpResponse, ApiError> {
    let Some(read) = read(db, keys, id).await? else {
        return Ok(missing(admin, false));
    };
    let Read {
        subscriber,
        suppression,
        lists,
        deliveries,
        delivery_count,
        definitions,
        values,
    } = read;
    let more_deliveries = delivery_count - deliveries.len() as i64;
    let (attributes, attributes_error) =
        attribute_fields::fields(definitions, &values, refused_attributes);
    Ok(page(
        status,
        &SubscriberPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            path: subscriber_path(id),
            subscriber: SubscriberView {
                status_label: status_label(&subscriber.status),
                email: subscriber.email,
                name: subscriber.name,
                status: subscriber.status,
                subscribed_at: time(Some(subscriber.subscribed_at)),
                confirmed_at: time(subscriber.confirmed_at),
                unsubscribed_at: time(subscriber.unsubscribed_at),
            },
            suppression: suppression.map(|entry| SuppressionView {
                reason: entry.reason.label(),
                detail: entry.detail.unwrap_or_default(),
                changed_at: time(Some(entry.changed_at)),
            }),
            lists: lists.into_iter().map(membership_view).collect(),
            deliveries: deliveries
                .into_iter()
                .map(|row| DeliveryRow {
                    path: issue_path(row.issue_id),
                    title: row
                        .title
                        .unwrap_or_else(|| format!("Issue {}", row.issue_id)),
                    status: row.status,
                    attempts: row.attempts,
                    last_error: row.last_error.unwrap_or_default(),
                    updated_at: time(row.updated_at),
                })
                .collect(),
            more_deliveries,
            error,
            attributes,
            attributes_error,
        },
    ))
}

fn membership_view(membership: Membership) -> MembershipView {
    MembershipView {
        path: list_path(membership.list_id),
        name: membership.list_name,
        status_label: membership_label(&membership.status),
        status: membership.status,
        joined_at: time(Some(membership.joined_at)),
        confirmed_at: time(membership.confirmed_at),
        unsubscribed_at: time(membership.unsubscribed_at),
    }
}

fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|at| at.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// 404: `malformed` when the address held no subscriber id at all.
pub(super) fn missing(admin: &SignedIn, malformed: bool) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &SubscriberMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            malformed,
        },
    )
}
