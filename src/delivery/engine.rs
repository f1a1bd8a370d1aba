//! The one send loop. Every email the service sends, whichever table it
//! waits in, goes through here: a [`Source`] says how to claim a batch of
//! its emails under a lease and how to record what became of each; the
//! engine does the rest, once for every source:
//!
//! - the run loop and its tasks: claim, send, record; with nothing due,
//!   sleep until the source's channel is notified or the poll interval;
//! - the fleet's throttle for the batch's stream (booked in Redis, waited
//!   for under the claim);
//! - the call to the stream's providers, through failover ([`Routes`]);
//! - a whole batch refused for good is sent again one email at a time,
//!   since one bad email must not fail the others;
//! - a throttling answer pauses this engine's claims until the provider
//!   said it would take more, and never counts as an attempt;
//! - record-with-retry ([`record`]), for the sources' writes;
//! - emails a source claimed in this process and hands over at once
//!   ([`Engine::deliver_queued`]), sent in batches as they come.
//!
//! Nothing is sent from the batch's `send_by` on: after it, the claim
//! could lapse during the call and another task send the same emails.
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
use crate::delivery::Routes;
use crate::delivery::answer::Answer;
use crate::delivery::throttle::{Booking, Throttles};
use crate::emails::Email;
use crate::telemetry::error_chain_line as chain;

