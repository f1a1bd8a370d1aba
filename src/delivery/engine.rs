//! The one send loop. Every message the service sends (an email, a webhook
//! call), whichever table it waits in, goes through here. Two parts plug
//! in:
//!
//! - a [`Source`] says how to claim a batch of its messages under a lease
//!   and how to record what became of each (the outbox, the campaign
//!   ledger, the webhook calls);
//! - a [`Carrier`] says how a batch of one kind of message is sent: what
//!   to book before sending and how long to wait for it, then the calls
//!   themselves, each message answered with an [`Answer`]. Emails go by
//!   [`crate::delivery::mail::Mail`]: streams, throttles, failover.
//!
//! The engine does the rest, once for every source and carrier:
//!
//! - the run loop and its tasks: claim, send, record; with nothing due,
//!   sleep until the source's channel is notified or the poll interval;
//! - the wait the carrier booked, under the claim, and then the source's
//!   check of which messages are still wanted;
//! - a throttling answer pauses this engine's claims until the carrier
//!   said it would take more, and never counts as an attempt;
//! - record-with-retry ([`record`]), for the sources' writes;
//! - messages a source claimed in this process and hands over at once
//!   ([`Engine::deliver_queued`]), sent in batches as they come.
//!
//! Nothing is sent from the batch's `send_by` on: after it, the claim
//! could lapse during the call and another task send the same messages.
//! What is left then is sent by whoever claims it next.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::PgConnection;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::configuration::SendLoopSettings;
use crate::db::wakeups::Wakeups;
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, throttled_delay};
use crate::telemetry::error_chain_line as chain;

