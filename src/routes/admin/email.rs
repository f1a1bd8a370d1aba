//! `POST /admin/email`: the address an admin's test sends go to. Its form
//! is on the dashboard, and a refused address shows the dashboard again
//! with the reason, so the handler stands beside the dashboard rather than
//! with the account pages in [`crate::admin::pages`], which must not import
//! from the routes.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::admin::accounts;
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::guard::Protected;
use crate::db::Db;
use crate::domain::SubscriberEmail;
use crate::rate_limit::RateLimiter;
use crate::routes::admin::dashboard::{RefusedEmail, render_dashboard};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EmailForm {
    #[serde(default)]
    email: String,
}

/// The address an admin's test sends go to; empty removes it.
#[utoipa::path(post, path = "/admin/email", tag = "admin",
    request_body(content = inline(EmailForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Changed: to the dashboard.", headers(("Location" = String))),
        (status = 400, description = "Not an address: the dashboard again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn change_email(
    request: HttpRequest,
    form: Protected<EmailForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let typed = form.email.trim();
    let email = if typed.is_empty() {
        None
    } else {
        match SubscriberEmail::parse(typed) {
            Ok(email) => Some(email),
            Err(reason) => {
                let refused = RefusedEmail { typed, reason };
                return render_dashboard(&db, &admin, StatusCode::BAD_REQUEST, Some(refused)).await;
            }
        }
    };
    let ip = client_ip(&request, &limiter);
    let detail = email
        .as_ref()
        .map_or("removed".to_owned(), |e| e.as_ref().to_owned());
    db.transaction(async |tx| {
        accounts::set_email(tx, admin.admin.id, email.as_ref()).await?;
        audit::record(
            tx,
            &actor_for(&admin.admin, ip),
            Action::EmailChanged,
            &detail,
        )
        .await
    })
    .await
    .step("change the admin's address")?;
    Ok(see_other("/admin/dashboard"))
}
