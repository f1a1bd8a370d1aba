//! The delivery loop. A worker repeats: claim a batch of due messages, send
//! them to the email API in one call, record each outcome; then, if the
//! batch had messages, let more gather for a moment, or else sleep until a
//! notification or the poll interval, whichever comes first.
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
use crate::email_client::{EmailClient, EmailError, Message, Verdict};
use crate::outbox::backoff::retry_delay;
use crate::outbox::doorbell::{CHANNEL, Doorbell};
use crate::outbox::handoff::{Handed, HandoffQueue};
use crate::outbox::store::{self, ClaimedEmail};
use crate::telemetry::error_chain_line as chain;

#[derive(Clone)]
pub struct DeliveryWorker {
    pool: PgPool,
    email_client: EmailClient,
    settings: DeliverySettings,
    doorbell: Doorbell,
}

/// Starts `settings.workers` delivery tasks on the current runtime, and one
/// more for the messages handed over in this process, if it takes any.
pub fn spawn_workers(
    worker: DeliveryWorker,
    handoff: Option<HandoffQueue>,
    shutdown: CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if let Some(queue) = handoff {
        tasks.spawn(worker.clone().deliver_handed_over(queue, shutdown.clone()));
    }
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

/// A claimed message with a recipient and bodies that can be sent.
struct Ready {
    email: ClaimedEmail,
    to: SubscriberEmail,
}

impl Ready {
    /// The recipient to send to, or why this message can never be sent.
    fn recipient(email: &ClaimedEmail) -> Result<SubscriberEmail, String> {
        if email.html_body.is_none() || email.text_body.is_none() {
            return Err("the message has no body".into());
        }
        SubscriberEmail::parse(&email.recipient).map_err(|e| format!("invalid recipient: {e}"))
    }

    fn message(&self) -> Message<'_> {
        Message {
            to: &self.to,
            subject: &self.email.subject,
            html_body: self.email.html_body.as_deref().unwrap_or_default(),
            text_body: self.email.text_body.as_deref().unwrap_or_default(),
            message_stream: &self.email.message_stream,
        }
    }
}

/// Why one delivery attempt did not succeed.
#[derive(Clone)]
enum Failure {
    /// The API may accept the message later (no sooner than `retry_after`,
    /// if it said so).
    Transient {
        error: String,
        retry_after: Option<Duration>,
    },
    /// It never will.
    Permanent(String),
}

impl From<&EmailError> for Failure {
    fn from(e: &EmailError) -> Self {
        if e.is_retryable() {
            Failure::Transient {
                error: chain(e),
                retry_after: e.retry_after(),
            }
        } else {
            Failure::Permanent(chain(e))
        }
    }
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
                self.linger(&shutdown).await;
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

    /// Delivers the messages handlers in this process committed already
    /// claimed, in batches as the claim loop makes them: what is queued goes
    /// at once, and after a batch that was not full more may gather for the
    /// linger, or until they fill a batch. On shutdown it takes no more and
    /// delivers what is queued.
    pub async fn deliver_handed_over(self, queue: HandoffQueue, shutdown: CancellationToken) {
        let HandoffQueue(mut queue) = queue;
        let limit = self.settings.batch_size as usize;
        let mut handed = Vec::with_capacity(limit);
        let mut closed = false;
        loop {
            if handed.is_empty() {
                let received = tokio::select! {
                    received = queue.recv_many(&mut handed, limit) => received,
                    _ = shutdown.cancelled(), if !closed => {
                        // Places already reserved still arrive; recv_many
                        // returns 0 once they have and the queue is empty.
                        queue.close();
                        closed = true;
                        continue;
                    }
                };
                if received == 0 {
                    return;
                }
            }
            let full = handed.len() >= limit;
            self.deliver_in_time(handed.drain(..)).await;
            if !full && !closed {
                self.gather(&mut queue, &mut handed, limit, &shutdown).await;
            }
        }
    }