/// Where emails wait to be sent: the outbox, the campaign ledger.
pub trait Source: Send + Sync + 'static {
    /// What the source holds a batch under (its lease), for its writes.
    type Claim: Send + Sync;
    /// What identifies one email of a batch, for its writes.
    type Key: Send + Sync;

    /// For logs: "outbox", "campaigns".
    const NAME: &'static str;
    /// The channel on which work for this source is announced.
    const CHANNEL: &'static str;
    /// Whether a batch that finds its stream's schedule full pauses the
    /// source's tasks: for a source whose emails all share one stream. One
    /// that mixes streams (the outbox) must not hold back the others.
    const PAUSES_ON_FULL_SCHEDULE: bool;

    /// One turn of claiming: a batch to send, other work done, or nothing
    /// due. Work other than a claim stops early on `stop`.
    fn claim(
        &self,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<Turn<Self>, db::Error>> + Send;

    /// Records what became of each email of a batch: `None` for an email
    /// not sent this time. The source settles the claim here.
    fn record(
        &self,
        claim: Self::Claim,
        outcomes: Vec<(Self::Key, Option<Answer>)>,
    ) -> impl Future<Output = ()> + Send;

    /// Hands a claimed batch back untouched (the engine is stopping).
    fn release(&self, claim: Self::Claim, keys: Vec<Self::Key>) -> impl Future<Output = ()> + Send;

    /// After a wait for the throttle: the emails still to send, the others
    /// recorded as skipped by the source. By default, all of them.
    fn still_wanted(
        &self,
        _claim: &Self::Claim,
        emails: Vec<(Self::Key, Email)>,
    ) -> impl Future<Output = Result<Vec<(Self::Key, Email)>, db::Error>> + Send {
        async { Ok(emails) }
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

/// A claimed batch, each email built.
pub struct Batch<S: Source + ?Sized> {
    pub claim: S::Claim,
    pub emails: Vec<(S::Key, Email)>,
    /// When sending must stop for the claim to outlast the call.
    pub send_by: Instant,
}

/// An email already claimed in this process and handed to the engine
/// without a claim of its turn: a source's short way to the engine.
pub struct Queued<K> {
    pub key: K,
    pub email: Email,
    /// When sending must stop for its claim to outlast the call.
    pub send_by: Instant,
}

/// One engine per source; cheap to clone, one clone per task.
pub struct Engine<S: Source> {
    inner: Arc<Inner<S>>,
}

impl<S: Source> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S> {
    source: S,
    db: Db,
    routes: Routes,
    throttles: Throttles,
    settings: SendLoopSettings,
    wakeups: Wakeups,
    /// Until when a provider asked this engine's tasks to wait, after its
    /// last throttling answer.
    paused_until: Mutex<Option<Instant>>,
}

impl<S: Source> Engine<S> {
    pub fn new(
        source: S,
        db: Db,
        routes: Routes,
        throttles: Throttles,
        settings: SendLoopSettings,
        wakeups: Wakeups,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                db,
                routes,
                throttles,
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
                    let full = batch.emails.len() >= self.inner.settings.batch_size();
                    if stop.is_cancelled() {
                        // Claimed just as shutdown began: hand it back unsent.
                        let keys = batch.emails.into_iter().map(|(key, _)| key).collect();
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
    #[tracing::instrument(name = "Deliver a batch", skip_all, fields(source = S::NAME, size = batch.emails.len()))]
    pub async fn deliver(&self, batch: Batch<S>, stop: &CancellationToken) {
        let source = &self.inner.source;
        let Batch {
            claim,
            emails,
            send_by,
        } = batch;
        let (emails, mut outcomes, wait) = self.book(emails, send_by).await;
        let emails = if wait.is_zero() || emails.is_empty() {
            emails
        } else {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    let keys = emails
                        .into_iter()
                        .map(|(key, _)| key)
                        .chain(outcomes.into_iter().map(|(key, _)| key))
                        .collect();
                    return source.release(claim, keys).await;
                }
            }
            // A turn can be seconds away: whoever unsubscribed meanwhile is
            // skipped now rather than sent the email.
            match source.still_wanted(&claim, emails).await {
                Ok(emails) => emails,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "Failed to check who still wants the emails; the batch goes again");
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
        if !emails.is_empty() {
            let answers = self.send(&emails, send_by).await;
            let sent: Vec<_> = emails
                .into_iter()
                .map(|(key, _)| key)
                .zip(answers)
                .collect();
            throttled = throttled.max(longest_throttle(&sent));
            outcomes.extend(sent);
        }
        if let Some(retry_after) = throttled {
            let pause = self.inner.settings.throttled_delay(retry_after);
            tracing::warn!(
                source = S::NAME,
                pause_ms = pause.as_millis() as u64,
                "Throttled: no claims until the pause is over; the emails go again without \
                 counting the attempt"
            );
            self.pause(pause);
        }
        source.record(claim, outcomes).await;
    }

    /// Books the emails on their streams' throttles. Returns the emails to
    /// send after the wait, and as answered the ones whose stream is booked
    /// beyond what the claim allows: they go again when it has room.
    async fn book(
        &self,
        emails: Vec<(S::Key, Email)>,
        send_by: Instant,
    ) -> (
        Vec<(S::Key, Email)>,
        Vec<(S::Key, Option<Answer>)>,
        Duration,
    ) {
        // Less a margin, so that the turn leaves time to check who still
        // wants the emails and to start the call before `send_by`.
        let patience = send_by
            .saturating_duration_since(Instant::now())
            .mul_f64(0.9);
        let mut wait = Duration::ZERO;
        let mut full: Vec<(String, Duration)> = Vec::new();
        let mut streams: Vec<(&str, usize)> = Vec::new();
        for (_, email) in &emails {
            match streams
                .iter_mut()
                .find(|(stream, _)| *stream == email.message_stream)
            {
                Some((_, count)) => *count += 1,
                None => streams.push((&email.message_stream, 1)),
            }
        }
        for (stream, count) in streams {
            match self.inner.throttles.book(stream, count, patience).await {
                Booking::Booked { wait: turn } => wait = wait.max(turn),
                Booking::Full { free_in } => {
                    // Due again a little before the schedule has room, so
                    // that the next claim can book it.
                    full.push((stream.to_owned(), free_in.saturating_sub(patience / 2)));
                }
            }
        }
        if full.is_empty() {
            return (emails, Vec::new(), wait);
        }
        let (mut go, mut wait_list) = (Vec::new(), Vec::new());
        for (key, email) in emails {
            match full
                .iter()
                .find(|(stream, _)| *stream == email.message_stream)
            {
                Some((_, free_in)) => wait_list.push((
                    key,
                    Some(Answer::Throttled {
                        retry_after: Some(*free_in),
                    }),
                )),
                None => go.push((key, email)),
            }
        }
        (go, wait_list, wait)
    }

    /// Sends the emails, one call per stream, and gives each one's answer
    /// in order; `None` for those not sent because the claim ran short of
    /// time.
    async fn send(&self, emails: &[(S::Key, Email)], send_by: Instant) -> Vec<Option<Answer>> {
        let mut answers: Vec<Option<Answer>> = vec![None; emails.len()];
        let mut streams: Vec<&str> = Vec::new();
        for (_, email) in emails {
            if !streams.contains(&email.message_stream.as_str()) {
                streams.push(&email.message_stream);
            }
        }
        for stream in streams {
            let (places, batch): (Vec<usize>, Vec<&Email>) = emails
                .iter()
                .enumerate()
                .filter(|(_, (_, email))| email.message_stream == stream)
                .map(|(place, (_, email))| (place, email))
                .unzip();
            let stream_answers = self.send_stream(stream, &batch, send_by).await;
            for (place, answer) in places.into_iter().zip(stream_answers) {
                answers[place] = answer;
            }
        }
        answers
    }

    /// Sends one stream's emails in one call through its providers.
    async fn send_stream(
        &self,
        stream: &str,
        batch: &[&Email],
        send_by: Instant,
    ) -> Vec<Option<Answer>> {
        if !in_time(send_by, batch.len()) {
            return vec![None; batch.len()];
        }
        let providers = self.inner.routes.of(stream);
        // Every provider down is no reason to slow the stream's rate down:
        // only a provider's own throttling answers are.
        let mut every_provider_down = false;
        let answers = match providers.send(batch, send_by).await {
            Ok(answers) => answers.into_iter().map(Some).collect(),
            Err(failure) if batch.len() > 1 && matches!(failure.answer, Answer::Refused(_)) => {
                tracing::warn!(
                    error = ?failure.answer,
                    "A whole batch was refused; sending its emails one at a time"
                );
                let mut answers = Vec::with_capacity(batch.len());
                for (n, email) in batch.iter().enumerate() {
                    if !in_time(send_by, batch.len() - n) {
                        answers.resize(batch.len(), None);
                        break;
                    }
                    answers.push(match providers.send(&[email], send_by).await {
                        Ok(mut answers) => answers.pop(),
                        Err(failure) => Some(failure.answer),
                    });
                }
                answers
            }
            Err(failure) => {
                every_provider_down = failure.down;
                vec![Some(failure.answer); batch.len()]
            }
        };
        let sent = answers
            .iter()
            .filter(|answer| matches!(answer, Some(Answer::Sent { .. })))
            .count();
        if !every_provider_down
            && answers
                .iter()
                .any(|answer| matches!(answer, Some(Answer::Throttled { .. })))
        {
            self.inner.throttles.throttled(stream);
        } else if sent > 0 {
            self.inner.throttles.accepted(stream);
        }
        if sent > 0 {
            tracing::info!(stream, sent, "Emails accepted by the provider");
        }
        answers
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }
}

impl<S: Source> Engine<S>
where
    S::Claim: Default,
{
    /// Delivers what arrives on `queue` in batches, as the claim loop makes
    /// them: what is queued goes at once, and after a batch that was not
    /// full more may gather for the linger, or until they fill a batch. On
    /// `stop` it takes no more and delivers what is queued.
    pub async fn deliver_queued(
        self,
        mut queue: mpsc::Receiver<Queued<S::Key>>,
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

    /// Takes emails off the queue into `queued` for up to the linger,
    /// stopping early once they fill a batch. Taking them, rather than
    /// sleeping while they pile up, keeps the queue's places free: a busy
    /// process would otherwise fill the queue during the linger and send
    /// the rest the long way.
    async fn gather(
        &self,
        queue: &mut mpsc::Receiver<Queued<S::Key>>,
        queued: &mut Vec<Queued<S::Key>>,
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

    /// Sends the queued emails that can still go out before their claims
    /// lapse. The others are left alone: once their claims lapse the
    /// source's claim finds them, and they are sent once.
    async fn deliver_in_time(
        &self,
        queued: impl Iterator<Item = Queued<S::Key>>,
        stop: &CancellationToken,
    ) {
        let now = Instant::now();
        let (in_time, late): (Vec<_>, Vec<_>) = queued.partition(|queued| now < queued.send_by);
        if !late.is_empty() {
            tracing::warn!(
                source = S::NAME,
                late = late.len(),
                "Emails waited too long in this process to be sent before their claims lapse; \
                 they are sent once the claims have lapsed"
            );
        }
        let Some(send_by) = in_time.iter().map(|queued| queued.send_by).min() else {
            return;
        };
        let emails = in_time
            .into_iter()
            .map(|queued| (queued.key, queued.email))
            .collect();
        let batch = Batch {
            claim: S::Claim::default(),
            emails,
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

/// Whether emails may still be sent, their claims holding until the call
/// is over; if not, says that the `left` ones are left to lapse.
fn in_time(send_by: Instant, left: usize) -> bool {
    if Instant::now() < send_by {
        return true;
    }
    tracing::warn!(
        left,
        "Emails held too long to be sent before their claims lapse; whoever claims them next \
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
                    "Failed to {what}; the emails go again when their claim lapses"
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
            tracing::error!(source, error = %chain(error), "Sending paused: the emails waiting cannot be read");
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
