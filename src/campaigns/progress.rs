//! Carries the database's announcements of changed issues to the pages
//! watching them. Every change to an issue's row is announced by a trigger
//! on [`PROGRESS_CHANNEL`], whichever replica or worker made it; one
//! connection per process listens ([`ProgressFeed::start`]) and passes each
//! announced issue id to every watcher through a broadcast channel. A
//! watcher ([`Watch`]) waits for its own issue's announcements and lets its
//! owner read the issue's one row again, at most every
//! [`Watch::MIN_INTERVAL`]: a campaign that settles thousands of deliveries a
//! second announces thousands of changes, and a page needs a few of them.
//!
//! Nothing here polls: when the listening connection is lost, notifications
//! sent meanwhile are gone, so once it is back every watcher is told to read
//! again ([`Change::Unknown`]). A watcher that fell behind the channel is
//! told the same. When the feed stops (the server is stopping), every
//! watcher's [`Watch::changed`] returns `None`, which ends the streams
//! built on it instead of holding the server's shutdown up.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::campaigns::ledger::PROGRESS_CHANNEL;
use crate::db::Db;
use crate::telemetry::error_chain_line;

/// What the feed passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This issue's row changed.
    Issue(Uuid),
    /// Any issue may have changed: announcements were missed.
    Unknown,
}

/// Announcements a slow watcher may fall behind by before it lags (and then
/// reads again, which covers whatever it missed).
const CAPACITY: usize = 1024;

/// Waits between attempts to listen again after the connection failed:
/// doubling from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LAST: Duration = Duration::from_secs(30);

/// The process's one listener, as seen by watchers. Cheap to clone.
#[derive(Clone)]
pub struct ProgressFeed {
    changes: broadcast::Sender<Change>,
    stop: CancellationToken,
}

impl ProgressFeed {
    /// Listens on a connection of `db` until `stop` is cancelled, then
    /// ends every watch. The task reconnects on its own after a lost
    /// connection, waiting longer after each failed attempt.
    pub fn start(db: Db, stop: CancellationToken) -> (Self, JoinHandle<()>) {
        let (changes, _) = broadcast::channel(CAPACITY);
        let feed = Self {
            changes: changes.clone(),
            stop: stop.clone(),
        };
        let task = tokio::spawn(listen(db, changes, stop));
        (feed, task)
    }

    /// Watches one issue, from now on.
    pub fn watch(&self, issue_id: Uuid) -> Watch {
        Watch {
            issue_id,
            changes: self.changes.subscribe(),
            stop: self.stop.clone(),
            last: None,
            pending: false,
        }
    }
}

/// The listening loop: connect, listen, pass announcements on; after a
/// failure, wait and start again.
async fn listen(db: Db, changes: broadcast::Sender<Change>, stop: CancellationToken) {
    let mut wait = RECONNECT_FIRST;
    while !stop.is_cancelled() {
        let listener = tokio::select! {
            _ = stop.cancelled() => return,
            listener = connect(&db) => listener,
        };
        match listener {
            Ok(mut listener) => {
                // Whatever changed while nobody listened was not announced.
                let _ = changes.send(Change::Unknown);
                wait = RECONNECT_FIRST;
                let failure = tokio::select! {
                    _ = stop.cancelled() => return,
                    failure = pass_on(&mut listener, &changes) => failure,
                };
                tracing::warn!(
                    error = %error_chain_line(&failure),
                    "Lost the connection that listens for newsletter progress; listening again"
                );
            }
            Err(e) => {
                tracing::error!(
                    error = %error_chain_line(&e),
                    retry_in_ms = wait.as_millis() as u64,
                    "Cannot listen for newsletter progress; pages watching an issue get no updates"
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RECONNECT_LAST);
    }
}

async fn connect(db: &Db) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(db.pool()).await?;
    // A lost connection is reported rather than re-established inside
    // `try_recv`: this loop says so, and tells the watchers to read again.
    listener.eager_reconnect(false);
    listener.listen(PROGRESS_CHANNEL).await?;
    Ok(listener)
}

/// Passes announcements on until the connection fails; returns why.
async fn pass_on(listener: &mut PgListener, changes: &broadcast::Sender<Change>) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                // The trigger sends the issue's id; anything else would be a
                // stranger on the channel, and reading every issue is safe.
                let change = notification
                    .payload()
                    .parse()
                    .map_or(Change::Unknown, Change::Issue);
                // No watcher at all is the usual case, and not an error.
                let _ = changes.send(change);
            }
            Ok(None) => {
                return sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the listening connection closed",
                ));
            }
            Err(e) => return e,
        }
    }
}

