//! `GET /admin/segments/{id}`: a segment's page, its form filled with the
//! saved filter, and how many it holds now; `POST /admin/segments/{id}`:
//! the form sent, to count or to save the changes;
//! `POST /admin/segments/{id}/delete`: deletes it.
//!
//! A saved filter is read again against the lists and attributes of now:
//! when one it names is gone, the page says why it no longer applies and
//! counts nothing, and the form shows it as saved, to be mended.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::form::{Fields, SegmentForm};
use super::pages::{FormView, SegmentPage};
use super::view::{
    SEGMENTS_PATH, Saving, Submitted, count_audience, count_text, form_view, missing,
    parse_segment_id, read_catalogue, read_submission, save, segment_path, to_segment,
};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::subscribers::segments::{self, Filter, SegmentError};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[utoipa::path(get, path = "/admin/segments/{id}", tag = "admin",
    params(("id" = String, Path, description = "The segment's id.")),
    responses(
        (status = 200, description = "The segment's page, with its count.", body = String, content_type = "text/html"),
        (status = 404, description = "No such segment.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn segment_page(
    admin: SignedIn,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_segment_id(&id).ok_or_else(missing)?;
    let (segment, catalogue) = db
        .transaction(async |tx| {
            let segment = segments::store::find(tx, id).await?;
            let imports = crate::imports::store::known(tx).await?;
            Ok((segment, segments::catalogue(tx, imports).await?))
        })
        .await
        .step("read the segment")?;
    let segment = segment.ok_or_else(missing)?;
    let (stale, count) = match Filter::parse(&segment.filter, &catalogue) {
        Ok(filter) => {
            let count = count_audience(&db, &filter, &catalogue.list_ids()).await;
            (None, Some(count_text(count)))
        }
        Err(reason) => (Some(reason.to_string()), None),
    };
    let fields = Fields::of(&segment.name, &segment.filter);
    let form = form_view(&catalogue, segment_path(id), fields, None, count);
    Ok(render(
        &admin,
        id,
        &segment.name,
        StatusCode::OK,
        form,
        stale,
    ))
}

#[utoipa::path(post, path = "/admin/segments/{id}", tag = "admin",
    params(("id" = String, Path, description = "The segment's id.")),
    request_body(content = inline(SegmentForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Count: the form again, with how many match; nothing saved.", body = String, content_type = "text/html"),
        (status = 303, description = "Saved: to the segment's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read, or an unknown action or match.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such segment.", body = String, content_type = "text/plain"),
        (status = 409, description = "Another segment has that name: the form again, with the reason.", body = String, content_type = "text/html"),
        (status = 422, description = "The filter or the name was refused: the form again, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn update_segment(
    request: HttpRequest,
    form: Protected<SegmentForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let id = parse_segment_id(&id).ok_or_else(missing)?;
    let catalogue = read_catalogue(&db).await?;
    let again = |error, count| form_view(&catalogue, segment_path(id), form.fields(), error, count);
    // The heading keeps the name as typed: the page is about this form.
    let heading = form.name.trim();
    let (name, filter) = match read_submission(&db, &form, &catalogue).await? {
        Submitted::Refused(reason) => {
            let form = again(Some(reason), None);
            return Ok(render(
                &admin,
                id,
                heading,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                None,
            ));
        }
        Submitted::Counted(count) => {
            let form = again(None, Some(count_text(count)));
            return Ok(render(&admin, id, heading, StatusCode::OK, form, None));
        }
        Submitted::Save(name, filter) => (name, filter),
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match save(&db, &actor, Some(id), &name, &filter).await? {
        Saving::Done(id) => Ok(to_segment(id)),
        Saving::NameTaken => {
            let form = again(Some(SegmentError::NameTaken.to_string()), None);
            Ok(render(
                &admin,
                id,
                heading,
                StatusCode::CONFLICT,
                form,
                None,
            ))
        }
        Saving::Missing => Err(missing()),
    }
}

/// The delete form carries the CSRF token only.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteForm {}

#[utoipa::path(post, path = "/admin/segments/{id}/delete", tag = "admin",
    params(("id" = String, Path, description = "The segment's id.")),
    request_body(content = inline(DeleteForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: to the segments.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such segment.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn delete_segment(
    request: HttpRequest,
    form: Protected<DeleteForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_segment_id(&id).ok_or_else(missing)?;
    let actor = actor_for(&form.admin.admin, client_ip(&request, &limiter));
    if delete(&db, &actor, id).await? {
        Ok(see_other(SEGMENTS_PATH))
    } else {
        Err(missing())
    }
}

#[tracing::instrument(name = "Delete a segment", skip(db, actor))]
async fn delete(db: &Db, actor: &Actor, id: Uuid) -> Result<bool, ApiError> {
    db.transaction(async |tx| {
        let deleted = segments::store::delete(tx, id).await?;
        if deleted {
            audit::record(tx, actor, Action::SegmentDeleted, &format!("segment {id}")).await?;
        }
        Ok(deleted)
    })
    .await
    .step("delete the segment")
}

fn render(
    admin: &SignedIn,
    id: Uuid,
    name: &str,
    status: StatusCode,
    form: FormView,
    stale: Option<String>,
) -> HttpResponse {
    page(
        status,
        &SegmentPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            path: segment_path(id),
            name: name.to_owned(),
            form,
            stale,
        },
    )
}
