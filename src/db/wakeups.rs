//! Wake-ups between processes, through Postgres's LISTEN and NOTIFY: the one
//! way a commit in one replica tells the delivery loops and the live pages
//! of every other process that there is something to look at.
//!
//! Each process has one listening connection ([`Wakeups::start`]), on every
//! channel the process cares about, and hands each notification to the
//! subscribers of its channel ([`Wakeups::subscribe`]). Connecting and
//! `LISTEN` are bounded by the work timeout: the pool may hand over a
//! connection that has gone silent, and a `LISTEN` on it would wait for
//! ever. After a failure the listener waits, twice as long each time up to
//! [`RECONNECT_LAST`], and listens again; every subscriber is then told
//! that notifications may have been missed ([`Wakeup::Missed`]), as is one
//! that fell behind its channel. Nothing here is the only way work is
//! found: the loops also poll, so a lost notification only delays.
//!
//! Notifications go out after the commit that caused them, never inside the
//! transaction: a `NOTIFY` in a transaction makes Postgres serialise the
//! commits of every transaction that sends one. [`Notifier::ring`] is called
//! once the data is durable (from [`super::Transaction::after_commit`], say)
//! and sends one `pg_notify` per channel on a connection of its own; rings
//! that arrive while one is being sent fold into the next.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::telemetry::error_chain_line;

/// What a subscriber is woken by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// A notification on the subscriber's channel, with its payload.
    Notified(String),
    /// Notifications may have been missed (the listener was away, or the
    /// subscriber fell behind): whatever they would have said, look.
    Missed,
}

/// Notifications a slow subscriber may fall behind by before it is told
/// [`Wakeup::Missed`] instead.
const CAPACITY: usize = 1024;

/// Waits between attempts to listen again after a failure: doubling from
/// the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LAST: Duration = Duration::from_secs(30);

/// The process's listener, as subscribers see it. Cheap to clone.
#[derive(Clone)]
pub struct Wakeups {
    channels: Arc<HashMap<&'static str, broadcast::Sender<Wakeup>>>,
    listening: watch::Receiver<bool>,
}

