//! The delivery loop. A worker repeats: claim a batch of due messages, send
//! them to the email API in one call, record each outcome; then, if the
//! batch had messages, let more gather for a moment, or else sleep until a
//! notification or the poll interval, whichever comes first.
//!
//! Every outcome is recorded under the worker's claim: a worker whose claim
//! lapsed (it was paused, or its writes waited out a database outage) and
//! was taken over finds its late updates match nothing, and logs that
//! instead of overwriting the newer claim's outcome.
//!
//! Shutdown: when the token is cancelled the worker finishes the messages it
//! is sending (bounded by the email client's timeout), records the outcomes,
//! hands back any it claimed but had not started, and returns. A worker killed outright
//! hands nothing back; its claims lapse and another worker takes over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::PgConnection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::DeliverySettings;
use crate::db::wakeups::Wakeups;
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, THROTTLED_PAUSE};
use crate::email_client::{EmailClient, EmailError, Verdict};
use crate::emails::Email;
use crate::metrics::Metrics;
use crate::outbox::backoff::retry_delay;
use crate::outbox::doorbell::{CHANNEL, Doorbell};
use crate::outbox::handoff::Handed;
use crate::outbox::store::{self, Attempt, Message, Unsendable};
use crate::telemetry::error_chain_line as chain;

#[derive(Clone)]
pub struct DeliveryWorker {
    db: Db,
    email_client: EmailClient,
    settings: DeliverySettings,
    /// The email client's timeout: the longest one send can take.
    send_time: Duration,
    /// The process's listener, for notifications from other processes.
    wakeups: Wakeups,
    /// Rung by transactions in this process that committed email.
    doorbell: Option<Doorbell>,
    /// Until when the email API asked this process's workers to wait, after
    /// its last throttling answer: shared by every clone.
    throttled_until: Arc<Mutex<Option<Instant>>>,
    metrics: Metrics,
}

/// Starts `settings.workers` delivery tasks on the current runtime, which
/// claim due messages from the outbox until `shutdown` is cancelled.
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

impl DeliveryWorker {
    /// `send_time` is the email client's timeout; `wakeups` is the
    /// process's listener, which must listen on [`CHANNEL`].
    pub fn new(
        db: Db,
        email_client: EmailClient,
        settings: DeliverySettings,
        send_time: Duration,
        wakeups: Wakeups,
    ) -> Self {
        Self {
            db,
            email_client,
            settings,
            send_time,
            wakeups,
            doorbell: None,
            throttled_until: Arc::default(),
            metrics: Metrics::default(),
        }
    }

