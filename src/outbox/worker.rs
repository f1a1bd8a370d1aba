//! The delivery loop. A worker repeats: claim a batch of due messages, send
//! each, record the outcome; then sleep until a notification or the poll
//! interval, whichever comes first.
//!
//! Shutdown: when the token is cancelled the worker finishes the messages it
//! is sending (bounded by the email client's timeout), records the outcomes,
//! hands back any it claimed but had not started, and returns. A worker killed outright
//! hands nothing back; its claims lapse and another worker takes over.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::DeliverySettings;
use crate::domain::SubscriberEmail;
use crate::email_client::{EmailClient, EmailError, Message};
use crate::outbox::backoff::retry_delay;
use crate::outbox::doorbell::{CHANNEL, Doorbell};
use crate::outbox::store::{self, ClaimedEmail};
use crate::telemetry::error_chain_line as chain;

#[derive(Clone)]
pub struct DeliveryWorker {
    pool: PgPool,
    email_client: EmailClient,
    settings: DeliverySettings,
    doorbell: Doorbell,
}

/// Starts `settings.workers` delivery tasks on the current runtime.
pub fn spawn_workers(worker: DeliveryWorker, shutdown: CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for n in 0..worker.settings.workers {
        let worker = worker.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            tracing::info!(worker = n, "Delivery worker started");
            worker.run(shutdown).await;
            tracing::info!(worker = n, "Delivery worker stopped");
        });
    }
    tasks
}

/// Why one delivery attempt did not succeed.
enum Failure {
    /// The API may accept the message later.
    Transient(EmailError),
    /// It never will.
    Permanent(String),
}

impl DeliveryWorker {
    pub fn new(pool: PgPool, email_client: EmailClient, settings: DeliverySettings) -> Self {
        Self {
            pool,
            email_client,
            settings,
            doorbell: Doorbell::default(),
        }
    }

    /// Wakes this worker when the given doorbell rings (handlers in the same
    /// process ring it after committing email).
    pub fn with_doorbell(mut self, doorbell: Doorbell) -> Self {
        self.doorbell = doorbell;
        self
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener: Option<PgListener> = None;
        let mut outage = Outage::default();
        while !shutdown.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            let claimed = match self.deliver_due(&shutdown).await {
                Ok(claimed) => {
                    outage.ended();
                    claimed
                }
                Err(e) => {
                    outage.continues(&e);
                    0
                }
            };
            // A full batch suggests more are due: go again without waiting.
            if claimed as i64 == self.settings.batch_size {
                continue;
            }
            // Some were due: more are probably coming. Let them gather rather
            // than claim each one in a transaction of its own.
            if claimed > 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.batch_linger()) => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.doorbell.rung() => {}
                _ = next_notification(&mut listener) => {}
                _ = tokio::time::sleep(self.settings.poll_interval()) => {}
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Claims one batch and delivers its messages concurrently; returns how
    /// many were claimed.
    async fn deliver_due(&self, shutdown: &CancellationToken) -> Result<usize, sqlx::Error> {
        let batch = store::claim_due(
            &self.pool,
            self.settings.claim_timeout(),
            self.settings.batch_size,
        )
        .await?;
        let claimed = batch.len();
        // Messages claimed just as shutdown began are handed back unsent.
        let (unsent, to_send): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|_| shutdown.is_cancelled());
        let sent: Vec<Uuid> =
            futures::future::join_all(to_send.into_iter().map(|m| self.deliver(m)))
                .await
                .into_iter()
                .flatten()
                .collect();
        if !sent.is_empty() {
            // One statement for the whole batch: under load this halves the
            // queries the worker makes per email.
            self.record("mark the emails as sent", || {
                store::mark_sent(&self.pool, &sent)
            })
            .await;
        }
        if !unsent.is_empty() {
            let ids: Vec<Uuid> = unsent.iter().map(|m| m.id).collect();
            self.record("release the unsent part of the batch", || {
                store::release(&self.pool, &ids)
            })
            .await;
        }
        Ok(claimed)
    }

    #[tracing::instrument(
        name = "Deliver an email",
        skip_all,
        fields(outbox_id = %message.id, attempt = message.attempts)
    )]
    /// Sends one message and records a failure; returns the id of a message
    /// the API accepted, for the caller to mark as sent with the rest of its
    /// batch.
    async fn deliver(&self, message: ClaimedEmail) -> Option<Uuid> {
        let id = message.id;
        match self.send(&message).await {
            Ok(()) => {
                tracing::info!("Email accepted by the email API");
                return Some(id);
            }
            Err(Failure::Transient(e)) if message.attempts < self.settings.max_attempts => {
                let delay = retry_delay(
                    message.attempts,
                    self.settings.backoff_base(),
                    self.settings.backoff_max(),
                    e.retry_after(),
                );
                let error = chain(&e);
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "Email not sent, will retry");
                self.record("schedule a retry", || {
                    store::reschedule(&self.pool, id, delay, &error)
                })
                .await;
            }
            Err(failure) => {
                let error = match failure {
                    Failure::Transient(e) => {
                        format!("gave up after {} attempts: {}", message.attempts, chain(&e))
                    }
                    Failure::Permanent(reason) => reason,
                };
                tracing::error!(error = %error, "Email could not be delivered; kept as failed");
                self.record("mark the email as failed", || {
                    store::mark_failed(&self.pool, id, &error)
                })
                .await;
            }
        }
        None
    }

    async fn send(&self, message: &ClaimedEmail) -> Result<(), Failure> {
        let to = SubscriberEmail::parse(&message.recipient)
            .map_err(|e| Failure::Permanent(format!("invalid recipient: {e}")))?;
        let (Some(html_body), Some(text_body)) = (&message.html_body, &message.text_body) else {
            return Err(Failure::Permanent("the message has no body".into()));
        };
        self.email_client
            .send_email(Message {
                to: &to,
                subject: &message.subject,
                html_body,
                text_body,
                message_stream: &message.message_stream,
            })
            .await
            .map_err(|e| {
                if e.is_retryable() {
                    Failure::Transient(e)
                } else {
                    Failure::Permanent(chain(&e))
                }
            })
    }

    /// Writes an outcome, retrying for a while if Postgres is unavailable.
    /// The email has already left (or not) at this point; losing the record
    /// of a sent message would get it sent twice once its claim lapses.
    async fn record<F, Fut>(&self, what: &str, write: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), sqlx::Error>>,
    {
        let mut delay = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + self.settings.claim_timeout() / 2;
        loop {
            match write().await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, "Failed to {what}, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        "Failed to {what}; the message will be retried when its claim lapses"
                    );
                    return;
                }
            }
        }
    }
}

/// Resolves when a notification arrives, or when the listening connection
/// was lost and re-established (notifications sent meanwhile are gone, so it
/// is time to look). With no usable listener it never resolves and the poll
/// interval takes over.
async fn next_notification(listener: &mut Option<PgListener>) {
    match listener {
        Some(active) => match active.try_recv().await {
            Ok(_) => {}
            Err(_) => {
                *listener = None;
                std::future::pending::<()>().await
            }
        },
        None => std::future::pending::<()>().await,
    }
}

/// Logs a database outage once when it starts and once when it ends, rather
/// than on every poll.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    fn continues(&mut self, error: &sqlx::Error) {
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
            tracing::error!(error = %chain(error), "Email delivery paused: the outbox cannot be read");
        }
    }

    fn ended(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                paused_for_ms = since.elapsed().as_millis() as u64,
                "Email delivery resumed"
            );
        }
    }
}
