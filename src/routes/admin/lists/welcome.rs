//! `POST /admin/lists/{id}/welcome`: the list's welcome email, written on
//! the list's page. `action=preview` shows it as a reader gets it (filled
//! in for an example reader, as an issue's preview is) and saves nothing;
//! `action=save` stores it, or removes it when both fields are empty, and
//! goes back to the list's page. A welcome that cannot be stored comes
//! back with `422` and the reason beside its field.
//!
//! The welcome is sent by the subscriber store ([`crate::subscribers::welcome`])
//! once per reader and list, after their confirmation on the list.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::edit::{Shown, render};
use super::pages::{WelcomePreview, WelcomeView};
use super::{audited, list_path, missing, parse_list_id};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::campaigns::publishing::{PublishSettings, example_values};
use crate::db::Db;
use crate::newsletters::{Welcome, WelcomeError};
use crate::outbox::personalise;
use crate::rate_limit::RateLimiter;
use crate::subscribers::lists;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// The welcome form's body limit: the longest subject and body, in
/// characters a browser may percent-encode as three bytes each, and room
/// for the token and the action.
pub const WELCOME_FORM_BODY_LIMIT_BYTES: usize =
    3 * (4 * Welcome::MAX_SUBJECT_CHARS + Welcome::MAX_BODY_BYTES) + 1024;

/// The welcome resource's own extractor settings.
pub fn welcome_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(WELCOME_FORM_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

/// The form as a browser sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WelcomeForm {
    /// Up to 200 characters; required when there is a body.
    #[serde(default)]
    welcome_subject: String,
    /// Markdown, up to 50,000 bytes; both fields empty removes the welcome.
    #[serde(default)]
    welcome_body: String,
    /// `save` (the default) or `preview`.
    #[serde(default)]
    action: Option<String>,
}

#[utoipa::path(post, path = "/admin/lists/{id}/welcome", tag = "admin",
    params(("id" = String, Path, description = "The list's id.")),
    request_body(content = inline(WelcomeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A preview: the list's page with the welcome email as a reader gets it; nothing saved.", body = String, content_type = "text/html"),
        (status = 303, description = "Saved (or removed): to the list's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such list.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "A subject without a body or a body without a subject, one too long, or a control character: the page again, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn update_welcome(
    request: HttpRequest,
    form: Protected<WelcomeForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    publish: web::Data<PublishSettings>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let Some(id) = parse_list_id(&id) else {
        return Ok(missing(&admin, true));
    };
    // Only the form's own two buttons: anything else saving would make a
    // mistyped action change what readers get.
    let previewing = match form.action.as_deref() {
        None | Some("save") => false,
        Some("preview") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`{other}` is not an action of the welcome form: `save` or `preview`"
            )));
        }
    };
    let welcome = match Welcome::parse(&form.welcome_subject, &form.welcome_body) {
        Ok(welcome) => welcome,
        Err(refusal) => {
            let shown = Shown {
                welcome: Some(form.refused(&refusal)),
                ..Shown::default()
            };
            return render(&db, &admin, id, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    if previewing {
        return preview(&db, &admin, id, &form, welcome.as_ref(), &publish).await;
    }
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    if !save(&db, &actor, id, welcome.as_ref()).await? {
        return Ok(missing(&admin, false));
    }
    let notice = if welcome.is_some() {
        "welcome-saved"
    } else {
        "welcome-removed"
    };
    Ok(see_other(format!("{}?notice={notice}", list_path(id))))
}

impl WelcomeForm {
    fn typed(&self) -> WelcomeView {
        WelcomeView {
            subject: self.welcome_subject.clone(),
            body: self.welcome_body.clone(),
            ..WelcomeView::default()
        }
    }

    /// The form as typed, with the reason beside the field refused.
    fn refused(&self, refusal: &WelcomeError) -> WelcomeView {
        let reason = Some(refusal.to_string());
        let mut view = self.typed();
        if refusal.is_about_the_subject() {
            view.subject_error = reason;
        } else {
            view.body_error = reason;
        }
        view
    }
}

/// The list's page with the welcome as an example reader gets it, the form
/// as typed; no welcome, nothing to preview.
async fn preview(
    db: &Db,
    admin: &SignedIn,
    id: Uuid,
    form: &WelcomeForm,
    welcome: Option<&Welcome>,
    publish: &PublishSettings,
) -> Result<HttpResponse, ApiError> {
    let list_name = db
        .transaction(async |tx| Ok(lists::find(tx, id).await?.map(|list| list.name)))
        .await
        .step("read the list")?;
    let Some(list_name) = list_name else {
        return Ok(missing(admin, false));
    };
    let preview = welcome.map(|welcome| {
        let rendered = crate::newsletters::welcome(
            &admin.newsletter,
            &list_name,
            welcome.subject(),
            welcome.body(),
        );
        let email = personalise(&rendered, &example_values(publish));
        WelcomePreview {
            subject: email.subject,
            html: email.html_body,
            text: email.text_body,
        }
    });
    let shown = Shown {
        welcome: Some(form.typed()),
        preview,
        ..Shown::default()
    };
    render(db, admin, id, StatusCode::OK, shown).await
}

/// Stores the welcome (or its removal) and its audit entry. `false` when
/// no list has the id.
#[tracing::instrument(name = "Change a list's welcome email", skip_all, fields(list_id = %id))]
async fn save(
    db: &Db,
    actor: &Actor,
    id: Uuid,
    welcome: Option<&Welcome>,
) -> Result<bool, ApiError> {
    db.transaction(async |tx| {
        let Some(list) = lists::set_welcome(tx, id, welcome).await? else {
            return Ok(false);
        };
        let what = if welcome.is_some() { "set" } else { "removed" };
        let detail = format!("{}: welcome email {what}", audited(&list));
        audit::record(tx, actor, Action::ListWelcomeChanged, &detail).await?;
        Ok(true)
    })
    .await
    .step("change the list's welcome email")
}
