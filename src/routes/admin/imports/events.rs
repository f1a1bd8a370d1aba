//! `GET /admin/imports/{id}/events`: the import's progress as Server-Sent
//! Events, for its page to follow live, through the newsroom's one live
//! stream ([`crate::routes::admin::live`]) and the progress feed the issue
//! pages use: the import's row announces each change on the same channel.
//! Where it stands at once, then after each change, until it is done,
//! failed or found interrupted.
//!
//! Each event's data is an [`ImportView`] as JSON.

use actix_web::{HttpResponse, web};
use uuid::Uuid;

use super::view::{ImportView, parse_import_id};
use crate::admin::guard::SignedIn;
use crate::admin::sessions::SessionStore;
use crate::campaigns::progress::ProgressFeed;
use crate::db::Db;
use crate::imports::store;
use crate::routes::admin::live::{self, Update};
use crate::web::error::{ApiError, DatabaseStep};

#[utoipa::path(get, path = "/admin/imports/{id}/events", tag = "admin",
    params(("id" = String, Path, description = "The import's id.")),
    responses(
        (status = 200, description = "The import's progress as Server-Sent Events, until it finishes.", body = String, content_type = "text/event-stream"),
        (status = 404, description = "No such import.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn import_events(
    id: web::Path<String>,
    admin: SignedIn,
    db: web::Data<Db>,
    sessions: web::Data<SessionStore>,
    feed: web::Data<ProgressFeed>,
) -> Result<HttpResponse, ApiError> {
    live::follow(
        parse_import_id(&id),
        "No import has this address.",
        &admin,
        &sessions,
        &db,
        &feed,
        |db, id| Box::pin(read(db, id)),
    )
    .await
}

async fn read(db: Db, id: Uuid) -> Result<Option<Update>, ApiError> {
    let read = db
        .transaction(async |tx| {
            let Some(record) = store::find(tx, id).await? else {
                return Ok(None);
            };
            let running = store::is_running(tx, id).await?;
            Ok(Some((record, running)))
        })
        .await
        .step("read the import's progress")?;
    Ok(read.map(|(record, running)| {
        let view = ImportView::new(&record, running);
        let finished = view.finished;
        Update::new(&view, finished)
    }))
}
