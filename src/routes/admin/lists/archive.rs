//! `POST /admin/lists/{id}/archive` and `POST /admin/lists/{id}/unarchive`:
//! an archived list leaves the sign-up form and takes no new readers, and
//! those on it stay; bringing it back opens it again.
//!
//! The default list cannot be archived (sign-ups that name no list go to
//! it, and the schema keeps it live): that answers `422` with the list's
//! page and the reason. Archiving an archived list, or bringing back a live
//! one, changes nothing and writes no audit entry.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::edit::{Shown, render};
use super::{audited, list_path, missing, parse_list_id};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::Protected;
use crate::db::Db;
use crate::rate_limit::RateLimiter;
use crate::subscribers::lists::{self, Archived, ListError};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// The form carries nothing but its CSRF token.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ArchiveForm {}

#[utoipa::path(post, path = "/admin/lists/{id}/archive", tag = "admin",
    params(("id" = String, Path, description = "The list's id.")),
    request_body(content = inline(ArchiveForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Archived: to the list's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such list.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "The default list, which cannot be archived: its page, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn archive_list(
    request: HttpRequest,
    form: Protected<ArchiveForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    set_archived(request, form, &id, &db, &limiter, true).await
}

#[utoipa::path(post, path = "/admin/lists/{id}/unarchive", tag = "admin",
    params(("id" = String, Path, description = "The list's id.")),
    request_body(content = inline(ArchiveForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Live again: to the list's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such list.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn unarchive_list(
    request: HttpRequest,
    form: Protected<ArchiveForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    set_archived(request, form, &id, &db, &limiter, false).await
}

/// How archiving (or bringing back) went.
enum Outcome {
    /// Done, or it was so already.
    Done,
    Missing,
    /// Why not: the default list stays open.
    Refused(String),
}

async fn set_archived(
    request: HttpRequest,
    form: Protected<ArchiveForm>,
    id: &str,
    db: &Db,
    limiter: &RateLimiter,
    archived: bool,
) -> Result<HttpResponse, ApiError> {
    let admin = form.admin;
    let Some(id) = parse_list_id(id) else {
        return Ok(missing(&admin, true));
    };
    let actor = actor_for(&admin.admin, client_ip(&request, limiter));
    match change(db, &actor, id, archived).await? {
        Outcome::Done => {
            let notice = if archived { "archived" } else { "unarchived" };
            Ok(see_other(format!("{}?notice={notice}", list_path(id))))
        }
        Outcome::Missing => Ok(missing(&admin, false)),
        Outcome::Refused(reason) => {
            let shown = Shown {
                error: Some(reason),
                ..Shown::default()
            };
            render(db, &admin, id, StatusCode::UNPROCESSABLE_ENTITY, shown).await
        }
    }
}

/// Archives the list or brings it back, with its audit entry, unless it
/// is so already.
#[tracing::instrument(name = "Archive a list or bring it back", skip(db, actor))]
async fn change(db: &Db, actor: &Actor, id: Uuid, archived: bool) -> Result<Outcome, ApiError> {
    let action = if archived {
        Action::ListArchived
    } else {
        Action::ListUnarchived
    };
    db.transaction(async |tx| match lists::archive(tx, id, archived).await {
        Ok(Archived::Changed(list)) => {
            audit::record(tx, actor, action, &audited(&list)).await?;
            Ok(Outcome::Done)
        }
        Ok(Archived::Unchanged(_)) => Ok(Outcome::Done),
        Ok(Archived::Missing) => Ok(Outcome::Missing),
        Err(ListError::Database(e)) => Err(e),
        Err(refused) => Ok(Outcome::Refused(refused.to_string())),
    })
    .await
    .step("archive the list")
}
