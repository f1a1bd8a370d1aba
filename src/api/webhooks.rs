//! `/api/v1/webhooks`: the outgoing webhook endpoints, as the newsroom's
//! pages manage them (`crate::routes::admin::webhooks`), through the same
//! store functions, URL check and audit actions.
//!
//! Scopes: an endpoint receives subscribers' addresses from the moment it
//! is registered, so every operation that registers, changes, enables,
//! disables or deletes one, or sends a delivery again, takes `publish`, the
//! highest. Reading endpoints and their deliveries takes `read`: what is
//! read holds neither an endpoint's secret nor a delivery's payload (a read
//! token reads subscribers' addresses through `/api/v1/subscribers` anyway).
//!
//! The secret (`whsec_…`) is in the answer that registers the endpoint and
//! in no other: the store keeps it to sign every call, and it is never
//! read back for an answer.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::audit::{self, Action};
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::configuration::OutgoingWebhookSettings;
use crate::db::Db;
use crate::outgoing_webhooks::client::EndpointUrl;
use crate::outgoing_webhooks::control;
use crate::outgoing_webhooks::deliveries::{self, Delivery};
use crate::outgoing_webhooks::endpoints::{self, Endpoint, EndpointChange, NewEndpoint};
use crate::outgoing_webhooks::events::EventType;
use crate::outgoing_webhooks::signing::Secret;
use crate::web::error::DatabaseStep;

/// Deliveries an endpoint's list shows: the page's.
const RECENT_DELIVERIES: i64 = 50;

/// An endpoint as the API shows it: never its secret.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "7d1c1f0e-2b8a-4c1e-9a57-3f9e2d6b8c10",
    "url": "https://crm.example.com/hooks/newsletter",
    "description": "CRM",
    "events": ["subscriber.confirmed", "subscriber.unsubscribed"],
    "enabled": true,
    "disabled_at": null,
    "disabled_reason": null,
    "failing_since": null,
    "created_by": "token crm sync",
    "created_at": "2027-01-20T09:00:00Z"
}))]
pub struct WebhookBody {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    /// The events sent to it, e.g. `subscriber.confirmed`.
    pub events: Vec<String>,
    /// Whether calls are made to it; a disabled endpoint's deliveries wait.
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it is disabled: by an admin, or by the service after every
    /// delivery failed for `outgoing_webhooks.disable_after_hours`.
    pub disabled_reason: Option<String>,
    /// Since when every delivery to it failed, if they do.
    pub failing_since: Option<DateTime<Utc>>,
    /// The admin's name, or `token NAME`.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<Endpoint> for WebhookBody {
    fn from(endpoint: Endpoint) -> Self {
        WebhookBody {
            id: endpoint.id,
            url: endpoint.url,
            description: endpoint.description,
            events: endpoint.events,
            enabled: endpoint.enabled,
            disabled_at: endpoint.disabled_at.filter(|_| !endpoint.enabled),
            disabled_reason: endpoint.disabled_reason.filter(|_| !endpoint.enabled),
            failing_since: endpoint.failing_since,
            created_by: endpoint.created_by,
            created_at: endpoint.created_at,
        }
    }
}

/// A new endpoint, with its secret: the only answer that holds it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "7d1c1f0e-2b8a-4c1e-9a57-3f9e2d6b8c10",
    "url": "https://crm.example.com/hooks/newsletter",
    "description": "CRM",
    "events": ["subscriber.confirmed"],
    "enabled": true,
    "disabled_at": null,
    "disabled_reason": null,
    "failing_since": null,
    "created_by": "token crm sync",
    "created_at": "2027-01-20T09:00:00Z",
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
}))]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub endpoint: WebhookBody,
    /// The key every call to the endpoint is signed with (Standard
    /// Webhooks): shown in this answer and never again.
    pub secret: String,
}

/// Every endpoint.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Webhooks {
    /// Newest first: an admin registers a handful.
    pub data: Vec<WebhookBody>,
}

