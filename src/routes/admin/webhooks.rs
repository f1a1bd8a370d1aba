//! `GET /admin/webhooks`: the outgoing webhook endpoints, with the form that
//! registers one (`POST /admin/webhooks`); `GET /admin/webhooks/{id}`: an
//! endpoint's recent deliveries, each of which can be sent again, and the
//! buttons that enable, disable or delete it.
//!
//! A new endpoint's secret is shown on the answer to the form itself, never
//! behind a redirect, and never again: it must not travel in an address.
//! The store keeps it, since every call is signed with it. Each change is
//! in the audit log (never the secret), written in the same transaction.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::configuration::OutgoingWebhookSettings;
use crate::db::Db;
use crate::outgoing_webhooks::client::EndpointUrl;
use crate::outgoing_webhooks::endpoints::{self, Endpoint, EndpointChange, NewEndpoint};
use crate::outgoing_webhooks::events::EventType;
use crate::outgoing_webhooks::signing::Secret;
use crate::outgoing_webhooks::{control, deliveries};
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::routes::admin::pages::{
    CreatedWebhook, EventChoice, WebhookDeliveryRow, WebhookPage, WebhookRow, WebhooksPage,
};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// Deliveries an endpoint's page shows.
const RECENT_DELIVERIES: i64 = 50;

fn when(at: Option<DateTime<Utc>>, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

fn row(endpoint: &Endpoint) -> WebhookRow {
    WebhookRow {
        id: endpoint.id,
        url: endpoint.url.clone(),
        description: endpoint.description.clone(),
        events: endpoint.events.join(", "),
        state: if endpoint.enabled {
            "enabled".to_owned()
        } else {
            "disabled".to_owned()
        },
        created: format!(
            "{} by {}",
            when(Some(endpoint.created_at), ""),
            endpoint.created_by
        ),
    }
}

#[utoipa::path(get, path = "/admin/webhooks", tag = "admin",
    responses(
        (status = 200, description = "The webhook endpoints and the form to register one.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn webhooks_page(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    render_list(&db, &admin, StatusCode::OK, Shown::default()).await
}

/// What the list shows beyond the endpoints: the form as typed, an endpoint
/// just registered, and why something was refused.
#[derive(Default)]
struct Shown<'a> {
    form: Option<&'a Typed>,
    /// The endpoint, and its secret as the admin is shown it, once.
    created: Option<(&'a Endpoint, &'a str)>,
    url_error: Option<String>,
    description_error: Option<String>,
    events_error: Option<String>,
}

/// The registration form as it came.
#[derive(Default)]
struct Typed {
    url: String,
    description: String,
    events: Vec<String>,
}

async fn render_list(
    db: &Db,
    admin: &SignedIn,
    status: StatusCode,
    shown: Shown<'_>,
) -> Result<HttpResponse, ApiError> {
    let all = db
        .transaction(async |tx| endpoints::list(tx).await)
        .await
        .step("read the webhook endpoints")?;
    let form = shown.form;
    let events = EventType::ALL
        .into_iter()
        .map(|kind| EventChoice {
            name: kind.as_str(),
            label: kind.label(),
            checked: form.is_some_and(|f| f.events.iter().any(|e| e == kind.as_str())),
        })
        .collect();
    Ok(page(
        status,
        &WebhooksPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            endpoints: all.iter().map(row).collect(),
            created: shown.created.map(|(endpoint, secret)| CreatedWebhook {
                id: endpoint.id,
                url: &endpoint.url,
                secret,
            }),
            url: form.map_or("", |f| f.url.as_str()),
            url_error: shown.url_error,
            description: form.map_or("", |f| f.description.as_str()),
            description_error: shown.description_error,
            events,
            events_error: shown.events_error,
        },
    ))
}

