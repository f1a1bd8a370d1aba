//! `GET /admin/imports/{id}`: one import, where it stands, and once it is
//! done its report: the refused rows with their lines and reasons (the
//! first [`REFUSALS_SHOWN`], with the count of the rest, all of them in
//! [`super::refusals`]). While it runs, the page follows it live
//! ([`super::events`]). An import left reading or merging that no process
//! runs (its process was killed) shows as interrupted, with how to finish
//! it: upload the same file again. An address that names no import
//! answers 404, malformed or not.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::pages::{ImportMissingPage, ImportPage};
use super::view::{ImportView, import_path, parse_import_id};
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::imports::store;
use crate::pages::page;
use crate::web::error::{ApiError, DatabaseStep};

/// Refused rows on the page; the download has every one kept.
pub const REFUSALS_SHOWN: i64 = 300;

/// The import page's script: it follows the import's live updates.
const SCRIPT: &str = include_str!("../../../templates/admin/imports.js");

/// This page runs its own script, which listens to this site: the
/// service's policy, with those two allowed.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                           connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                           base-uri 'none'";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParameters {
    /// `already`: the upload that led here was of a file imported onto
    /// the list before. Any other value is ignored.
    notice: Option<String>,
}

#[utoipa::path(get, path = "/admin/imports/{id}", tag = "admin",
    params(("id" = String, Path, description = "The import's id."), ImportParameters),
    responses(
        (status = 200, description = "The import's page: where it stands, and its report.", body = String, content_type = "text/html"),
        (status = 404, description = "No such import.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn import_page(
    admin: SignedIn,
    id: web::Path<String>,
    parameters: web::Query<ImportParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_import_id(&id) else {
        return Ok(missing(&admin));
    };
    let read = db
        .transaction(async |tx| {
            let Some(record) = store::find(tx, id).await? else {
                return Ok(None);
            };
            let running = store::is_running(tx, id).await?;
            let refusals = store::refusals(tx, id, REFUSALS_SHOWN).await?;
            Ok(Some((record, running, refusals)))
        })
        .await
        .step("read the import")?;
    let Some((record, running, refusals)) = read else {
        return Ok(missing(&admin));
    };
    let when = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%d %H:%M UTC").to_string();
    let mut answer = page(
        StatusCode::OK,
        &ImportPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            path: import_path(id),
            progress: ImportView::new(&record, running),
            file_name: record.file_name,
            list_name: record.list_name,
            consent_source: record.consent_source,
            welcome: record.welcome,
            started_by: record.started_by,
            created_at: when(record.created_at),
            finished_at: record.finished_at.map(when),
            refusals,
            already_imported: parameters.notice.as_deref() == Some("already"),
        },
    );
    answer.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    Ok(answer)
}

pub(super) fn missing(admin: &SignedIn) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &ImportMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
        },
    )
}

#[utoipa::path(get, path = "/admin/imports.js", tag = "admin",
    responses((status = 200, description = "The import page's script: its live updates.", body = String, content_type = "text/javascript"), crate::web::openapi_responses::AdminOnly))]
pub async fn import_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType(
            "text/javascript; charset=utf-8"
                .parse()
                .expect("a valid media type"),
        ))
        .body(SCRIPT)
}
