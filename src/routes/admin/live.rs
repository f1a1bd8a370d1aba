//! The live updates the newsroom's long-running pages listen to (an issue
//! being sent, an import being read and merged), as Server-Sent Events.
//! One event at once, with where the thing stands; then one after each
//! change to it, read from its row when the progress feed says it changed,
//! at most every [`Watch::MIN_INTERVAL`]; every [`KEEP_ALIVE`] of quiet,
//! the thing read again (sent if it changed) or else a comment, so that
//! proxies keep a quiet stream open. Once it is finished, the stream
//! sends that and ends; it also ends when the server stops, and within
//! [`SessionCheck::INTERVAL`] of its session ending (sign-out, a password
//! change, expiry).
//!
//! Each page says how to read its thing and when it is finished
//! ([`Reading`]); the stream, its safeguards and its headers are this one
//! module's, so that every live page keeps them alike.

use std::time::Duration;

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use futures::future::LocalBoxFuture;
use uuid::Uuid;

use crate::admin::guard::SignedIn;
use crate::admin::session_check::SessionCheck;
use crate::admin::sessions::SessionStore;
use crate::campaigns::progress::{ProgressFeed, Watch};
use crate::db::Db;
use crate::web::error::ApiError;

/// How often a quiet stream says it is still there.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a browser waits before it connects again after the stream
/// broke off (or ended while the page stays open).
const RETRY_MILLISECONDS: u32 = 5_000;

/// One reading of the watched thing: its view as JSON, and whether it is
/// the last the thing will have.
pub struct Update {
    pub data: String,
    pub finished: bool,
}

impl Update {
    pub fn new(view: &impl serde::Serialize, finished: bool) -> Self {
        Self {
            data: serde_json::to_string(view).expect("a view serialises"),
            finished,
        }
    }
}

/// One reading of the watched thing, or `None` once it is gone.
pub type Read = LocalBoxFuture<'static, Result<Option<Update>, ApiError>>;

/// Reads the watched thing again.
type Reading = Box<dyn Fn(Db) -> Read>;

/// A page's live updates for the thing `id` names, read with `read`: 404
/// with `missing` for an id that names nothing (which also tells a
/// browser's EventSource to stop connecting), else the stream.
pub async fn follow(
    id: Option<Uuid>,
    missing: &'static str,
    admin: &SignedIn,
    sessions: &SessionStore,
    db: &Db,
    feed: &ProgressFeed,
    read: fn(Db, Uuid) -> Read,
) -> Result<HttpResponse, ApiError> {
    let not_found = || {
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(missing)
    };
    let Some(id) = id else {
        return Ok(not_found());
    };
    // Watching starts before the first read, so that a change committed
    // between the two is not missed.
    let watch = feed.watch(id);
    let Some(first) = read(db.clone(), id).await? else {
        return Ok(not_found());
    };
    let reading: Reading = Box::new(move |db| read(db, id));
    Ok(stream(admin, sessions, db, watch, first, reading))
}

/// The stream's answer, starting with `first` (read after `watch` began, so
/// that a change committed between the two is not missed).
fn stream(
    admin: &SignedIn,
    sessions: &SessionStore,
    db: &Db,
    watch: Watch,
    first: Update,
    read: Reading,
) -> HttpResponse {
    let events = Events {
        session: SessionCheck::new(admin, sessions.clone(), db.clone()),
        db: db.clone(),
        read,
        watch,
        first: Some(first),
        last: None,
        finished: false,
    };
    let stream = futures::stream::unfold(events, |mut events| async move {
        let chunk = events.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), events))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        // A buffering proxy in front would hold events back.
        .insert_header((header::HeaderName::from_static("x-accel-buffering"), "no"))
        .streaming(stream)
}

/// One stream's state between chunks.
struct Events {
    session: SessionCheck,
    db: Db,
    read: Reading,
    watch: Watch,
    /// Read before the answer started, sent first.
    first: Option<Update>,
    /// The data of the last event sent.
    last: Option<String>,
    finished: bool,
}

impl Events {
    /// The next chunk to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<web::Bytes> {
        if let Some(first) = self.first.take() {
            let mut chunk = format!("retry: {RETRY_MILLISECONDS}\n");
            chunk.push_str(&self.event(first));
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
            // Outside the select!, so that a busy thing's changes cannot
            // keep cancelling the check.
            if !self.session.still_stands().await {
                return None;
            }
            tokio::select! {
                changed = self.watch.changed() => {
                    // The feed stopped: the server is shutting down.
                    changed?;
                    return match (self.read)(self.db.clone()).await {
                        Ok(Some(update)) => Some(self.event(update).into()),
                        // Deleted meanwhile: nothing more to say.
                        Ok(None) => None,
                        Err(e) => {
                            // The browser connects again after the retry
                            // delay and gets a fresh first event.
                            tracing::warn!(error = ?e, "Ending live updates: the progress could not be read");
                            None
                        }
                    };
                }
                _ = self.session.due() => {}
                _ = &mut keep_alive => {
                    // Some things stop without a change to their row (an
                    // import whose process died lets go of its lock, and
                    // nothing else): a quiet stream reads its thing again.
                    if let Ok(Some(update)) = (self.read)(self.db.clone()).await
                        && self.last.as_deref() != Some(update.data.as_str())
                    {
                        return Some(self.event(update).into());
                    }
                    return Some(web::Bytes::from_static(b": still here\n\n"));
                }
            }
        }
    }

    /// One event; remembers when it is the last there will be.
    fn event(&mut self, update: Update) -> String {
        self.finished = update.finished;
        let event = format!("data: {}\n\n", update.data);
        self.last = Some(update.data);
        event
    }
}
