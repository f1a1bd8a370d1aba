//! `GET /admin/subscribers/{id}/export`: everything stored about one
//! subscriber, as a JSON file, for a request to see one's data.
//!
//! It holds what the service keeps about the person and nothing that would
//! let the file's reader act as them: confirmation links appear as their
//! times only (a token's hash is a credential), and outbox emails without
//! their bodies (an unsent one holds a live link). Who took the copy is in
//! the audit log, written in the same transaction as the reads: there is no
//! file without its entry, and no entry for a subscriber who was not there.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::page::missing;
use super::paths::parse_subscriber_id;
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::SignedIn;
use crate::campaigns::ledger;
use crate::db::Db;
use crate::keys::Keys;
use crate::outbox;
use crate::rate_limit::RateLimiter;
use crate::subscribers::attributes;
use crate::subscribers::memberships;
use crate::subscribers::record;
use crate::subscribers::suppression::{self, Suppression};
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// The file. Field names are part of what the person receives: keep them
/// plain and stable.
#[derive(Serialize, utoipa::ToSchema)]
struct SubscriberExport {
    exported_at: DateTime<Utc>,
    subscriber: SubscriberPart,
    consent: Consent,
    confirmation_tokens: Vec<record::TokenTimes>,
    deliveries: Vec<ledger::Delivery>,
    outbox_emails: Vec<outbox::store::OutboxEmail>,
    /// Absent when the address is not on the suppression list.
    suppression: Option<SuppressionPart>,
    /// Their custom attributes' values, keyed by attribute name: text and
    /// dates (`YYYY-MM-DD`) as strings, numbers, booleans.
    #[schema(value_type = Object)]
    attributes: attributes::Values,
    /// The lists they are or were on, by name.
    lists: Vec<ListPart>,
}

/// One list they are or were on: its name (the id means nothing to the
/// person reading the file), their status there (`pending`, `confirmed`
/// or `unsubscribed`) and when each step happened.
#[derive(Serialize, utoipa::ToSchema)]
struct ListPart {
    name: String,
    status: String,
    joined_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    unsubscribed_at: Option<DateTime<Utc>>,
}

impl From<memberships::Membership> for ListPart {
    fn from(membership: memberships::Membership) -> Self {
        Self {
            name: membership.list_name,
            status: membership.status,
            joined_at: membership.joined_at,
            confirmed_at: membership.confirmed_at,
            unsubscribed_at: membership.unsubscribed_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct SubscriberPart {
    id: Uuid,
    email: String,
    name: String,
    status: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Consent {
    subscribed_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    unsubscribed_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SuppressionPart {
    /// As stored (`spam_complaint`), and as the admin pages say it.
    #[schema(value_type = String)]
    reason: &'static str,
    #[schema(value_type = String)]
    reason_label: &'static str,
    detail: Option<String>,
    changed_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/admin/subscribers/{id}/export", tag = "admin",
    params(("id" = String, Path, description = "The subscriber's id.")),
    responses(
        (status = 200, description = "Everything stored about the subscriber.", body = SubscriberExport, content_type = "application/json"),
        (status = 404, description = "No such subscriber.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn export_subscriber(
    request: HttpRequest,
    admin: SignedIn,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_subscriber_id(&id) else {
        return Ok(missing(&admin, true));
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let Some(export) = read_and_record(&db, &keys, &actor, id).await? else {
        return Ok(missing(&admin, false));
    };
    let body = serde_json::to_vec_pretty(&export)
        .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e)))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(format!("subscriber-{id}.json"))],
        })
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body))
}

/// Reads every part and writes the audit entry, in one transaction.
#[tracing::instrument(name = "Export a subscriber's record", skip(db, keys, actor))]
async fn read_and_record(
    db: &Db,
    keys: &Keys,
    actor: &Actor,
    id: Uuid,
) -> Result<Option<SubscriberExport>, ApiError> {
    db.transaction(async |tx| {
        let Some(subscriber) = record::find(tx, id).await? else {
            return Ok(None);
        };
        let suppression = suppression::find(tx, keys, &subscriber.email).await?;
        let tokens = record::confirmation_tokens(tx, id).await?;
        let deliveries = ledger::deliveries(tx, id, i64::MAX).await?;
        let outbox = outbox::store::outbox_emails(tx, &subscriber.email).await?;
        let attributes = attributes::of_subscriber(tx, id).await?.unwrap_or_default();
        let lists = memberships::of_subscriber(tx, id).await?;
        audit::record(
            tx,
            actor,
            Action::SubscriberExported,
            &format!("subscriber {id}"),
        )
        .await?;
        let mut export = assemble(
            subscriber,
            suppression,
            tokens,
            deliveries,
            outbox,
            attributes,
        );
        export.lists = lists.into_iter().map(ListPart::from).collect();
        Ok(Some(export))
    })
    .await
    .step("export the subscriber")
}

fn assemble(
    subscriber: record::Subscriber,
    suppression: Option<Suppression>,
    tokens: Vec<record::TokenTimes>,
    deliveries: Vec<ledger::Delivery>,
    outbox: Vec<outbox::store::OutboxEmail>,
    attributes: attributes::Values,
) -> SubscriberExport {
    SubscriberExport {
        exported_at: Utc::now(),
        consent: Consent {
            subscribed_at: subscriber.subscribed_at,
            confirmed_at: subscriber.confirmed_at,
            unsubscribed_at: subscriber.unsubscribed_at,
        },
        subscriber: SubscriberPart {
            id: subscriber.id,
            email: subscriber.email,
            name: subscriber.name,
            status: subscriber.status,
        },
        confirmation_tokens: tokens,
        deliveries,
        outbox_emails: outbox,
        suppression: suppression.map(|s| SuppressionPart {
            reason: s.reason.as_str(),
            reason_label: s.reason.label(),
            detail: s.detail,
            changed_at: s.changed_at,
            created_at: s.created_at,
        }),
        attributes,
        lists: Vec::new(),
    }
}