/// One delivery of an event to the endpoint, without its payload.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "c1b7e1a4-5d0b-4f7e-8a2c-0e6f3b9d1a22",
    "event_id": "0f3e8f5a-9b7c-4d21-b1e0-6a5c4d3b2a19",
    "event_type": "subscriber.confirmed",
    "status": "pending",
    "attempts": 2,
    "last_code": 503,
    "last_error": "the endpoint answered 503",
    "created_at": "2027-01-20T09:00:00Z",
    "last_attempt_at": "2027-01-20T09:00:05Z",
    "next_attempt_at": "2027-01-20T09:05:05Z",
    "delivered_at": null
}))]
pub struct DeliveryBody {
    pub id: Uuid,
    /// The `webhook-id` header: the same on every attempt.
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (no attempt left).
    pub status: String,
    pub attempts: i32,
    /// The endpoint's status code at the last attempt, if it answered.
    pub last_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// `null` while the endpoint is disabled, or once the delivery is
    /// settled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        let pending = d.status == "pending";
        DeliveryBody {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            last_code: d.last_code,
            last_error: d.last_error,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            next_attempt_at: d.next_attempt_at.filter(|_| pending),
            delivered_at: d.delivered_at,
        }
    }
}

/// The endpoint's latest deliveries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookDeliveries {
    /// The 50 latest, newest first, as the endpoint's page lists them.
    pub data: Vec<DeliveryBody>,
}

fn missing() -> Problem {
    Problem::NotFound("No webhook endpoint has this id.".into())
}

/// An endpoint id from the path: anything that is not one names none.
fn endpoint_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| missing())
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "api",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "(read) Every endpoint, never its secret.", body = Webhooks, content_type = "application/json"),
        crate::api::openapi::ReadRefusals,
    ))]
pub async fn list_webhooks(token: ApiToken, db: web::Data<Db>) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let all = db
        .transaction(async |tx| endpoints::list(tx).await)
        .await
        .step("read the webhook endpoints")?;
    Ok(HttpResponse::Ok().json(Webhooks {
        data: all.into_iter().map(WebhookBody::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "(read) The endpoint, never its secret.", body = WebhookBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_webhook(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = endpoint_id(&id)?;
    let endpoint = db
        .transaction(async |tx| endpoints::find(tx, id).await)
        .await
        .step("read a webhook endpoint")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(endpoint)))
}

/// A new endpoint. `url` and `events` are required.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"url": "https://crm.example.com/hooks/newsletter", "description": "CRM", "events": ["subscriber.confirmed", "subscriber.unsubscribed"]}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct NewWebhook {
    /// http or https, up to 2000 characters, no user name or password;
    /// a loopback, private, link-local or metadata address is refused
    /// (unless `outgoing_webhooks.allow_private_addresses`), here and again
    /// on every call, on what its name resolves to then.
    #[schema(max_length = 2000)]
    url: String,
    /// Up to 200 characters, for the admin's own use. Empty when absent.
    #[schema(max_length = 200)]
    description: Option<String>,
    /// The events to send, at least one: `subscriber.created`,
    /// `subscriber.confirmed`, `subscriber.unsubscribed`,
    /// `subscriber.bounced`, `subscriber.complained`, `subscriber.erased`,
    /// `issue.published`, `issue.finished`.
    #[schema(min_items = 1)]
    events: Vec<String>,
}

/// The fields of a new endpoint or a change, parsed; each `None` when
/// absent (or refused: the refusal is in `fields`).
struct Parsed {
    url: Option<EndpointUrl>,
    description: Option<String>,
    events: Option<Vec<EventType>>,
}

fn parse_fields(fields: &mut Fields, settings: &OutgoingWebhookSettings, required: bool) -> Parsed {
    let url = if required {
        fields.required_string("url")
    } else {
        fields.string("url")
    };
    let url = url.and_then(|raw| {
        let parsed = EndpointUrl::parse(&raw, settings.allow_private_addresses);
        // The check's reasons are written to follow "the URL", as the page
        // shows them; a program reads a sentence.
        fields.parsed("url", parsed.map_err(|e| capitalised(&e.to_string())))
    });
    let description = fields.string("description").and_then(|raw| {
        let parsed = endpoints::parse_description(&raw).map(str::to_owned);
        fields.parsed("description", parsed)
    });
    let events = if required || fields.present("events") {
        let refused_before = fields.refusals();
        let raw = fields.strings("events");
        // A value of the wrong type was refused already, for that reason.
        if fields.refusals() > refused_before {
            None
        } else {
            fields.parsed("events", EventType::parse_list(&raw))
        }
    } else {
        None
    };
    Parsed {
        url,
        description,
        events,
    }
}

fn capitalised(reason: &str) -> String {
    let mut chars = reason.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "api",
    security(("bearer" = [])),
    request_body(content = NewWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "(publish: the endpoint receives subscribers' addresses from now on) Registered, enabled: the endpoint with its signing secret, shown in this answer only. `422` names `url` for a URL refused (not http(s), no host, a user name, a loopback, private or link-local address), `events` for an unknown event or none, `description` for one over 200 characters or with a control character. Audited as `webhook-endpoint-created` under the token's name, never the secret.", body = CreatedWebhook, content_type = "application/json",
         headers(("Location" = String, description = "The endpoint's address in the API."))),
        crate::api::openapi::WriteRefusals,
    ))]