impl Wakeups {
    /// Listens on `channels` on a connection of `db` until `stop` is
    /// cancelled.
    pub fn start(
        db: Db,
        channels: &[&'static str],
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let names = channels.to_vec();
        let channels: HashMap<_, _> = channels
            .iter()
            .map(|channel| (*channel, broadcast::channel(CAPACITY).0))
            .collect();
        let (listening_tx, listening) = watch::channel(false);
        let wakeups = Self {
            channels: Arc::new(channels),
            listening,
        };
        let task = tokio::spawn(listen(
            db,
            names,
            wakeups.channels.clone(),
            listening_tx,
            stop,
        ));
        (wakeups, task)
    }

    /// Subscribes to `channel`, from now on. A channel the listener was not
    /// started with never wakes anyone: its subscribers rely on polling.
    pub fn subscribe(&self, channel: &'static str) -> Subscription {
        debug_assert!(
            self.channels.contains_key(channel),
            "no listener on the channel {channel}"
        );
        Subscription {
            receiver: self.channels.get(channel).map(broadcast::Sender::subscribe),
        }
    }

    /// A listener on `channels` that is never connected, whose
    /// notifications a test sends itself with [`Wakeups::announce`].
    #[cfg(test)]
    pub(crate) fn unconnected(channels: &[&'static str]) -> Self {
        let channels = channels
            .iter()
            .map(|channel| (*channel, broadcast::channel(CAPACITY).0))
            .collect();
        Self {
            channels: Arc::new(channels),
            listening: watch::channel(false).1,
        }
    }

    /// Hands `wakeup` to the subscribers of `channel`, as the listener would.
    #[cfg(test)]
    pub(crate) fn announce(&self, channel: &str, wakeup: Wakeup) {
        let _ = self.channels[channel].send(wakeup);
    }

    /// Resolves once the listener has its `LISTEN` in place: a notification
    /// sent from now on reaches the subscribers. For tests and start-up
    /// checks; the service itself never waits for it.
    pub async fn listening(&self) {
        let mut listening = self.listening.clone();
        // Err: the listener stopped, and will never listen.
        let _ = listening.wait_for(|listening| *listening).await;
    }
}

/// One subscriber's view of one channel.
pub struct Subscription {
    receiver: Option<broadcast::Receiver<Wakeup>>,
}

impl Subscription {
    /// The next wake-up. Once the listener has stopped it never resolves:
    /// the subscriber's own stop signal ends its wait. Cancel-safe.
    pub async fn next(&mut self) -> Wakeup {
        let Some(receiver) = &mut self.receiver else {
            return std::future::pending().await;
        };
        match receiver.recv().await {
            Ok(wakeup) => wakeup,
            Err(broadcast::error::RecvError::Lagged(_)) => Wakeup::Missed,
            Err(broadcast::error::RecvError::Closed) => {
                self.receiver = None;
                std::future::pending().await
            }
        }
    }
}

impl Subscription {
    /// Drops the wake-ups queued for this subscriber: for one about to look
    /// anyway, which covers whatever they announced.
    pub fn skip_queued(&mut self) {
        if let Some(receiver) = &mut self.receiver {
            while !matches!(
                receiver.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
        }
    }
}

/// The listening loop: connect and listen (bounded), pass notifications on
/// until the connection fails; then wait and start again.
async fn listen(
    db: Db,
    names: Vec<&'static str>,
    channels: Arc<HashMap<&'static str, broadcast::Sender<Wakeup>>>,
    listening: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut wait = RECONNECT_FIRST;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            connected = tokio::time::timeout(db.work_timeout(), connect(&db, &names)) => connected,
        };
        match connected {
            Ok(Ok(mut listener)) => {
                listening.send_replace(true);
                // Whatever was sent while nobody listened is gone.
                for sender in channels.values() {
                    let _ = sender.send(Wakeup::Missed);
                }
                wait = RECONNECT_FIRST;
                let failure = tokio::select! {
                    _ = stop.cancelled() => return,
                    failure = pass_on(&mut listener, &channels) => failure,
                };
                listening.send_replace(false);
                tracing::warn!(
                    error = %error_chain_line(&failure),
                    "Lost the connection that listens for wake-ups; listening again"
                );
            }
            Ok(Err(e)) => tracing::error!(
                error = %error_chain_line(&e),
                retry_in_ms = wait.as_millis() as u64,
                "Cannot listen for wake-ups; delivery falls back to polling and live pages stop"
            ),
            Err(_) => tracing::error!(
                timeout_ms = db.work_timeout().as_millis() as u64,
                retry_in_ms = wait.as_millis() as u64,
                "Listening for wake-ups did not start in time; delivery falls back to polling"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RECONNECT_LAST);
    }
}

async fn connect(db: &Db, channels: &[&str]) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(db.pool()).await?;
    // A lost connection is reported rather than re-established inside
    // `try_recv`: the loop above is the one reconnect rule, and it tells the
    // subscribers that they may have missed something.
    listener.eager_reconnect(false);
    listener.listen_all(channels.iter().copied()).await?;
    Ok(listener)
}

/// Passes notifications on until the connection fails; returns why.
async fn pass_on(
    listener: &mut PgListener,
    channels: &HashMap<&'static str, broadcast::Sender<Wakeup>>,
) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if let Some(sender) = channels.get(notification.channel()) {
                    // No subscriber at all is the usual case, not an error.
                    let _ = sender.send(Wakeup::Notified(notification.payload().to_owned()));
                }
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

/// Sends notifications after commits. Cheap to clone; every clone rings the
/// same bell.
#[derive(Clone, Debug)]
pub struct Notifier {
    bell: Arc<Notify>,
    /// The channels rung since the last notifications went out.
    rung: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl Notifier {
    /// A notifier sending on a connection of `db` until `stop` is cancelled.
    pub fn start(db: Db, stop: CancellationToken) -> (Self, JoinHandle<()>) {
        let notifier = Self {
            bell: Arc::new(Notify::new()),
            rung: Arc::default(),
        };
        let task = tokio::spawn(notifier.clone().send_on_ring(db, stop));
        (notifier, task)
    }

    /// A notifier that sends nothing, for a process with no other process to
    /// wake (and for tests of one loop on its own).
    pub fn silent() -> Self {
        Self {
            bell: Arc::new(Notify::new()),
            rung: Arc::default(),
        }
    }

    /// Asks for a notification on `channel`. Call it after the commit whose
    /// data the notification announces.
    pub fn ring(&self, channel: &'static str) {
        self.rung
            .lock()
            .expect("no ring panics while holding the lock")
            .insert(channel);
        // notify_one keeps a permit when the sender is busy: a ring during
        // a send leads to one more round, never to none.
        self.bell.notify_one();
    }

    /// Sends one notification per channel rung, for each burst of rings.
    async fn send_on_ring(self, db: Db, stop: CancellationToken) {
        loop {
            tokio::select! {
                // A ring that came with the stop still goes out.
                biased;
                _ = self.bell.notified() => {}
                _ = stop.cancelled() => return,
            }
            let channels = std::mem::take(
                &mut *self
                    .rung
                    .lock()
                    .expect("no ring panics while holding the lock"),
            );
            for channel in channels {
                // Bounded, so that a silent connection cannot hold up
                // shutdown.
                let sent = db
                    .bounded(|connection| {
                        Box::pin(
                            sqlx::query("SELECT pg_notify($1, '')")
                                .bind(channel)
                                .execute(connection),
                        )
                    })
                    .await;
                if let Err(e) = sent {
                    // The loops poll as well: a lost notification only
                    // delays.
                    tracing::debug!(error = %error_chain_line(&e), channel, "Failed to send a wake-up");
                }
            }
        }
    }
}
