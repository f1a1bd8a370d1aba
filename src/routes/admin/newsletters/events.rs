//! `GET /admin/newsletters/{id}/events`: the issue's progress as
//! Server-Sent Events, for its page to follow live. One event at once, with
//! where the issue stands; then one after each change to it, read from the
//! issue's one row when the progress feed says it changed, at most every
//! [`Watch::MIN_INTERVAL`]; a comment every [`KEEP_ALIVE`] so that proxies
//! keep a quiet stream open. Once the issue is done or cancelled, the
//! stream sends that and ends; it also ends when the server stops, and
//! within [`SessionCheck::INTERVAL`] of its session ending (sign-out, a
//! password change, expiry).
//!
//! Each event's data is a [`ProgressView`] as JSON.

use std::time::Duration;

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use uuid::Uuid;

use super::view::{ProgressView, parse_issue_id};
use crate::admin::guard::SignedIn;
use crate::admin::session_check::SessionCheck;
use crate::admin::sessions::SessionStore;
use crate::campaigns::ledger::{self, Progress};
use crate::campaigns::progress::{ProgressFeed, Watch};
use crate::db::Db;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

/// How often a quiet stream says it is still there.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a browser waits before it connects again after the stream
/// broke off (or ended while the page stays open).
const RETRY_MILLISECONDS: u32 = 5_000;

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
    let not_found = || {
        // 404 also tells a browser's EventSource to stop connecting.
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("No newsletter issue has this address.")
    };
    let Some(id) = parse_issue_id(&id) else {
        return Ok(not_found());
    };
    // Watching starts before the first read, so that a change committed
    // between the two is not missed.
    let watch = feed.watch(id);
    let Some(first) = read(&db, id).await? else {
        return Ok(not_found());
    };
    let events = Events {
        session: SessionCheck::new(&admin, sessions.get_ref().clone(), db.get_ref().clone()),
        db: db.get_ref().clone(),
        id,
        watch,
        first: Some(first),
        finished: false,
    };
    let stream = futures::stream::unfold(events, |mut events| async move {
        let chunk = events.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), events))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        // A buffering proxy in front would hold events back.
        .insert_header((header::HeaderName::from_static("x-accel-buffering"), "no"))
        .streaming(stream))
}

async fn read(db: &Db, id: Uuid) -> Result<Option<Progress>, ApiError> {
    db.transaction(async |tx| ledger::progress(tx, id).await)
        .await
        .step("read the issue's progress")
}

/// One stream's state between chunks.
struct Events {
    session: SessionCheck,
    db: Db,
    id: Uuid,
    watch: Watch,
    /// Read before the answer started, sent first.
    first: Option<Progress>,
    finished: bool,
}

impl Events {
    /// The next chunk to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<web::Bytes> {
        if let Some(first) = self.first.take() {
            let mut chunk = format!("retry: {RETRY_MILLISECONDS}\n");
            chunk.push_str(&self.event(&first));
            return Some(chunk.into());
        }
        if self.finished {
            return None;
        }
        // Set once per chunk: the session checks in between must not put
        // the keep-alive off.
        let keep_alive = tokio::time::sleep(KEEP_ALIVE);
        tokio::pin!(keep_alive);
        loop {
            // Outside the select!, so that a busy issue's changes cannot
            // keep cancelling the check.
            if !self.session.still_stands().await {
                return None;
            }
            tokio::select! {
                changed = self.watch.changed() => {
                    // The feed stopped: the server is shutting down.
                    changed?;
                    return match read(&self.db, self.id).await {
                        Ok(Some(progress)) => Some(self.event(&progress).into()),
                        // Deleted meanwhile: nothing more to say.
                        Ok(None) => None,
                        Err(e) => {
                            // The browser connects again after the retry
                            // delay and gets a fresh first event.
                            tracing::warn!(error = ?e, "Ending an issue's live updates: its progress could not be read");
                            None
                        }
                    };
                }
                _ = self.session.due() => {}
                _ = &mut keep_alive => return Some(web::Bytes::from_static(b": still here\n\n")),
            }
        }
    }

    /// One event; remembers when it is the last the issue will have.
    fn event(&mut self, progress: &Progress) -> String {
        let view = ProgressView::new(progress);
        self.finished = view.finished;
        let data = serde_json::to_string(&view).expect("a view serialises");
        format!("data: {data}\n\n")
    }
}