    /// Takes messages off the queue into `handed` for up to the linger,
    /// stopping early once they fill a batch. Taking them, rather than
    /// sleeping while they pile up, keeps the queue's places free: a busy
    /// instance would otherwise fill the queue during the linger and send the
    /// rest the long way.
    async fn gather(
        &self,
        queue: &mut tokio::sync::mpsc::Receiver<Handed>,
        handed: &mut Vec<Handed>,
        limit: usize,
        shutdown: &CancellationToken,
    ) {
        let deadline = tokio::time::Instant::now() + self.settings.batch_linger();
        while handed.len() < limit {
            tokio::select! {
                received = queue.recv_many(handed, limit - handed.len()) => {
                    if received == 0 {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Lets more messages gather after a batch that was not full, unless
    /// shutdown begins meanwhile.
    async fn linger(&self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(self.settings.batch_linger()) => {}
        }
    }

    /// Sends the handed-over messages that can still go out before their
    /// claims lapse. The others are left alone: once their claims lapse a
    /// worker claims them, and they are sent once.
    async fn deliver_in_time(&self, handed: impl Iterator<Item = Handed>) {
        let now = std::time::Instant::now();
        let (in_time, late): (Vec<Handed>, Vec<Handed>) =
            handed.partition(|message| now < message.send_by);
        let late = late.len();
        if late > 0 {
            tracing::warn!(
                late,
                "Emails waited too long in this process to be sent before their claims lapse; \
                 workers will send them once the claims have lapsed"
            );
        }
        self.send_all(in_time.into_iter().map(|message| message.email))
            .await;
    }

    /// A message that cannot even be put into a request fails on its own;
    /// the rest go out together.
    async fn send_all(&self, emails: impl IntoIterator<Item = ClaimedEmail>) {
        let mut ready = Vec::new();
        for email in emails {
            match Ready::recipient(&email) {
                Ok(to) => ready.push(Ready { email, to }),
                Err(reason) => self.give_up(&email, &Failure::Permanent(reason)).await,
            }
        }
        if !ready.is_empty() {
            self.deliver(&ready).await;
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Claims one batch and sends it to the email API in one call; returns
    /// how many were claimed.
    async fn deliver_due(&self, shutdown: &CancellationToken) -> Result<usize, sqlx::Error> {
        let batch = store::claim_due(
            &self.pool,
            self.settings.claim_timeout(),
            self.settings.batch_size,
        )
        .await?;
        let claimed = batch.len();
        if shutdown.is_cancelled() {
            // Claimed just as shutdown began: hand them back unsent.
            let ids: Vec<Uuid> = batch.iter().map(|m| m.id).collect();
            if !ids.is_empty() {
                self.record("release the unsent batch", || {
                    store::release(&self.pool, &ids)
                })
                .await;
            }
            return Ok(claimed);
        }
        self.send_all(batch).await;
        Ok(claimed)
    }

    /// Sends the batch and records each message's outcome: the accepted ones
    /// in one statement, the others one by one.
    #[tracing::instrument(name = "Deliver a batch of emails", skip_all, fields(size = batch.len()))]
    async fn deliver(&self, batch: &[Ready]) {
        let messages: Vec<Message> = batch.iter().map(Ready::message).collect();
        let failures: Vec<(&ClaimedEmail, Failure)> =
            match self.email_client.send_batch(&messages).await {
                Ok(verdicts) => {
                    let mut refused = Vec::new();
                    let mut sent = Vec::with_capacity(batch.len());
                    for (ready, verdict) in batch.iter().zip(verdicts) {
                        match verdict {
                            Verdict::Accepted => sent.push(ready.email.id),
                            Verdict::Refused(reason) => {
                                refused.push((&ready.email, Failure::Permanent(reason)))
                            }
                        }
                    }
                    if !sent.is_empty() {
                        tracing::info!(sent = sent.len(), "Emails accepted by the email API");
                        self.record("mark the emails as sent", || {
                            store::mark_sent(&self.pool, &sent)
                        })
                        .await;
                    }
                    refused
                }
                // The whole call failed: the same outcome for every message.
                Err(e) => {
                    let failure = Failure::from(&e);
                    batch
                        .iter()
                        .map(|ready| (&ready.email, failure.clone()))
                        .collect()
                }
            };
        for (message, failure) in failures {
            self.retry_or_give_up(message, failure).await;
        }
    }

    /// Schedules another attempt for a passing failure while attempts remain;
    /// otherwise keeps the message as failed.
    async fn retry_or_give_up(&self, message: &ClaimedEmail, failure: Failure) {
        match failure {
            Failure::Transient { error, retry_after }
                if message.attempts < self.settings.max_attempts =>
            {
                let delay = retry_delay(
                    message.attempts,
                    self.settings.backoff_base(),
                    self.settings.backoff_max(),
                    retry_after,
                );
                tracing::warn!(
                    outbox_id = %message.id,
                    attempt = message.attempts,
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "Email not sent, will retry"
                );
                self.record("schedule a retry", || {
                    store::reschedule(&self.pool, message.id, delay, &error)
                })
                .await;
            }
            failure => self.give_up(message, &failure).await,
        }
    }

    async fn give_up(&self, message: &ClaimedEmail, failure: &Failure) {
        let error = match failure {
            Failure::Transient { error, .. } => {
                format!("gave up after {} attempts: {error}", message.attempts)
            }
            Failure::Permanent(reason) => reason.clone(),
        };
        tracing::error!(
            outbox_id = %message.id,
            attempt = message.attempts,
            error = %error,
            "Email could not be delivered; kept as failed"
        );
        self.record("mark the email as failed", || {
            store::mark_failed(&self.pool, message.id, &error)
        })
        .await;
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