    /// Counts into `metrics`: what the email API does, and how long each
    /// email took from its commit to being recorded as sent.
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self {
            email_client: self.email_client.with_metrics(metrics.clone()),
            metrics,
            ..self
        }
    }

    /// Wakes this worker when the given doorbell rings (transactions in the
    /// same process ring it after committing email).
    pub(super) fn with_doorbell(mut self, doorbell: Doorbell) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    pub(super) fn batch_size(&self) -> usize {
        self.settings.batch_size as usize
    }

    pub(super) fn claim_timeout(&self) -> Duration {
        self.settings.claim_timeout()
    }

    pub(super) fn send_time(&self) -> Duration {
        self.send_time
    }

    pub async fn run(self, shutdown: CancellationToken) {
        // Before the first claim: what commits after it is announced to
        // this subscription, what committed before it the claim finds.
        let mut notified = self.wakeups.subscribe(CHANNEL);
        let mut outage = Outage::default();
        while !shutdown.is_cancelled() {
            // Throttled: no claim until the API said it would take more.
            let throttled_until = *self
                .throttled_until
                .lock()
                .expect("never held across a panic");
            if let Some(until) = throttled_until.filter(|until| *until > Instant::now()) {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
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
                _ = rung(self.doorbell.as_ref()) => {}
                // What else was announced meanwhile, the claim below finds.
                _ = notified.next() => notified.skip_queued(),
                _ = tokio::time::sleep(self.settings.poll_interval()) => {}
            }
        }
    }

    /// Delivers the messages handlers in this process committed already
    /// claimed, in batches as the claim loop makes them: what is queued goes
    /// at once, and after a batch that was not full more may gather for the
    /// linger, or until they fill a batch. On shutdown it takes no more and
    /// delivers what is queued.
    pub(super) async fn deliver_handed_over(
        self,
        mut queue: mpsc::Receiver<Handed>,
        shutdown: CancellationToken,
    ) {
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
        queue: &mut mpsc::Receiver<Handed>,
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
        let now = Instant::now();
        let (in_time, late): (Vec<Handed>, Vec<Handed>) =
            handed.partition(|(_, send_by)| now < *send_by);
        let late = late.len();
        if late > 0 {
            tracing::warn!(
                late,
                "Emails waited too long in this process to be sent before their claims lapse; \
                 workers will send them once the claims have lapsed"
            );
        }
        let Some(send_by) = in_time.iter().map(|(_, send_by)| *send_by).min() else {
            return;
        };
        let in_time: Vec<Message> = in_time.into_iter().map(|(message, _)| message).collect();
        self.deliver(&in_time, send_by).await;
    }

    /// Claims one batch and sends it to the email API in one call; returns
    /// how many were claimed.
    async fn deliver_due(&self, shutdown: &CancellationToken) -> Result<usize, db::Error> {
        // Taken before the claim, so never later than the claim's real end.
        let send_by = Instant::now() + self.settings.claim_timeout().saturating_sub(self.send_time);
        let claim = self
            .db
            .bounded(|connection| {
                Box::pin(store::claim_due(
                    connection,
                    self.settings.claim_timeout(),
                    self.settings.batch_size,
                ))
            })
            .await?;
        let claimed = claim.messages.len() + claim.unsendable.len();
        let batch = claim.messages;
        if shutdown.is_cancelled() {
            // Claimed just as shutdown began: hand them back unsent.
            let held: Vec<(Uuid, Uuid)> = batch.iter().map(held).collect();
            if !held.is_empty() {
                self.record("release the unsent batch", held.len(), move |connection| {
                    Box::pin(store::release(connection, held.clone()))
                })
                .await;
            }
        } else if !batch.is_empty() {
            self.deliver(&batch, send_by).await;
        }
        for Unsendable {
            id,
            claim,
            attempts,
            reason,
        } in claim.unsendable
        {
            self.give_up((id, claim), attempts, reason).await;
        }
        Ok(claimed)
    }

    /// Sends the batch in one call and records each message's outcome. A
    /// whole batch refused for good (a 422, say) is most likely refused for
    /// one bad message in it: each message is then sent on its own, so that
    /// only the bad one fails. Nothing is sent from `send_by` on, when the
    /// claims could lapse during the send and another worker send the same
    /// messages: those left are sent by whoever claims them next.
    #[tracing::instrument(name = "Deliver a batch of emails", skip_all, fields(size = batch.len()))]
    async fn deliver(&self, batch: &[Message], send_by: Instant) {
        if !in_time(send_by, batch.len()) {
            return;
        }
        let outcome = self.send(batch).await;
        if Answer::calls_for_one_by_one(&outcome, batch.len()) {
            if let Err(e) = &outcome {
                tracing::warn!(
                    error = %chain(e),
                    "The email API refused a whole batch; sending its messages one at a time"
                );
            }
            for (n, message) in batch.iter().enumerate() {
                if !in_time(send_by, batch.len() - n) {
                    return;
                }
                let alone = std::slice::from_ref(message);
                let outcome = self.send(alone).await;
                self.record_outcomes(alone, outcome).await;
            }
            return;
        }
        self.record_outcomes(batch, outcome).await;
    }

    async fn send(&self, batch: &[Message]) -> Result<Vec<Verdict>, EmailError> {
        let emails: Vec<&Email> = batch.iter().map(|message| &message.email).collect();
        self.email_client.send_batch(&emails).await
    }

    /// The accepted messages in one statement, the others one by one.
    async fn record_outcomes(&self, batch: &[Message], outcome: Result<Vec<Verdict>, EmailError>) {
        let mut sent = Vec::with_capacity(batch.len());
        let mut others = Vec::new();
        for (message, answer) in batch.iter().zip(Answer::of_call(outcome, batch.len())) {
            match answer {
                Answer::Sent(_) => sent.push(held(message)),
                answer => others.push((message, answer)),
            }
        }
        if !sent.is_empty() {
            tracing::info!(sent = sent.len(), "Emails accepted by the email API");
            let metrics = self.metrics.clone();
            self.record("mark the emails as sent", sent.len(), move |connection| {
                let (sent, metrics) = (sent.clone(), metrics.clone());
                Box::pin(async move {
                    let delays = store::mark_sent(connection, sent).await?;
                    metrics.outbox_sent(&delays);
                    Ok(delays.len() as u64)
                })
            })
            .await;
        }
        for (message, answer) in others {
            match answer {
                Answer::Sent(_) => unreachable!("sent messages were recorded above"),
                Answer::Throttled { retry_after } => self.slow_down(message, retry_after).await,
                Answer::Passing { error, retry_after } => {
                    self.retry_or_give_up(message, error, retry_after).await
                }
                Answer::Refused(reason) => {
                    self.give_up(held(message), message.attempts, reason).await
                }
            }
        }
    }

    /// Sends a throttled message again after the pause the API asked for,
    /// and gives its attempt back: the API's rate limit says nothing about
    /// the message. Meanwhile this process's workers claim nothing more:
    /// each claim would only be throttled in turn.
    async fn slow_down(&self, message: &Message, retry_after: Option<Duration>) {
        let delay = retry_after
            .unwrap_or(THROTTLED_PAUSE)
            .min(self.settings.backoff_max());
        {
            let mut until = self
                .throttled_until
                .lock()
                .expect("never held across a panic");
            let resume = Instant::now() + delay;
            *until = Some(until.map_or(resume, |until| until.max(resume)));
        }
        tracing::warn!(
            outbox_id = %message.id,
            retry_in_ms = delay.as_millis() as u64,
            "The email API throttled an email; it goes again without counting the attempt"
        );
        let error = "the email API asked to slow down (rate limited)".to_owned();
        self.send_again(message, delay, error, Attempt::GivenBack)
            .await;
    }

    /// Schedules another attempt for a passing failure while attempts remain;
    /// otherwise keeps the message as failed.
    async fn retry_or_give_up(
        &self,
        message: &Message,
        error: String,
        retry_after: Option<Duration>,
    ) {
        if message.attempts >= self.settings.max_attempts {
            let error = format!("gave up after {} attempts: {error}", message.attempts);
            return self.give_up(held(message), message.attempts, error).await;
        }
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
        self.send_again(message, delay, error, Attempt::Counted)
            .await;
    }

    /// Records that `message` goes again after `delay`, with `error` as
    /// its last one.
    async fn send_again(
        &self,
        message: &Message,
        delay: Duration,
        error: String,
        attempt: Attempt,
    ) {
        let held = held(message);
        self.record("schedule another attempt", 1, move |connection| {
            Box::pin(store::reschedule(
                connection,
                held,
                delay,
                error.clone(),
                attempt,
            ))
        })
        .await;
    }

    async fn give_up(&self, held: (Uuid, Uuid), attempts: i32, error: String) {
        tracing::error!(
            outbox_id = %held.0,
            attempt = attempts,
            error = %error,
            "Email could not be delivered; kept as failed"
        );
        self.record("mark the email as failed", 1, move |connection| {
            Box::pin(store::mark_failed(connection, held, error.clone()))
        })
        .await;
    }

    /// Writes an outcome for `expected` messages, retrying for a while if
    /// Postgres is unavailable. The email has already left (or not) at this
    /// point; losing the record of a sent message would get it sent twice
    /// once its claim lapses. Messages no longer held under this worker's
    /// claim are left to the claim that replaced it.
    async fn record(
        &self,
        what: &str,
        expected: usize,
        write: impl for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<u64, sqlx::Error>>,
    ) {
        let mut delay = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + self.settings.claim_timeout() / 2;
        loop {
            match self.db.bounded(&write).await {
                Ok(done) => {
                    let lost = expected.saturating_sub(done as usize);
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "Failed to {what} for some emails: their claims lapsed and another \
                             worker holds them now, so its outcome stands"
                        );
                    }
                    return;
                }
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %chain(&e), "Failed to {what}, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(
                        error = %chain(&e),
                        "Failed to {what}; the message will be retried when its claim lapses"
                    );
                    return;
                }
            }
        }
    }
}

/// Whether messages may still be sent, their claims holding until the send
/// is over; if not, says that the `left` ones are left to lapse.
fn in_time(send_by: Instant, left: usize) -> bool {
    if Instant::now() < send_by {
        return true;
    }
    tracing::warn!(
        left,
        "Emails held too long to be sent before their claims lapse; \
         whoever claims them next sends them"
    );
    false
}

/// What identifies a held message in every update: its id and claim.
fn held(message: &Message) -> (Uuid, Uuid) {
    (message.id, message.claim)
}

/// Resolves when the process's doorbell rings; never without one.
async fn rung(doorbell: Option<&Doorbell>) {
    match doorbell {
        Some(doorbell) => doorbell.rung().await,
        None => std::future::pending().await,
    }
}

/// Logs a database outage once when it starts and once when it ends, rather
/// than on every poll.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    fn continues(&mut self, error: &db::Error) {
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