/// One issue, watched for changes.
pub struct Watch {
    issue_id: Uuid,
    changes: broadcast::Receiver<Change>,
    stop: CancellationToken,
    /// When `changed` last returned.
    last: Option<Instant>,
    /// A change was received and not yet reported.
    pending: bool,
}

impl Watch {
    /// The shortest time between two reads a watch asks for.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

    /// Resolves once the issue may have changed since the previous call
    /// returned, and no sooner than [`Watch::MIN_INTERVAL`] after it; `None`
    /// once the feed has stopped. Announcements that arrive while it waits
    /// out the interval fold into this one: a read made after it returns
    /// sees every change they announced, since each is sent after its
    /// change commits.
    ///
    /// Cancel-safe: a change received before the caller gave up waiting (a
    /// keep-alive timer won the race) is remembered for the next call.
    pub async fn changed(&mut self) -> Option<()> {
        while !self.pending {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return None,
                received = self.changes.recv() => received,
            };
            match received {
                Ok(Change::Issue(id)) if id != self.issue_id => {}
                Ok(_) | Err(RecvError::Lagged(_)) => self.pending = true,
                Err(RecvError::Closed) => return None,
            }
        }
        if let Some(last) = self.last {
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep_until(last + Self::MIN_INTERVAL) => {}
            }
        }
        // What queued up meanwhile is covered by the read that follows.
        loop {
            match self.changes.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return None,
            }
        }
        self.pending = false;
        self.last = Some(Instant::now());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> (ProgressFeed, broadcast::Sender<Change>) {
        let (changes, _) = broadcast::channel(4);
        let feed = ProgressFeed {
            changes: changes.clone(),
            stop: CancellationToken::new(),
        };
        (feed, changes)
    }

    #[tokio::test]
    async fn a_watch_wakes_for_its_own_issue_and_for_missed_announcements_only() {
        let (feed, changes) = feed();
        let mine = Uuid::new_v4();
        let mut watch = feed.watch(mine);

        changes.send(Change::Issue(Uuid::new_v4())).unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(300), watch.changed()).await;
        assert!(woke.is_err(), "woke for another issue");

        changes.send(Change::Issue(mine)).unwrap();
        assert_eq!(watch.changed().await, Some(()));
        changes.send(Change::Unknown).unwrap();
        assert_eq!(watch.changed().await, Some(()));
    }

    #[tokio::test]
    async fn a_burst_of_announcements_wakes_a_watch_once_per_interval() {
        let (feed, changes) = feed();
        let mine = Uuid::new_v4();
        let mut watch = feed.watch(mine);
        changes.send(Change::Issue(mine)).unwrap();
        watch.changed().await.unwrap();
        let first = Instant::now();

        // Far more than the channel holds: the watch lags, and must not fail.
        for _ in 0..100 {
            let _ = changes.send(Change::Issue(mine));
        }
        watch.changed().await.unwrap();
        assert!(Instant::now() >= first + Watch::MIN_INTERVAL);
        // The burst was folded into that one wake-up.
        let again = tokio::time::timeout(Duration::from_millis(600), watch.changed()).await;
        assert!(again.is_err(), "woke again for announcements already read");
    }

    #[tokio::test]
    async fn a_change_received_by_a_wait_given_up_on_is_reported_by_the_next() {
        let (feed, changes) = feed();
        let mine = Uuid::new_v4();
        let mut watch = feed.watch(mine);
        changes.send(Change::Issue(mine)).unwrap();
        watch.changed().await.unwrap();

        // The next wait receives this, then waits out the interval, and is
        // given up on meanwhile.
        changes.send(Change::Issue(mine)).unwrap();
        let given_up = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(given_up.is_err());

        let next = tokio::time::timeout(Duration::from_secs(1), watch.changed()).await;
        assert_eq!(next, Ok(Some(())), "the change was lost");
    }

    #[tokio::test]
    async fn a_stopped_feed_ends_every_watch() {
        let (feed, _changes) = feed();
        let mut watch = feed.watch(Uuid::new_v4());
        feed.stop.cancel();
        assert_eq!(watch.changed().await, None);
    }
}