/// Where messages wait to be sent: the outbox, the campaign ledger, the
/// webhook calls.
pub trait Source: Send + Sync + 'static {
    /// What the source holds a batch under (its lease), for its writes.
    type Claim: Send + Sync;
    /// What identifies one message of a batch, for its writes.
    type Key: Send + Sync;
    /// What is sent: an [`crate::emails::Email`], a webhook call.
    type Message: Send + Sync;

    /// For logs: "outbox", "campaigns".
    const NAME: &'static str;
    /// The channel on which work for this source is announced.
    const CHANNEL: &'static str;
    /// Whether a batch that the carrier answers as throttled before
    /// sending (its stream's schedule full) pauses the source's tasks: for
    /// a source whose emails all share one stream. One that mixes streams
    /// (the outbox) must not hold back the others.
    const PAUSES_ON_FULL_SCHEDULE: bool;

    /// One turn of claiming: a batch to send, other work done, or nothing
    /// due. Work other than a claim stops early on `stop`.
    fn claim(
        &self,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<Turn<Self>, db::Error>> + Send;

    /// Records what became of each message of a batch: `None` for one not
    /// sent this time. The source settles the claim here.
    fn record(
        &self,
        claim: Self::Claim,
        outcomes: Vec<(Self::Key, Option<Answer>)>,
    ) -> impl Future<Output = ()> + Send;

    /// Hands a claimed batch back untouched (the engine is stopping).
    fn release(&self, claim: Self::Claim, keys: Vec<Self::Key>) -> impl Future<Output = ()> + Send;

    /// After a wait the carrier booked: the messages still to send, the
    /// others recorded as skipped by the source. By default, all of them.
    fn still_wanted(
        &self,
        _claim: &Self::Claim,
        messages: Messages<Self>,
    ) -> impl Future<Output = Result<Messages<Self>, db::Error>> + Send {
        async { Ok(messages) }
    }

    /// Housekeeping when nothing was due.
    fn idle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Resolves when this process has work for the source without a
    /// notification going through Postgres. By default, never.
    fn rung(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// A batch's messages, each with its key.
pub type Messages<S> = Vec<(<S as Source>::Key, <S as Source>::Message)>;

/// How one kind of message is sent: emails through their streams'
/// providers ([`crate::delivery::mail::Mail`]), webhook calls over HTTP.
/// The engine calls [`Carrier::book`] and then, after the wait it asks
/// for, [`Carrier::send`] with the messages booking did not answer.
pub trait Carrier<M>: Send + Sync + 'static {
    /// Before sending: how long to wait for the messages' turn, and which
    /// of them are answered at once instead (e.g. throttled: their turn is
    /// further off than the claim lasts). By default all go now.
    fn book(&self, _messages: &[&M], _send_by: Instant) -> impl Future<Output = Booked> + Send {
        async { Booked::default() }
    }

    /// Sends `messages` and gives each one's answer, in order: `None` for
    /// one not sent because the claim ran short of time (check with
    /// [`in_time`] before each call). Stops by `send_by`.
    fn send(
        &self,
        messages: &[&M],
        send_by: Instant,
    ) -> impl Future<Output = Vec<Option<Answer>>> + Send;
}

/// What [`Carrier::book`] gave.
#[derive(Debug, Default)]
pub struct Booked {
    /// How long to wait before sending the others.
    pub wait: Duration,
    /// The messages not to send this time, by their place in the batch,
    /// with their answer.
    pub answered: Vec<(usize, Answer)>,
}

/// What a turn of claiming gave.
pub enum Turn<S: Source + ?Sized> {
    /// A batch to send.
    Batch(Batch<S>),
    /// Work that was not a send (a batch closed, an audience recorded):
    /// claim again at once.
    Worked,
    /// Nothing due.
    Idle,
}

/// A claimed batch, each message built.
pub struct Batch<S: Source + ?Sized> {
    pub claim: S::Claim,
    pub messages: Messages<S>,
    /// When sending must stop for the claim to outlast the call.
    pub send_by: Instant,
}

/// A message already claimed in this process and handed to the engine
/// without a claim of its turn: a source's short way to the engine.
pub struct Queued<K, M> {
    pub key: K,
    pub message: M,
    /// When sending must stop for its claim to outlast the call.
    pub send_by: Instant,
}

/// One engine per source; cheap to clone, one clone per task.
pub struct Engine<S: Source, C: Carrier<S::Message>> {
    inner: Arc<Inner<S, C>>,
}

impl<S: Source, C: Carrier<S::Message>> Clone for Engine<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S, C> {
    source: S,
    db: Db,
    carrier: C,
    settings: SendLoopSettings,
    wakeups: Wakeups,
    /// Until when a provider asked this engine's tasks to wait, after its
    /// last throttling answer.
    paused_until: Mutex<Option<Instant>>,
}

impl<S: Source, C: Carrier<S::Message>> Engine<S, C> {
    pub fn new(
        source: S,
        db: Db,
        carrier: C,
        settings: SendLoopSettings,
        wakeups: Wakeups,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                db,
                carrier,
                settings,
                wakeups,
                paused_until: Mutex::new(None),
            }),
        }
    }

    pub fn source(&self) -> &S {
        &self.inner.source
    }

    /// When a batch claimed now must be sent by: the lease, less the
    /// longest a call can take. Taken before the claim, so never later than
    /// the claim's real end.
    pub fn send_by(settings: &SendLoopSettings, send_time: Duration) -> Instant {
        Instant::now() + settings.claim_timeout().saturating_sub(send_time)
    }

    /// Starts the configured number of tasks, which work until `stop`.
    pub fn spawn(&self, stop: CancellationToken) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        let name = S::NAME;
        for n in 0..self.inner.settings.workers {
            let engine = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                tracing::info!(source = name, task = n, "Send loop started");
                engine.run(stop).await;
                tracing::info!(source = name, task = n, "Send loop stopped");
            });
        }
        tasks
    }

    /// Claims, sends and records until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let source = &self.inner.source;
        // Before the first claim: what commits after it is announced to
        // this subscription, what committed before it the claim finds.
        let mut notified = self.inner.wakeups.subscribe(S::CHANNEL);
        let mut outage = Outage::default();
        while !stop.is_cancelled() {
            if let Some(until) = self.paused_until() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
            }
            let turn = match source.claim(&stop).await {
                Ok(turn) => {
                    outage.ended(S::NAME);
                    turn
                }
                Err(e) => {
                    outage.continues(S::NAME, &e);
                    Turn::Idle
                }
            };
            match turn {
                Turn::Batch(batch) => {
                    let full = batch.messages.len() >= self.inner.settings.batch_size();
                    if stop.is_cancelled() {
                        // Claimed just as shutdown began: hand it back unsent.
                        let keys = batch.messages.into_iter().map(|(key, _)| key).collect();
                        source.release(batch.claim, keys).await;
                        break;
                    }
                    self.deliver(batch, &stop).await;
                    // A full batch suggests more are due: go again at once.
                    // Otherwise more are probably coming: let them gather
                    // rather than claim each in a transaction of its own.
                    if !full {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep(self.inner.settings.batch_linger()) => {}
                        }
                    }
                    continue;
                }
                Turn::Worked => continue,
                Turn::Idle => source.idle().await,
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = source.rung() => {}
                // What else was announced meanwhile, the claim finds.
                _ = notified.next() => notified.skip_queued(),
                _ = tokio::time::sleep(self.inner.settings.poll_interval()) => {}
            }
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        let until = *self.inner.paused_until.lock().expect("never poisoned");
        until.filter(|until| *until > Instant::now())
    }

    /// No claims by this engine's tasks for `pause`: each would only be
    /// throttled in turn.
    fn pause(&self, pause: Duration) {
        let mut until = self.inner.paused_until.lock().expect("never poisoned");
        let resume = Instant::now() + pause;
        *until = Some(until.map_or(resume, |until| until.max(resume)));
    }

    /// Sends a claimed batch and has the source record each outcome. On
    /// `stop` during a wait for the throttle the batch is handed back.
    #[tracing::instrument(name = "Deliver a batch", skip_all, fields(source = S::NAME, size = batch.messages.len()))]
    pub async fn deliver(&self, batch: Batch<S>, stop: &CancellationToken) {
        let source = &self.inner.source;
        let Batch {
            claim,
            messages,
            send_by,
        } = batch;
        let (messages, mut outcomes, wait) = self.book(messages, send_by).await;
        let messages = if wait.is_zero() || messages.is_empty() {
            messages
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    let keys = messages
                        .into_iter()
                        .map(|(key, _)| key)
                        .chain(outcomes.into_iter().map(|(key, _)| key))
                        .collect();
                    return source.release(claim, keys).await;
                }
            }
            // A turn can be seconds away: whoever unsubscribed meanwhile is
            // skipped now rather than sent the email.
            match source.still_wanted(&claim, messages).await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "Failed to check who still wants the messages; the batch goes again");
                    return source.record(claim, outcomes).await;
                }
            }
        };
        // The stream's schedule was full: the source's tasks wait for it
        // only when all its emails share one stream.
        let mut throttled = if S::PAUSES_ON_FULL_SCHEDULE {
            longest_throttle(&outcomes)
        } else {
            None
        };
        if !messages.is_empty() {
            let refs: Vec<&S::Message> = messages.iter().map(|(_, message)| message).collect();
            let answers = self.inner.carrier.send(&refs, send_by).await;
            drop(refs);
            let sent: Vec<_> = messages
                .into_iter()
                .map(|(key, _)| key)
                .zip(answers)
                .collect();
            throttled = throttled.max(longest_throttle(&sent));
            outcomes.extend(sent);
        }
        if let Some(retry_after) = throttled {
            let pause = throttled_delay(retry_after, self.inner.settings.backoff_max());
            tracing::warn!(
                source = S::NAME,
                pause_ms = pause.as_millis() as u64,
                "Throttled: no claims until the pause is over; the messages go again without \
                 counting the attempt"
            );
            self.pause(pause);
        }
        source.record(claim, outcomes).await;
    }

    /// Has the carrier book the messages. Returns the messages to send
    /// after the wait, and the ones it answered at once with their answers.
    async fn book(
        &self,
        messages: Vec<(S::Key, S::Message)>,
        send_by: Instant,
    ) -> (
        Vec<(S::Key, S::Message)>,
        Vec<(S::Key, Option<Answer>)>,
        Duration,
    ) {
        let refs: Vec<&S::Message> = messages.iter().map(|(_, message)| message).collect();
        let Booked { wait, mut answered } = self.inner.carrier.book(&refs, send_by).await;
        drop(refs);
        if answered.is_empty() {
            return (messages, Vec::new(), wait);
        }
        answered.sort_by_key(|(place, _)| std::cmp::Reverse(*place));
        let (mut go, mut now) = (Vec::new(), Vec::new());
        for (place, (key, message)) in messages.into_iter().enumerate() {
            match answered.last() {
                Some((answered_place, _)) if *answered_place == place => {
                    let (_, answer) = answered.pop().expect("just seen");
                    now.push((key, Some(answer)));
                }
                _ => go.push((key, message)),
            }
        }
        (go, now, wait)
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }
}

