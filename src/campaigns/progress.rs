//! Carries the database's announcements of changed issues to the pages
//! watching them. Every change to an issue's row is announced by a trigger
//! on [`PROGRESS_CHANNEL`], whichever replica or worker made it; the
//! process's one listener ([`crate::db::wakeups`]) passes it to every
//! watcher ([`Watch`]), which waits for its own issue's announcements and
//! lets its owner read the issue's one row again, at most every
//! [`Watch::MIN_INTERVAL`]: a campaign that settles thousands of deliveries
//! a second announces thousands of changes, and a page needs a few of them.
//!
//! An import's row announces its changes on the same channel, with its
//! own id ([`crate::imports`]): a watch of that id follows an import.
//!
//! Nothing here polls: when the listening connection is lost, notifications
//! sent meanwhile are gone, so once it is back every watcher is told to read
//! again. A watcher that fell behind is told the same. When the feed stops
//! (the server is stopping), every watcher's [`Watch::changed`] returns
//! `None`, which ends the streams built on it instead of holding the
//! server's shutdown up.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::campaigns::ledger::PROGRESS_CHANNEL;
use crate::db::wakeups::{Subscription, Wakeup, Wakeups};

/// What the pages watching issues need: the process's listener, and when
/// to stop. Cheap to clone.
#[derive(Clone)]
pub struct ProgressFeed {
    wakeups: Wakeups,
    stop: CancellationToken,
}

impl ProgressFeed {
    /// Watches end once `stop` is cancelled. `wakeups` must listen on
    /// [`PROGRESS_CHANNEL`].
    pub fn new(wakeups: Wakeups, stop: CancellationToken) -> Self {
        Self { wakeups, stop }
    }

    /// Watches one issue, from now on.
    pub fn watch(&self, issue_id: Uuid) -> Watch {
        Watch {
            issue_id,
            changes: self.wakeups.subscribe(PROGRESS_CHANNEL),
            stop: self.stop.clone(),
            last: None,
            pending: false,
        }
    }
}

/// One issue, watched for changes.
pub struct Watch {
    issue_id: Uuid,
    changes: Subscription,
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
                received = self.changes.next() => received,
            };
            // The trigger sends the issue's id; anything else on the channel
            // would be a stranger, and reading again is always safe.
            let other_issue = matches!(
                &received,
                Wakeup::Notified(payload)
                    if payload.parse::<Uuid>().is_ok_and(|id| id != self.issue_id)
            );
            if !other_issue {
                self.pending = true;
            }
        }
        if let Some(last) = self.last {
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep_until(last + Self::MIN_INTERVAL) => {}
            }
        }
        // What queued up meanwhile is covered by the read that follows.
        self.changes.skip_queued();
        self.pending = false;
        self.last = Some(Instant::now());
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed, and what announces changes to it.
    fn feed() -> (ProgressFeed, Announcer) {
        let wakeups = Wakeups::unconnected(&[PROGRESS_CHANNEL]);
        let feed = ProgressFeed::new(wakeups.clone(), CancellationToken::new());
        (feed, Announcer(wakeups))
    }

    struct Announcer(Wakeups);

    impl Announcer {
        fn send(&self, change: Change) -> Result<(), ()> {
            let wakeup = match change {
                Change::Issue(id) => Wakeup::Notified(id.to_string()),
                Change::Unknown => Wakeup::Missed,
            };
            self.0.announce(PROGRESS_CHANNEL, wakeup);
            Ok(())
        }
    }

    enum Change {
        Issue(Uuid),
        Unknown,
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
        for _ in 0..3_000 {
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