/// The registration form, as the OpenAPI document describes it; read as
/// pairs, since `events` comes once per box ticked.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form; the handler reads it as pairs.
pub struct NewWebhookForm {
    /// http or https; with a host that is not a loopback, private or
    /// link-local address.
    pub url: String,
    /// Up to 200 characters, for the admin's own use.
    #[serde(default)]
    pub description: String,
    /// Once per event to send, e.g. `subscriber.confirmed`; at least one.
    pub events: Vec<String>,
}

fn typed(fields: &[(String, String)]) -> Typed {
    let mut form = Typed::default();
    for (name, value) in fields {
        match name.as_str() {
            "url" => form.url = value.trim().to_owned(),
            "description" => form.description = value.trim().to_owned(),
            "events" => form.events.push(value.clone()),
            _ => {}
        }
    }
    form
}

#[utoipa::path(post, path = "/admin/webhooks", tag = "admin",
    request_body(content = inline(NewWebhookForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Registered: the page, showing the secret this once.", body = String, content_type = "text/html"),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 422, description = "A URL, description or event refused, with the reason on the page.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn create_webhook(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    db: web::Data<Db>,
    settings: web::Data<OutgoingWebhookSettings>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let form = typed(&form);
    let url = EndpointUrl::parse(&form.url, settings.allow_private_addresses);
    let description = endpoints::parse_description(&form.description);
    let events = EventType::parse_list(&form.events);
    let (url, description, events) = match (url, description, events) {
        (Ok(url), Ok(description), Ok(events)) => (url, description, events),
        (url, description, events) => {
            let shown = Shown {
                form: Some(&form),
                url_error: url.err().map(|e| e.to_string()),
                description_error: description.err(),
                events_error: events.err(),
                ..Shown::default()
            };
            return render_list(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let secret = Secret::generate().expose();
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let new = NewEndpoint {
        url: url.as_str(),
        description,
        events: &events,
        secret: &secret,
        created_by: &admin.admin.username,
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
    let shown = Shown {
        created: Some((&endpoint, secret.as_str())),
        ..Shown::default()
    };
    render_list(&db, &admin, StatusCode::OK, shown).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookParameters {
    /// What the admin was sent here after; only known ones are shown, so
    /// that a link cannot put words on the page.
    notice: Option<String>,
}

fn known_notice(notice: Option<&str>) -> Option<&'static str> {
    match notice? {
        "enabled" => Some("The endpoint is enabled: what it has pending goes now."),
        "disabled" => Some("The endpoint is disabled: nothing is sent to it."),
        "retried" => Some("The delivery goes again as soon as a worker is free."),
        "updated" => Some("The endpoint is changed: what happens from now on is sent as it says."),
        _ => None,
    }
}

fn missing() -> ApiError {
    ApiError::NotFound("No webhook endpoint has this id.".into())
}

#[utoipa::path(get, path = "/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id."), WebhookParameters),
    responses(
        (status = 200, description = "The endpoint, the form that changes its events and description, and its recent deliveries.", body = String, content_type = "text/html"),
        (status = 404, description = "No such endpoint.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn webhook_page(
    admin: SignedIn,
    id: web::Path<String>,
    parameters: web::Query<WebhookParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::try_parse(&id).map_err(|_| missing())?;
    let shown = Edit {
        notice: known_notice(parameters.notice.as_deref()),
        ..Edit::default()
    };
    render_endpoint(&db, &admin, id, StatusCode::OK, shown).await
}

/// What the endpoint's page shows beyond the endpoint: a notice, and the
/// change form as typed with why it was refused.
#[derive(Default)]
struct Edit<'a> {
    notice: Option<&'static str>,
    form: Option<&'a Typed>,
    description_error: Option<String>,
    events_error: Option<String>,
}

async fn render_endpoint(
    db: &Db,
    admin: &SignedIn,
    id: Uuid,
    status: StatusCode,
    shown: Edit<'_>,
) -> Result<HttpResponse, ApiError> {
    let found = db
        .transaction(async |tx| {
            let Some(endpoint) = endpoints::find(tx, id).await? else {
                return Ok(None);
            };
            let recent = deliveries::recent(tx, id, RECENT_DELIVERIES).await?;
            Ok(Some((endpoint, recent)))
        })
        .await
        .step("read a webhook endpoint")?;
    let (endpoint, recent) = found.ok_or_else(missing)?;
    let deliveries = recent
        .into_iter()
        .map(|d| WebhookDeliveryRow {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            created: when(Some(d.created_at), ""),
            attempts: d.attempts,
            next_attempt: if d.status == "pending" {
                when(d.next_attempt_at, "when the endpoint is enabled again")
            } else {
                "–".to_owned()
            },
            status: d.status,
            last_code: d
                .last_code
                .map_or_else(|| "–".to_owned(), |c| c.to_string()),
            last_error: d.last_error.unwrap_or_default(),
        })
        .collect();
    // The form as typed when it was refused; the endpoint as it is otherwise.
    let (description, events) = match shown.form {
        Some(form) => (form.description.clone(), form.events.clone()),
        None => (endpoint.description.clone(), endpoint.events.clone()),
    };
    let events = EventType::ALL
        .into_iter()
        .map(|kind| EventChoice {
            name: kind.as_str(),
            label: kind.label(),
            checked: events.iter().any(|e| e == kind.as_str()),
        })
        .collect();
    Ok(page(
        status,
        &WebhookPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            endpoint: row(&endpoint),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason.filter(|_| !endpoint.enabled),
            failing_since: endpoint.failing_since.map(|at| when(Some(at), "")),
            deliveries,
            notice: shown.notice,
            description: &description,
            description_error: shown.description_error,
            events,
            events_error: shown.events_error,
        },
    ))
}

/// The endpoint page's change form, as the OpenAPI document describes it;
/// read as pairs, since `events` comes once per box ticked.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form; the handler reads it as pairs.
pub struct WebhookChangeForm {
    /// Up to 200 characters, for the admin's own use.
    #[serde(default)]
    pub description: String,
    /// Once per event to send from now on, e.g. `subscriber.confirmed`; at
    /// least one.
    pub events: Vec<String>,
}

#[utoipa::path(post, path = "/admin/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(content = inline(WebhookChangeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Changed: to its page. Deliveries queued already go as they are.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such endpoint.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "A description or event refused, with the reason on the page.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn update_webhook(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let id = Uuid::try_parse(&id).map_err(|_| missing())?;
    let form = typed(&form);
    let description = endpoints::parse_description(&form.description);
    let events = EventType::parse_list(&form.events);
    let (description, events) = match (description, events) {
        (Ok(description), Ok(events)) => (description, events),
        (description, events) => {
            let shown = Edit {
                form: Some(&form),
                description_error: description.err(),
                events_error: events.err(),
                ..Edit::default()
            };
            return render_endpoint(&db, &admin, id, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let change = EndpointChange {
        description: Some(description),
        events: Some(&events),
        ..EndpointChange::default()
    };
    let changed = db
        .transaction(async |tx| {
            let Some(updated) = endpoints::update(tx, id, &change).await? else {
                return Ok(false);
            };
            let detail = change.audit_detail(&updated);
            audit::record(tx, &actor, Action::WebhookEndpointUpdated, &detail).await?;
            Ok(true)
        })
        .await
        .step("change a webhook endpoint")?;
    if !changed {
        return Err(missing());
    }
    Ok(see_other(format!("/admin/webhooks/{id}?notice=updated")))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct WebhookActionForm {}

/// Runs `change` on the endpoint and audits it in one transaction when it
/// changed something. Returns the endpoint's id and whether it changed:
/// enabling an enabled endpoint, or disabling a disabled one, is no error,
/// as in the API. 404 when there is no such endpoint.
async fn change_endpoint(
    request: &HttpRequest,
    admin: &SignedIn,
    db: &Db,
    limiter: &RateLimiter,
    (id, action): (&str, Action),
    change: impl AsyncFn(&mut sqlx::PgConnection, Uuid) -> Result<bool, sqlx::Error>,
) -> Result<(Uuid, bool), ApiError> {
    let id = Uuid::try_parse(id).map_err(|_| missing())?;
    let actor = actor_for(&admin.admin, client_ip(request, limiter));
    let changed = db
        .transaction(async |tx| {
            let Some(endpoint) = endpoints::find(tx, id).await? else {
                return Ok(None);
            };
            if !change(tx, id).await? {
                return Ok(Some(false));
            }
            let detail = format!("endpoint {} ({})", endpoint.id, endpoint.url);
            audit::record(tx, &actor, action, &detail).await?;
            Ok(Some(true))
        })
        .await
        .step("change a webhook endpoint")?;
    let changed = changed.ok_or_else(missing)?;
    Ok((id, changed))
}

#[utoipa::path(post, path = "/admin/webhooks/{id}/enable", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(content = inline(WebhookActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Enabled (or it already was), its failures forgotten: to its page.", headers(("Location" = String))),
        (status = 404, description = "No such endpoint.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn enable_webhook(
    request: HttpRequest,
    form: Protected<WebhookActionForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let what = (id.as_str(), Action::WebhookEndpointEnabled);
    let (id, _) =
        change_endpoint(&request, &form.admin, &db, &limiter, what, control::enable).await?;
    Ok(see_other(format!("/admin/webhooks/{id}?notice=enabled")))
}

#[utoipa::path(post, path = "/admin/webhooks/{id}/disable", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(content = inline(WebhookActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Disabled (or it already was): to its page.", headers(("Location" = String))),
        (status = 404, description = "No such endpoint.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn disable_webhook(
    request: HttpRequest,
    form: Protected<WebhookActionForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let what = (id.as_str(), Action::WebhookEndpointDisabled);
    let (id, _) =
        change_endpoint(&request, &form.admin, &db, &limiter, what, control::disable).await?;
    Ok(see_other(format!("/admin/webhooks/{id}?notice=disabled")))
}

#[utoipa::path(post, path = "/admin/webhooks/{id}/delete", tag = "admin",
    params(("id" = String, Path, description = "The endpoint's id.")),
    request_body(content = inline(WebhookActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted with its deliveries: to the endpoints.", headers(("Location" = String))),
        (status = 404, description = "No such endpoint.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn delete_webhook(
    request: HttpRequest,
    form: Protected<WebhookActionForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let what = (id.as_str(), Action::WebhookEndpointDeleted);
    change_endpoint(&request, &form.admin, &db, &limiter, what, control::delete).await?;
    Ok(see_other("/admin/webhooks"))
}

#[utoipa::path(post, path = "/admin/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "admin",
    params(
        ("id" = String, Path, description = "The endpoint's id."),
        ("delivery_id" = String, Path, description = "The delivery's id."),
    ),
    request_body(content = inline(WebhookActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Queued again, due now: to the endpoint's page.", headers(("Location" = String))),
        (status = 404, description = "No such delivery of this endpoint.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn retry_webhook_delivery(
    request: HttpRequest,
    form: Protected<WebhookActionForm>,
    path: web::Path<(String, String)>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let (id, delivery) = path.into_inner();
    let no_delivery = || ApiError::NotFound("This endpoint has no delivery with this id.".into());
    let delivery = Uuid::try_parse(&delivery).map_err(|_| no_delivery())?;
    let what = (id.as_str(), Action::WebhookDeliveryRetried);
    let (id, retried) = change_endpoint(
        &request,
        &form.admin,
        &db,
        &limiter,
        what,
        async |tx, id| deliveries::retry(tx, id, delivery).await,
    )
    .await
    .map_err(|e| match e {
        ApiError::NotFound(_) => no_delivery(),
        other => other,
    })?;
    if !retried {
        return Err(no_delivery());
    }
    Ok(see_other(format!("/admin/webhooks/{id}?notice=retried")))
}