pub async fn create_webhook(
    request: HttpRequest,
    token: ApiToken,
    body: web::Bytes,
    db: web::Data<Db>,
    settings: web::Data<OutgoingWebhookSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let mut fields = Fields::parse(&body)?;
    let parsed = parse_fields(&mut fields, &settings, true);
    fields.finish()?;
    let url = parsed.url.expect("refused when absent");
    let events = parsed.events.expect("refused when absent");
    let actor = token.actor(&request);
    let created_by = actor.username.clone().unwrap_or_default();
    let secret = Secret::generate().expose();
    let new = NewEndpoint {
        url: url.as_str(),
        description: parsed.description.as_deref().unwrap_or(""),
        events: &events,
        secret: &secret,
        created_by: &created_by,
    };
    let endpoint = db
        .transaction(async |tx| {
            let endpoint = endpoints::create(tx, &new).await?;
            let detail = format!(
                "endpoint {} ({}) for {}",
                endpoint.id,
                endpoint.url,
                endpoint.events.join(", ")
            );
            audit::record(tx, &actor, Action::WebhookEndpointCreated, &detail).await?;
            Ok(endpoint)
        })
        .await
        .step("register a webhook endpoint")?;
    tracing::info!(endpoint_id = %endpoint.id, "Webhook endpoint registered");
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header(("Location", format!("/api/v1/webhooks/{}", endpoint.id)))
        .json(CreatedWebhook {
            endpoint: endpoint.into(),
            secret,
        }))
}

/// A change to an endpoint: only the fields sent change. Its secret stays.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"events": ["subscriber.confirmed", "subscriber.erased"], "description": "CRM, with erasures"}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct WebhookChange {
    /// As when registering; deliveries still pending go to the new URL.
    #[schema(max_length = 2000)]
    url: Option<String>,
    /// Up to 200 characters.
    #[schema(max_length = 200)]
    description: Option<String>,
    /// The events to send from now on, at least one; deliveries queued
    /// already go as they are.
    #[schema(min_items = 1)]
    events: Option<Vec<String>>,
}

#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(content = WebhookChange, content_type = "application/json"),
    responses(
        (status = 200, description = "(publish) Changed: the endpoint as it is now, never its secret. `422` names each refused field, with the rules of registering. Audited as `webhook-endpoint-updated` under the token's name.", body = WebhookBody, content_type = "application/json"),
        crate::api::openapi::WriteOneRefusals,
    ))]
