//! `GET /admin/newsletters`: the latest drafts, newest first, above the
//! latest issues, newest first, each with where it stands and its counts,
//! read from the issue rows' own counters (never counted over the
//! deliveries).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};

use super::pages::{DraftRow, IssueRow, NewslettersPage, draft_path};
use super::view::issue_path;
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::campaigns::{drafts, ledger};
use crate::db::Db;
use crate::pages::page;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

/// Issues the list shows: a newsletter publishes a few a month, so this is
/// years of them.
const LIST_LIMIT: i64 = 200;

/// Drafts the list shows: the ones being worked on. Older ones are left to
/// the API's pages, which the list says when there are more.
const DRAFTS_SHOWN: i64 = 50;

#[utoipa::path(get, path = "/admin/newsletters", tag = "admin",
    responses((status = 200, description = "The drafts, then the issues.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn newsletters(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    let (mut drafts, issues) = db
        .transaction(async |tx| {
            // One more than shown: whether it exists says whether there
            // are more.
            let drafts = drafts::page(tx, None, DRAFTS_SHOWN + 1).await?;
            Ok((drafts, ledger::list(tx, LIST_LIMIT).await?))
        })
        .await
        .step("read the drafts and issues")?;
    let more_drafts = drafts.len() as i64 > DRAFTS_SHOWN;
    drafts.truncate(DRAFTS_SHOWN as usize);
    let drafts = drafts
        .into_iter()
        .map(|draft| DraftRow {
            path: draft_path(draft.id),
            updated_at: draft.updated_at.format("%Y-%m-%d %H:%M").to_string(),
            title: draft.title,
        })
        .collect();
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
            drafts,
            more_drafts,
            rows,
        },
    ))
}
