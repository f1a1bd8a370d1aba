//! `POST /admin/subscribers/{id}/erase`: forgets a subscriber, for a
//! request to be erased.
//!
//! What the erasure does, and what it keeps, is the subscriber store's
//! ([`crate::subscribers::erasure`]), which the API's erasure runs too.
//!
//! The form must carry the subscriber's address, typed again: the one
//! thing here that cannot be undone should not be one click away.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::list::ERASED_PATH;
use super::page::{missing, render};
use super::paths::parse_subscriber_id;
use crate::admin::actor::actor_for;
use crate::admin::audit::Actor;
use crate::admin::guard::{Protected, SignedIn};
use crate::db::Db;
use crate::keys::Keys;
use crate::rate_limit::RateLimiter;
use crate::subscribers::erasure::{self, Erasure};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EraseForm {
    /// The subscriber's address, typed by the admin to confirm.
    #[serde(default)]
    confirm_address: String,
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
        Erasure::Erased { .. } => Ok(see_other(ERASED_PATH)),
        Erasure::Missing => Ok(missing(&admin, false)),
        Erasure::NotConfirmed => refuse(&db, &keys, &admin, id).await,
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

async fn erase(
    db: &Db,
    keys: &Keys,
    actor: &Actor,
    id: Uuid,
    typed: &str,
) -> Result<Erasure, ApiError> {
    let outcome = db
        .transaction(async |tx| {
            erasure::erase(tx, keys, actor, id, |subscriber| {
                confirms(typed, &subscriber.email)
            })
            .await
        })
        .await
        .step("erase the subscriber")?;
    if let Erasure::Erased { hash_kept } = outcome {
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
