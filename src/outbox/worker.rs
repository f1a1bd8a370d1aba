//! The outbox as a source of the delivery engine
//! ([`crate::delivery::engine`]): a claim takes up to a batch of due
//! messages under a lease, and each outcome is recorded under that claim.
//! A worker whose claim lapsed (it was paused, or its writes waited out a
//! database outage) and was taken over finds its late updates match
//! nothing, and logs that instead of overwriting the newer claim's outcome.
//!
//! Messages committed in this process arrive already claimed, through the
//! hand-off queue, which the engine delivers from as well
//! ([`Engine::deliver_queued`]).
//!
//! Shutdown: the engine finishes the messages it is sending (bounded by
//! the email client's timeout), records the outcomes, hands back any it
//! claimed but had not started, and returns. A worker killed outright hands
//! nothing back; its claims lapse and another worker takes over.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::SendLoopSettings;
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, throttled_delay};
use crate::delivery::engine::{self, Batch, Engine, Source, Turn};
use crate::delivery::mail::Mail;
use crate::emails::Email;
use crate::metrics::Metrics;
use crate::outbox::backoff::retry_delay;
use crate::outbox::doorbell::{CHANNEL, Doorbell};
use crate::outbox::store::{self, Attempt, Message, Unsendable};

/// The outbox's send loops: the engine over the outbox.
pub type DeliveryWorker = Engine<OutboxSource, Mail>;

/// The outbox, as the engine claims from it and records into it.
pub struct OutboxSource {
    db: Db,
    settings: SendLoopSettings,
    /// The providers' timeout: the longest one call can take.
    send_time: Duration,
    /// Rung by transactions in this process that committed email.
    doorbell: Doorbell,
    metrics: Metrics,
}

/// A message of a batch, as every update names it.
pub struct Held {
    id: Uuid,
    claim: Uuid,
    /// Attempts so far, this one included.
    attempts: i32,
}

impl From<&Message> for Held {
    fn from(message: &Message) -> Self {
        Self {
            id: message.id,
            claim: message.claim,
            attempts: message.attempts,
        }
    }
}

impl Held {
    fn pair(&self) -> (Uuid, Uuid) {
        (self.id, self.claim)
    }

    /// The message's id in the outbox.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl OutboxSource {
    pub fn new(
        db: Db,
        settings: SendLoopSettings,
        send_time: Duration,
        doorbell: Doorbell,
        metrics: Metrics,
    ) -> Self {
        Self {
            db,
            settings,
            send_time,
            doorbell,
            metrics,
        }
    }

