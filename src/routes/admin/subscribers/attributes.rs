//! `POST /admin/subscribers/{id}/attributes`: the form on a subscriber's
//! page that sets their custom attributes. Each field is named
//! `value.{attribute}`; an empty one removes the value. A value that does
//! not fit its attribute's kind, or an attribute that does not exist (any
//! more), gets the page again with `422` and the reason beside the field,
//! and nothing is written.
//!
//! The audit entry names the subscriber by id and the attributes changed,
//! never their values; nothing here logs them either.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::attribute_fields::Refused;
use super::page::{missing, render_with};
use super::paths::{parse_subscriber_id, subscriber_path};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::guard::Protected;
use crate::db::Db;
use crate::keys::Keys;
use crate::rate_limit::RateLimiter;
use crate::subscribers::attributes::{self, Written};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// What the form's field names start with: the rest is the attribute's
/// name. The prefix keeps an attribute called `csrf_token` from meeting
/// the form's own field.
const FIELD_PREFIX: &str = "value.";

/// The form's body limit: room for every attribute's longest text
/// (1,000 characters, each up to 4 bytes and 3 characters when encoded)
/// several times over; the app-wide limit is sized for the public forms.
pub const ATTRIBUTES_BODY_LIMIT_BYTES: usize = 256 * 1024;

/// The resource's own extractor settings.
pub fn attributes_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(ATTRIBUTES_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

#[utoipa::path(post, path = "/admin/subscribers/{id}/attributes", tag = "admin",
    params(("id" = String, Path, description = "The subscriber's id.")),
    request_body(content = String, description = "`value.{attribute}=…` for each attribute to set; an empty value removes it.", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: back to the subscriber's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such subscriber.", content((String = "text/html"), (String = "text/plain"))),
        (status = 413, description = "A form larger than the limit.", body = String, content_type = "text/plain"),
        (status = 422, description = "A value that does not fit its attribute, or no such attribute: nothing was saved, and the page says why beside each field.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn change_attributes(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let Some(id) = parse_subscriber_id(&id) else {
        return Ok(missing(&admin, true));
    };
    let fields: Vec<(String, String)> = form
        .into_iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(FIELD_PREFIX)?.to_owned(), value)))
        .collect();
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let written = db
        .transaction(async |tx| {
            let written = attributes::set(tx, id, &fields).await?;
            if let Written::Done(changes) = &written {
                let detail = format!("subscriber {id}: {}", changes.summary());
                audit::record(tx, &actor, Action::SubscriberAttributesChanged, &detail).await?;
            }
            Ok(written)
        })
        .await
        .step("change a subscriber's attributes")?;
    match written {
        Written::Done(_) => Ok(see_other(subscriber_path(id))),
        Written::Missing => Ok(missing(&admin, false)),
        Written::Refused(errors) => {
            let refused = Refused {
                typed: fields,
                errors,
            };
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            render_with(&db, &keys, &admin, id, status, None, Some(refused)).await
        }
    }
}
