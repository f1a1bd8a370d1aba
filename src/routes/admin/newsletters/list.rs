//! `GET /admin/newsletters`: the latest issues, newest first, each with
//! where it stands and its counts, read from the issue rows' own counters
//! (never counted over the deliveries).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::pages::{IssueRow, NewslettersPage};
use super::view::issue_path;
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::campaigns::ledger;
use crate::db::Db;
use crate::pages::page;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

/// Issues the list shows: a newsletter publishes a few a month, so this is
/// years of them.
const LIST_LIMIT: i64 = 200;

#[utoipa::path(get, path = "/admin/newsletters", tag = "admin",
    responses((status = 200, description = "The issues.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn newsletters(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    let issues = db
        .transaction(async |tx| ledger::list(tx, LIST_LIMIT).await)
        .await
        .step("read the issues")?;
    let rows = issues
        .into_iter()
        .map(|issue| IssueRow {
            path: issue_path(issue.id),
            state: issue.label(),
            send_at: issue.send_at.format("%Y-%m-%d %H:%M").to_string(),
            recipients: issue.recipients,
            queued: issue.queued(),
            sent: issue.sent,
            failed: issue.failed,
            skipped: issue.skipped,
            title: issue.title,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &NewslettersPage {
            newsletter: &admin.newsletter,
            nav: nav(&admin),
            rows,
        },
    ))
}