    pub(super) fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }

    pub(super) fn batch_size(&self) -> usize {
        self.settings.batch_size()
    }

    pub(super) fn claim_timeout(&self) -> Duration {
        self.settings.claim_timeout()
    }

    pub(super) fn send_time(&self) -> Duration {
        self.send_time
    }

    async fn write(
        &self,
        what: &str,
        expected: usize,
        write: impl for<'c> Fn(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>>,
    ) {
        let done = engine::record(&self.db, self.settings.claim_timeout(), what, write).await;
        let lost = done.map_or(0, |done| expected.saturating_sub(done as usize));
        if lost > 0 {
            tracing::warn!(
                lost,
                "Failed to {what} for some emails: their claims lapsed and another worker holds \
                 them now, so its outcome stands"
            );
        }
    }

    /// Schedules another attempt for a passing failure while attempts remain;
    /// otherwise keeps the message as failed.
    async fn retry_or_give_up(&self, held: Held, error: String, retry_after: Option<Duration>) {
        if held.attempts >= self.settings.max_attempts {
            let error = format!("gave up after {} attempts: {error}", held.attempts);
            return self.give_up(held, error).await;
        }
        let delay = retry_delay(
            held.attempts,
            self.settings.backoff_base(),
            self.settings.backoff_max(),
            retry_after,
        );
        tracing::warn!(
            outbox_id = %held.id,
            attempt = held.attempts,
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "Email not sent, will retry"
        );
        self.send_again(held, delay, error, Attempt::Counted).await;
    }

    /// Records that the message goes again after `delay`, with `error` as
    /// its last one.
    async fn send_again(&self, held: Held, delay: Duration, error: String, attempt: Attempt) {
        let held = held.pair();
        self.write("schedule another attempt", 1, move |connection| {
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

    async fn give_up(&self, held: Held, error: String) {
        tracing::error!(
            outbox_id = %held.id,
            attempt = held.attempts,
            error = %error,
            "Email could not be delivered; kept as failed"
        );
        let held = held.pair();
        self.write("mark the email as failed", 1, move |connection| {
            Box::pin(store::mark_failed(connection, held, error.clone()))
        })
        .await;
    }
}

impl Source for OutboxSource {
    type Claim = ();
    type Key = Held;
    type Message = Email;
    const NAME: &'static str = "outbox";
    const CHANNEL: &'static str = CHANNEL;
    const PAUSES_ON_FULL_SCHEDULE: bool = false;

    async fn claim(&self, _stop: &CancellationToken) -> Result<Turn<Self>, db::Error> {
        let send_by = DeliveryWorker::send_by(&self.settings, self.send_time);
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
        let unsendable = !claim.unsendable.is_empty();
        for Unsendable {
            id,
            claim,
            attempts,
            reason,
        } in claim.unsendable
        {
            self.give_up(
                Held {
                    id,
                    claim,
                    attempts,
                },
                reason,
            )
            .await;
        }
        if claim.messages.is_empty() {
            return Ok(if unsendable { Turn::Worked } else { Turn::Idle });
        }
        Ok(Turn::Batch(Batch {
            claim: (),
            messages: claim
                .messages
                .into_iter()
                .map(|message| (Held::from(&message), message.email))
                .collect(),
            send_by,
        }))
    }

    /// The accepted messages in one statement, the others one by one.
    async fn record(&self, _claim: (), outcomes: Vec<(Held, Option<Answer>)>) {
        let mut sent = Vec::with_capacity(outcomes.len());
        let mut others = Vec::new();
        for (held, answer) in outcomes {
            match answer {
                Some(Answer::Sent { provider, .. }) => sent.push((held.pair(), provider)),
                Some(answer) => others.push((held, answer)),
                // Not sent: its claim lapses, and whoever claims it next
                // sends it.
                None => {}
            }
        }
        if !sent.is_empty() {
            let count = sent.len();
            let delays = engine::record(
                &self.db,
                self.settings.claim_timeout(),
                "mark the emails as sent",
                move |connection| Box::pin(store::mark_sent(connection, sent.clone())),
            )
            .await;
            if let Some(delays) = delays {
                // Counted once the record is committed: what the metrics
                // show is what the outbox holds.
                self.metrics.outbox_sent(&delays);
                let lost = count.saturating_sub(delays.len());
                if lost > 0 {
                    tracing::warn!(
                        lost,
                        "Failed to mark some emails as sent: their claims lapsed and another \
                         worker holds them now, so its outcome stands"
                    );
                }
            }
        }
        for (held, answer) in others {
            match answer {
                Answer::Sent { .. } => unreachable!("sent messages were recorded above"),
                // The provider's rate limit says nothing about the message:
                // its attempt is given back.
                Answer::Throttled { retry_after } => {
                    let delay = throttled_delay(retry_after, self.settings.backoff_max());
                    let error = "the email provider asked to slow down (rate limited)".to_owned();
                    self.send_again(held, delay, error, Attempt::GivenBack)
                        .await
                }
                Answer::Passing { error, retry_after } => {
                    self.retry_or_give_up(held, error.to_string(), retry_after)
                        .await
                }
                Answer::Refused(reason) => self.give_up(held, reason.to_string()).await,
            }
        }
    }

    async fn release(&self, _claim: (), keys: Vec<Held>) {
        let held: Vec<(Uuid, Uuid)> = keys.iter().map(Held::pair).collect();
        if held.is_empty() {
            return;
        }
        self.write("release the unsent batch", held.len(), move |connection| {
            Box::pin(store::release(connection, held.clone()))
        })
        .await;
    }

    async fn rung(&self) {
        self.doorbell.rung().await
    }
}
