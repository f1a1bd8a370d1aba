//! `GET /admin/newsletters/{id}/events`: the issue's progress as
//! Server-Sent Events, for its page to follow live, through the newsroom's
//! one live stream ([`crate::routes::admin::live`]): where the issue
//! stands at once, then after each change, until it is done or cancelled.
//!
//! Each event's data is a [`ProgressView`] as JSON.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use super::view::{ProgressView, parse_issue_id};
use crate::admin::guard::SignedIn;
use crate::admin::sessions::SessionStore;
use crate::campaigns::ledger;
use crate::campaigns::progress::ProgressFeed;
use crate::db::Db;
use crate::routes::admin::live::{self, Update};
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

#[utoipa::path(get, path = "/admin/newsletters/{id}/events", tag = "admin",
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "The issue's progress as Server-Sent Events, until it finishes.", body = String, content_type = "text/event-stream"),
        (status = 404, description = "No such issue.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn issue_events(
    id: web::Path<String>,
    admin: SignedIn,
    db: web::Data<Db>,
    sessions: web::Data<SessionStore>,
    feed: web::Data<ProgressFeed>,
) -> Result<HttpResponse, ApiError> {
    live::follow(
        parse_issue_id(&id),
        "No newsletter issue has this address.",
        &admin,
        &sessions,
        &db,
        &feed,
        |db, id| Box::pin(read(db, id)),
    )
    .await
}

async fn read(db: Db, id: Uuid) -> Result<Option<Update>, ApiError> {
    let progress = db
        .transaction(async |tx| ledger::progress(tx, id).await)
        .await
        .step("read the issue's progress")?;
    Ok(progress.map(|progress| {
        let view = ProgressView::new(&progress);
        let finished = view.finished;
        Update::new(&view, finished)
    }))
}