pub async fn update_webhook(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    body: web::Bytes,
    db: web::Data<Db>,
    settings: web::Data<OutgoingWebhookSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = endpoint_id(&id)?;
    let mut fields = Fields::parse(&body)?;
    let parsed = parse_fields(&mut fields, &settings, false);
    fields.finish()?;
    let change = EndpointChange {
        url: parsed.url.as_ref().map(EndpointUrl::as_str),
        description: parsed.description.as_deref(),
        events: parsed.events.as_deref(),
    };
    let actor = token.actor(&request);
    let endpoint = db
        .transaction(async |tx| {
            if change.is_empty() {
                return endpoints::find(tx, id).await;
            }
            let Some(updated) = endpoints::update(tx, id, &change).await? else {
                return Ok(None);
            };
            let detail = change.audit_detail(&updated);
            audit::record(tx, &actor, Action::WebhookEndpointUpdated, &detail).await?;
            Ok(Some(updated.endpoint))
        })
        .await
        .step("change a webhook endpoint")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(endpoint)))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 204, description = "(publish) Deleted with its deliveries: nothing more is sent to it. Audited as `webhook-endpoint-deleted` under the token's name."),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn delete_webhook(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = endpoint_id(&id)?;
    let actor = token.actor(&request);
    let deleted = db
        .transaction(async |tx| {
            let Some(endpoint) = endpoints::find(tx, id).await? else {
                return Ok(false);
            };
            if !control::delete(tx, id).await? {
                return Ok(false);
            }
            let detail = format!("endpoint {} ({})", endpoint.id, endpoint.url);
            audit::record(tx, &actor, Action::WebhookEndpointDeleted, &detail).await?;
            Ok(true)
        })
        .await
        .step("delete a webhook endpoint")?;
    if !deleted {
        return Err(missing());
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/enable", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "(publish) Enabled (or it already was), its failures forgotten, as the page's button does: what it has pending goes now. The endpoint as it is now. Audited as `webhook-endpoint-enabled` under the token's name when it was disabled.", body = WebhookBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn enable_webhook(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = endpoint_id(&id)?;
    let actor = token.actor(&request);
    let endpoint = db
        .transaction(async |tx| {
            let enabled = control::enable(tx, id).await?;
            let endpoint = endpoints::find(tx, id).await?;
            if let (true, Some(endpoint)) = (enabled, &endpoint) {
                let detail = format!("endpoint {} ({})", endpoint.id, endpoint.url);
                audit::record(tx, &actor, Action::WebhookEndpointEnabled, &detail).await?;
            }
            Ok(endpoint)
        })
        .await
        .step("enable a webhook endpoint")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(endpoint)))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/disable", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "(publish) Disabled (or it already was): nothing is sent to it, what it has pending waits until it is enabled again. The endpoint as it is now. Audited as `webhook-endpoint-disabled` under the token's name when it was enabled.", body = WebhookBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn disable_webhook(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = endpoint_id(&id)?;
    let actor = token.actor(&request);
    let endpoint = db
        .transaction(async |tx| {
            let disabled = control::disable(tx, id).await?;
            let endpoint = endpoints::find(tx, id).await?;
            if let (true, Some(endpoint)) = (disabled, &endpoint) {
                let detail = format!("endpoint {} ({})", endpoint.id, endpoint.url);
                audit::record(tx, &actor, Action::WebhookEndpointDisabled, &detail).await?;
            }
            Ok(endpoint)
        })
        .await
        .step("disable a webhook endpoint")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(WebhookBody::from(endpoint)))
}

#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id.")),
    responses(
        (status = 200, description = "(read: no payload is shown, only each delivery's event, state and last outcome) The endpoint's 50 latest deliveries, newest first, as its page lists them.", body = WebhookDeliveries, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn list_deliveries(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = endpoint_id(&id)?;
    let recent = db
        .transaction(async |tx| {
            if endpoints::find(tx, id).await?.is_none() {
                return Ok(None);
            }
            deliveries::recent(tx, id, RECENT_DELIVERIES)
                .await
                .map(Some)
        })
        .await
        .step("read a webhook endpoint's deliveries")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(WebhookDeliveries {
        data: recent.into_iter().map(DeliveryBody::from).collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "api",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The endpoint's id."),
        ("delivery_id" = String, Path, description = "The delivery's id."),
    ),
    responses(
        (status = 202, description = "(publish: it sends the payload again) Queued again, whatever became of it: it goes as soon as a worker is free, or once the endpoint is enabled again. Audited as `webhook-delivery-retried` under the token's name."),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn retry_delivery(
    request: HttpRequest,
    token: ApiToken,
    path: web::Path<(String, String)>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let (id, delivery) = path.into_inner();
    let no_delivery = || Problem::NotFound("This endpoint has no delivery with this id.".into());
    let id = endpoint_id(&id).map_err(|_| no_delivery())?;
    let delivery = Uuid::try_parse(&delivery).map_err(|_| no_delivery())?;
    let actor = token.actor(&request);
    let retried = db
        .transaction(async |tx| {
            let Some(endpoint) = endpoints::find(tx, id).await? else {
                return Ok(false);
            };
            if !deliveries::retry(tx, id, delivery).await? {
                return Ok(false);
            }
            let detail = format!(
                "endpoint {} ({}): delivery {delivery}",
                endpoint.id, endpoint.url
            );
            audit::record(tx, &actor, Action::WebhookDeliveryRetried, &detail).await?;
            Ok(true)
        })
        .await
        .step("send a webhook delivery again")?;
    if !retried {
        return Err(no_delivery());
    }
    Ok(HttpResponse::Accepted().finish())
}
