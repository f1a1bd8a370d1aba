//! `GET /admin/lists/{id}`: one list, its counts, the form that changes it
//! and the button that archives it (or brings it back); `POST
//! /admin/lists/{id}`: changes its name, description, whether it is public
//! and whether it asks for double opt-in, then back to its page.
//!
//! A change that cannot be stored comes back with `422`, as typed, with the
//! reason beside the field; an address that names no list answers `404`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::form::{FormView, ListForm, name_taken};
use super::pages::{ListPage, ListView, WelcomePreview, WelcomeView};
use super::{audited, list_path, missing, parse_list_id};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::subscribers::lists::{self, ListError, ListFields};
use crate::subscribers::memberships;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParameters {
    /// What the admin was sent here after; only known ones are shown, so
    /// that a link cannot put words on the page.
    notice: Option<String>,
}

#[utoipa::path(get, path = "/admin/lists/{id}", tag = "admin",
    params(("id" = String, Path, description = "The list's id."), PageParameters),
    responses(
        (status = 200, description = "The list's page.", body = String, content_type = "text/html"),
        (status = 404, description = "No such list.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn list_page(
    admin: SignedIn,
    id: web::Path<String>,
    parameters: web::Query<PageParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_list_id(&id) else {
        return Ok(missing(&admin, true));
    };
    let notice = match parameters.notice.as_deref() {
        Some("created") => Some("The list was made."),
        Some("saved") => Some("The changes were saved."),
        Some("archived") => Some("The list was archived."),
        Some("unarchived") => Some("The list is live again."),
        Some("welcome-saved") => Some("The welcome email was saved."),
        Some("welcome-removed") => Some("The list has no welcome email now."),
        _ => None,
    };
    let shown = Shown {
        notice,
        ..Shown::default()
    };
    render(&db, &admin, id, StatusCode::OK, shown).await
}

#[utoipa::path(post, path = "/admin/lists/{id}", tag = "admin",
    params(("id" = String, Path, description = "The list's id.")),
    request_body(content = inline(ListForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Saved: to the list's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such list.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "A name or description that cannot be stored, or a name another list has: the page again, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn update_list(
    request: HttpRequest,
    form: Protected<ListForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let Some(id) = parse_list_id(&id) else {
        return Ok(missing(&admin, true));
    };
    let refused = |form| Shown {
        form: Some(form),
        ..Shown::default()
    };
    let fields = match form.parse() {
        Ok(fields) => fields,
        Err(form) => {
            return render(
                &db,
                &admin,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                refused(form),
            )
            .await;
        }
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match update(&db, &actor, id, &fields).await? {
        Updated::Saved => Ok(see_other(format!("{}?notice=saved", list_path(id)))),
        Updated::Missing => Ok(missing(&admin, false)),
        Updated::Refused(reason) => {
            let form = name_taken(fields, reason);
            render(
                &db,
                &admin,
                id,
                StatusCode::UNPROCESSABLE_ENTITY,
                refused(form),
            )
            .await
        }
    }
}

/// How a change went.
enum Updated {
    Saved,
    Missing,
    /// Why not: the name is another list's.
    Refused(String),
}

/// Stores the change and its audit entry.
#[tracing::instrument(name = "Change a list", skip(db, actor))]
async fn update(
    db: &Db,
    actor: &Actor,
    id: Uuid,
    fields: &ListFields,
) -> Result<Updated, ApiError> {
    db.transaction(async |tx| match lists::update(tx, id, fields).await {
        Ok(Some(list)) => {
            audit::record(tx, actor, Action::ListUpdated, &audited(&list)).await?;
            Ok(Updated::Saved)
        }
        Ok(None) => Ok(Updated::Missing),
        Err(ListError::Database(e)) => Err(e),
        // The failed update ended the transaction: it commits nothing.
        Err(refused) => Ok(Updated::Refused(refused.to_string())),
    })
    .await
    .step("change the list")
}

/// What the page shows besides the list: the form as a refused change
/// typed it (the stored values otherwise), a notice, or why an action was
/// refused.
#[derive(Default)]
pub(super) struct Shown {
    pub form: Option<FormView>,
    pub notice: Option<&'static str>,
    pub error: Option<String>,
    /// The welcome form as typed (refused, or previewed), and its preview.
    pub welcome: Option<WelcomeView>,
    pub preview: Option<WelcomePreview>,
}

/// The list's page with `status`; the not-found page if there is no such
/// list (any more).
pub(super) async fn render(
    db: &Db,
    admin: &SignedIn,
    id: Uuid,
    status: StatusCode,
    shown: Shown,
) -> Result<HttpResponse, ApiError> {
    let Some(list) = read(db, id).await? else {
        return Ok(missing(admin, false));
    };
    let form = shown.form.unwrap_or_else(|| list.form());
    let welcome = shown.welcome.unwrap_or_else(|| list.welcome());
    Ok(page(
        status,
        &ListPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            list,
            form,
            notice: shown.notice,
            error: shown.error,
            welcome,
            preview: shown.preview,
        },
    ))
}

/// The list and its counts, in one transaction so that they agree.
#[tracing::instrument(name = "Read a list", skip(db))]
async fn read(db: &Db, id: Uuid) -> Result<Option<ListView>, ApiError> {
    let read = db
        .transaction(async |tx| {
            let Some(list) = lists::find(tx, id).await? else {
                return Ok(None);
            };
            // The one function that reads the counts reads every list's.
            let counts = memberships::counts_by_list(tx).await?;
            Ok(Some((list, counts)))
        })
        .await
        .step("read the list")?;
    Ok(read.map(|(list, mut counts)| {
        let counts = counts.remove(&list.id).unwrap_or_default();
        ListView::of(list, counts)
    }))
}
