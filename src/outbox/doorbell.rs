//! How a committed email reaches a worker at once. Workers in this process
//! are woken directly. Workers elsewhere (other replicas, `newsletter
//! worker`) listen for a Postgres notification, which is sent after the
//! commit on a connection of its own: a NOTIFY inside the subscriber's
//! transaction would make Postgres serialise every such commit. Rings that
//! arrive while a notification is being sent fold into the next one, so a
//! burst of subscriptions costs a handful of notifications.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// The channel workers listen on.
pub const CHANNEL: &str = "email_outbox";

#[derive(Clone, Default)]
pub struct Doorbell {
    local: Arc<Notify>,
    remote: Arc<Notify>,
}

impl Doorbell {
    /// Call after committing a transaction that queued email.
    pub fn ring(&self) {
        // notify_one keeps a permit when nobody waits yet: a worker busy
        // sending finds it when it next waits, so no ring is lost.
        self.local.notify_one();
        self.remote.notify_one();
    }

    /// Resolves at the next ring (or at once if one came since the last wait).
    pub async fn rung(&self) {
        self.local.notified().await;
    }

    /// Sends a notification to other processes' workers for each burst of
    /// rings, until `stop` is cancelled.
    pub async fn notify_other_processes(self, db: Db, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.remote.notified() => {}
            }
            // Bounded, so that a silent connection cannot hold up shutdown.
            let sent = db
                .bounded(|connection| {
                    Box::pin(
                        sqlx::query("SELECT pg_notify($1, '')")
                            .bind(CHANNEL)
                            .execute(connection),
                    )
                })
                .await;
            if let Err(e) = sent {
                // The workers poll as well: a lost notification only delays.
                tracing::debug!(error = %e, "Failed to notify the delivery workers");
            }
        }
    }
}
