//! How a committed email reaches a worker at once. Workers in this process
//! are woken directly. Workers elsewhere (other replicas, `newsletter
//! worker`) are woken by a notification on [`CHANNEL`], which the process's
//! [`Notifier`] sends after the commit: a NOTIFY inside the subscriber's
//! transaction would make Postgres serialise every such commit. Rings that
//! arrive while a notification is being sent fold into the next one, so a
//! burst of subscriptions costs a handful of notifications.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::db::wakeups::Notifier;

/// The channel workers listen on.
pub const CHANNEL: &str = "email_outbox";

#[derive(Clone)]
pub struct Doorbell {
    local: Arc<Notify>,
    notifier: Notifier,
}

impl Doorbell {
    pub fn new(notifier: Notifier) -> Self {
        Self {
            local: Arc::default(),
            notifier,
        }
    }

    /// Call after committing a transaction that queued email.
    pub fn ring(&self) {
        // notify_one keeps a permit when nobody waits yet: a worker busy
        // sending finds it when it next waits, so no ring is lost.
        self.local.notify_one();
        self.notifier.ring(CHANNEL);
    }

    /// Resolves at the next ring in this process (or at once if one came
    /// since the last wait).
    pub async fn rung(&self) {
        self.local.notified().await;
    }
}
