//! A long answer (an issue's live progress stream) outlasts the request the
//! guard let through: without a second look it would keep flowing after
//! sign-out, a password change or the session's expiry. [`SessionCheck`]
//! asks again, every [`SessionCheck::INTERVAL`], the two questions the guard
//! asked, and the answer ends as soon as either has changed:
//!
//! - does Redis still hold the session? Sign-out, a password change made in
//!   the newsroom (which destroys every session of the admin) and expiry
//!   remove it. The lookup is [`SessionStore::peek`], which does not slide
//!   the idle timeout: an open page is not a person using the newsroom, and
//!   must not keep a session alive until its lifetime.
//! - is the session's generation still the admin's? `newsletter admin
//!   reset-password` raises it without reaching Redis.
//!
//! One Redis `GET` and one primary-key read per open stream every couple of
//! seconds: cheap next to the progress reads the stream makes anyway.
//!
//! When Redis or Postgres cannot answer, the answer ends too. The session
//! can no longer be vouched for, so flowing on would be failing open; and
//! ending costs little: the browser connects again after the stream's retry
//! delay, and the guard answers that request as it answers any other (503
//! while Redis is down, the stream again once it is back).

use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::admin::accounts;
use crate::admin::guard::SignedIn;
use crate::admin::sessions::{SessionId, SessionStore, Stage};
use crate::db::Db;

/// Whether the session behind a long answer still stands, asked again every
/// [`SessionCheck::INTERVAL`]. Holds only what it needs (no `Rc`), so it can
/// live in the answer's stream.
pub struct SessionCheck {
    store: SessionStore,
    db: Db,
    id: SessionId,
    admin_id: Uuid,
    generation: i64,
    next: Instant,
}

impl SessionCheck {
    /// How long a stream may run on after its session has ended, at most
    /// (plus one check's time). Tests rely on it only through a deadline.
    pub const INTERVAL: Duration = Duration::from_secs(2);

    /// Starts from the guard's answer: the first check is one interval on.
    pub fn new(admin: &SignedIn, store: SessionStore, db: Db) -> Self {
        Self {
            store,
            db,
            id: admin.session.id.clone(),
            admin_id: admin.admin.id,
            generation: admin.session.data.generation,
            next: Instant::now() + Self::INTERVAL,
        }
    }

    /// Resolves when the next check is due.
    pub async fn due(&self) {
        tokio::time::sleep_until(self.next).await;
    }

    /// `false` once the session has ended (or cannot be vouched for). Before
    /// a check is due it answers `true` at once; when one is due it asks
    /// Redis and Postgres and schedules the next one.
    ///
    /// Not meant to be raced against other work in a `select!`: a check
    /// cancelled midway would be skipped until the next interval. Callers
    /// await it on its own, then wait for [`SessionCheck::due`] in their
    /// `select!`, which is safe to cancel.
    pub async fn still_stands(&mut self) -> bool {
        if Instant::now() < self.next {
            return true;
        }
        let stands = self.check().await;
        self.next = Instant::now() + Self::INTERVAL;
        stands
    }

    async fn check(&self) -> bool {
        let session = match self.store.peek(&self.id).await {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(error = ?e, "Ending a live answer: the session cannot be checked");
                return false;
            }
        };
        let Some(session) = session else {
            tracing::info!(admin_id = %self.admin_id, "Ending a live answer: its session has ended");
            return false;
        };
        if session.stage != Stage::SignedIn || session.generation != self.generation {
            return false;
        }
        let admin = self
            .db
            .transaction(async |tx| accounts::find(tx, self.admin_id).await)
            .await;
        match admin {
            Ok(Some(admin)) if admin.session_generation == self.generation => true,
            Ok(_) => {
                tracing::info!(
                    admin_id = %self.admin_id,
                    "Ending a live answer: the admin's password changed, or the admin is gone"
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = ?e, "Ending a live answer: the admin's account cannot be checked");
                false
            }
        }
    }
}