impl<S: Source, C: Carrier<S::Message>> Engine<S, C>
where
    S::Claim: Default,
{
    /// Delivers what arrives on `queue` in batches, as the claim loop makes
    /// them: what is queued goes at once, and after a batch that was not
    /// full more may gather for the linger, or until they fill a batch. On
    /// `stop` it takes no more and delivers what is queued.
    pub async fn deliver_queued(
        self,
        mut queue: mpsc::Receiver<Queued<S::Key, S::Message>>,
        stop: CancellationToken,
    ) {
        let limit = self.inner.settings.batch_size();
        let mut queued = Vec::with_capacity(limit);
        let mut closed = false;
        loop {
            if queued.is_empty() {
                let received = tokio::select! {
                    received = queue.recv_many(&mut queued, limit) => received,
                    _ = stop.cancelled(), if !closed => {
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
            // Throttled: wait as the claim loop does; what can no longer be
            // sent in time is left to lapse and be claimed.
            if let Some(until) = self.paused_until() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = stop.cancelled() => {}
                }
            }
            let full = queued.len() >= limit;
            self.deliver_in_time(queued.drain(..), &stop).await;
            if !full && !closed {
                self.gather(&mut queue, &mut queued, limit, &stop).await;
            }
        }
    }

    /// Takes messages off the queue into `queued` for up to the linger,
    /// stopping early once they fill a batch. Taking them, rather than
    /// sleeping while they pile up, keeps the queue's places free: a busy
    /// process would otherwise fill the queue during the linger and send
    /// the rest the long way.
    async fn gather(
        &self,
        queue: &mut mpsc::Receiver<Queued<S::Key, S::Message>>,
        queued: &mut Vec<Queued<S::Key, S::Message>>,
        limit: usize,
        stop: &CancellationToken,
    ) {
        let deadline = tokio::time::Instant::now() + self.inner.settings.batch_linger();
        while queued.len() < limit {
            tokio::select! {
                received = queue.recv_many(queued, limit - queued.len()) => {
                    if received == 0 {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Sends the queued messages that can still go out before their claims
    /// lapse. The others are left alone: once their claims lapse the
    /// source's claim finds them, and they are sent once.
    async fn deliver_in_time(
        &self,
        queued: impl Iterator<Item = Queued<S::Key, S::Message>>,
        stop: &CancellationToken,
    ) {
        let now = Instant::now();
        let (in_time, late): (Vec<_>, Vec<_>) = queued.partition(|queued| now < queued.send_by);
        if !late.is_empty() {
            tracing::warn!(
                source = S::NAME,
                late = late.len(),
                "Messages waited too long in this process to be sent before their claims lapse; \
                 they are sent once the claims have lapsed"
            );
        }
        let Some(send_by) = in_time.iter().map(|queued| queued.send_by).min() else {
            return;
        };
        let messages = in_time
            .into_iter()
            .map(|queued| (queued.key, queued.message))
            .collect();
        let batch = Batch {
            claim: S::Claim::default(),
            messages,
            send_by,
        };
        self.deliver(batch, stop).await;
    }
}

/// The longest pause the throttling answers among `outcomes` ask for, if
/// any was throttled.
fn longest_throttle<K>(outcomes: &[(K, Option<Answer>)]) -> Option<Option<Duration>> {
    outcomes
        .iter()
        .filter_map(|(_, answer)| match answer {
            Some(Answer::Throttled { retry_after }) => Some(*retry_after),
            _ => None,
        })
        .max()
}

/// Whether messages may still be sent, their claims holding until the
/// call is over; if not, says that the `left` ones are left to lapse. For
/// carriers, before each call.
pub fn in_time(send_by: Instant, left: usize) -> bool {
    if Instant::now() < send_by {
        return true;
    }
    tracing::warn!(
        left,
        "Messages held too long to be sent before their claims lapse; whoever claims them next \
         sends them"
    );
    false
}

/// Writes an outcome, retrying for a while if Postgres is unavailable: the
/// email has left (or not) already, and losing the record of a sent email
/// would get it sent again once its claim lapses. Gives up after half the
/// `lease`, returning `None`: the claim then lapses and whoever claims the
/// emails next sends what is still unsent. `Some` holds what the write
/// returned.
pub async fn record<T>(
    db: &Db,
    lease: Duration,
    what: &str,
    write: impl for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
) -> Option<T> {
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + lease / 2;
    loop {
        match db.bounded(&write).await {
            Ok(done) => return Some(done),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %chain(&e), "Failed to {what}, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(
                    error = %chain(&e),
                    "Failed to {what}; the messages go again when their claim lapses"
                );
                return None;
            }
        }
    }
}

/// Logs a database outage once when it starts and once when it ends, rather
/// than on every poll.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    fn continues(&mut self, source: &str, error: &db::Error) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::error!(source, error = %chain(error), "Sending paused: the messages waiting cannot be read");
        }
    }

    fn ended(&mut self, source: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                source,
                paused_for_ms = since.elapsed().as_millis() as u64,
                "Sending resumed"
            );
        }
    }
}
