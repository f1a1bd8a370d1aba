//! `GET /admin/segments`: the saved segments and the builder form;
//! `POST /admin/segments`: the form sent, to count what it describes or
//! to save it as a new segment.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::form::{Fields, SegmentForm};
use super::pages::{FormView, SegmentRow, SegmentsPage};
use super::view::{
    SEGMENTS_PATH, Saving, Submitted, count_text, form_view, read_catalogue, read_submission, save,
    segment_path, to_segment,
};
use crate::admin::actor::actor_for;
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::subscribers::segments;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[utoipa::path(get, path = "/admin/segments", tag = "admin",
    responses((status = 200, description = "The saved segments and the form to build one.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn segments(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    let catalogue = read_catalogue(&db).await?;
    let form = form_view(
        &catalogue,
        SEGMENTS_PATH.into(),
        Fields::blank(),
        None,
        None,
    );
    render(&admin, &db, StatusCode::OK, form).await
}

#[utoipa::path(post, path = "/admin/segments", tag = "admin",
    request_body(content = inline(SegmentForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Count: the form again, with how many match.", body = String, content_type = "text/html"),
        (status = 303, description = "Saved: to the new segment's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read, or an unknown action or match.", body = String, content_type = "text/plain"),
        (status = 409, description = "Another segment has that name: the form again, with the reason.", body = String, content_type = "text/html"),
        (status = 422, description = "The filter or the name was refused: the form again, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn create_segment(
    request: HttpRequest,
    form: Protected<SegmentForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let catalogue = read_catalogue(&db).await?;
    let again = |error, count| {
        form_view(
            &catalogue,
            SEGMENTS_PATH.into(),
            form.fields(),
            error,
            count,
        )
    };
    let (name, filter) = match read_submission(&db, &form, &catalogue).await? {
        Submitted::Refused(reason) => {
            return render(
                &admin,
                &db,
                StatusCode::UNPROCESSABLE_ENTITY,
                again(Some(reason), None),
            )
            .await;
        }
        Submitted::Counted(count) => {
            return render(
                &admin,
                &db,
                StatusCode::OK,
                again(None, Some(count_text(count))),
            )
            .await;
        }
        Submitted::Save(name, filter) => (name, filter),
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match save(&db, &actor, None, &name, &filter).await? {
        Saving::Done(id) => Ok(to_segment(id)),
        Saving::NameTaken => {
            let reason = segments::SegmentError::NameTaken.to_string();
            render(&admin, &db, StatusCode::CONFLICT, again(Some(reason), None)).await
        }
        Saving::Missing => Err(ApiError::Unexpected(anyhow::anyhow!(
            "a segment being created was missing"
        ))),
    }
}

/// The list page with `form` as given.
async fn render(
    admin: &SignedIn,
    db: &Db,
    status: StatusCode,
    form: FormView,
) -> Result<HttpResponse, ApiError> {
    let saved = db
        .transaction(async |tx| segments::store::all(tx).await)
        .await
        .step("read the segments")?;
    let rows = saved
        .into_iter()
        .map(|segment| SegmentRow {
            path: segment_path(segment.id),
            name: segment.name,
            updated_at: segment.updated_at.format("%Y-%m-%d %H:%M").to_string(),
        })
        .collect();
    Ok(page(
        status,
        &SegmentsPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            segments: rows,
            form,
        },
    ))
}
