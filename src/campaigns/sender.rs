//! Senders: the tasks that take an issue from published to settled. Each
//! repeats: record a due issue's audience if one waits (in chunks, each
//! its own statement, under a lease), else claim one batch of deliveries,
//! send it and record each outcome; with nothing to do, sleep until a
//! notification on [`WORK_CHANNEL`] or the poll interval.
//!
//! A batch is worked through as: skip the recipients no longer subscribed,
//! render each other one's email from the issue (their name, their
//! unsubscribe link), book the batch on the fleet's [`Throttle`], send it in
//! one call to the email API, then record per delivery: sent (with the
//! API's MessageID), failed for good, or left queued with the attempt
//! counted. The batch is then released: done, or due again after a backoff
//! for what is still queued.
//!
//! Crashes: nothing is marked sent before the API took it, and every write
//! names the batch's claim. A sender killed at any point leaves its batch
//! claimed until the lease lapses; whoever claims it next sends what is
//! still queued in it. So a kill costs at most the one batch in flight
//! being sent twice, never a recipient skipped.
//!
//! Shutdown: a sender finishes the batch it is sending and records it; a
//! batch it holds but has not sent is released untouched.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::campaigns::ledger::{
    self, AudienceClaim, BatchKey, ClaimedBatch, DeliveryId, IssueState, Recipient, WORK_CHANNEL,
};
use crate::campaigns::throttle::{Booking, Throttle};
use crate::configuration::CampaignSettings;
use crate::db::wakeups::{Notifier, Wakeups};
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, THROTTLED_PAUSE};
use crate::domain::SubscriberEmail;
use crate::email_client::{EmailClient, EmailError, MAX_BATCH, Verdict};
use crate::emails::{Email, UnsubscribeLinks};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::newsletters::{RECIPIENT_NAME, UNSUBSCRIBE_URL};
use crate::outbox::{Personalisation, personalise, retry_delay};
use crate::telemetry::error_chain_line as chain;

/// Everything a sender needs; cheap to clone, one clone per task.
#[derive(Clone)]
pub struct Sender {
    db: Db,
    email_client: EmailClient,
    throttle: std::sync::Arc<Throttle>,
    settings: CampaignSettings,
    /// The service's public address, for unsubscribe links.
    base_url: String,
    /// Signs each recipient's unsubscribe link.
    keys: Keys,
    /// Where unsubscribe requests by email go, if anywhere.
    unsubscribe_mailbox: Option<SubscriberEmail>,
    /// The email client's timeout: the longest one call can take.
    send_time: Duration,
    /// The process's listener, for work announced by other processes.
    wakeups: Wakeups,
    /// Announces work to the senders of every process.
    notifier: Notifier,
}

impl Sender {
    /// Fails when a batch could outlive its claim while the API answers,
    /// which would let two senders send it. `wakeups` must listen on
    /// [`WORK_CHANNEL`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        email_client: EmailClient,
        throttle: Throttle,
        settings: CampaignSettings,
        base_url: String,
        keys: Keys,
        send_time: Duration,
        wakeups: Wakeups,
        notifier: Notifier,
    ) -> Result<Self, anyhow::Error> {
        if settings.claim_timeout() <= send_time * 2 {
            anyhow::bail!(
                "campaigns.claim_timeout_seconds must be more than twice \
                 email_client.timeout_milliseconds"
            );
        }
        let batch_size = settings.batch_size;
        if batch_size < 1 || batch_size as usize > MAX_BATCH {
            anyhow::bail!(
                "campaigns.batch_size must be between 1 and {MAX_BATCH}, not {batch_size}"
            );
        }
        if settings.max_attempts < 1 {
            anyhow::bail!("campaigns.max_attempts must be at least 1");
        }
        if settings.messages_per_second < 1 {
            anyhow::bail!("campaigns.messages_per_second must be at least 1");
        }
        if settings.audience_chunk < batch_size as i64 {
            anyhow::bail!("campaigns.audience_chunk must be at least campaigns.batch_size");
        }
        let unsubscribe_mailbox = settings
            .unsubscribe_mailbox
            .as_deref()
            .map(SubscriberEmail::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("campaigns.unsubscribe_mailbox: {e}"))?;
        Ok(Self {
            db,
            email_client,
            throttle: std::sync::Arc::new(throttle),
            settings,
            base_url: base_url.trim_end_matches('/').to_owned(),
            keys,
            unsubscribe_mailbox,
            send_time,
            wakeups,
            notifier,
        })
    }

    /// The same senders, counting what the email API does into `metrics`,
    /// and their pool's connections under `campaigns`.
    pub fn with_metrics(self, metrics: &Metrics) -> Self {
        Self {
            db: metrics.watch_pool("campaigns", self.db),
            email_client: self.email_client.with_metrics(metrics.clone()),
            ..self
        }
    }

    /// Starts `campaigns.senders` tasks, which work until `stop` is
    /// cancelled.
    pub fn spawn(self, stop: CancellationToken) -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        for n in 0..self.settings.senders {
            let sender = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                tracing::info!(sender = n, "Campaign sender started");
                sender.run(stop).await;
                tracing::info!(sender = n, "Campaign sender stopped");
            });
        }
        tasks
    }

    async fn run(self, stop: CancellationToken) {
        // Before the first look for work: what is announced after it reaches
        // this subscription, what was there before it the look finds.
        let mut announced = self.wakeups.subscribe(WORK_CHANNEL);
        let mut outage: Option<Instant> = None;
        while !stop.is_cancelled() {
            match self.work_once(&stop).await {
                Ok(next) => {
                    if let Some(since) = outage.take() {
                        tracing::info!(
                            paused_for_ms = since.elapsed().as_millis() as u64,
                            "Campaign sending resumed"
                        );
                    }
                    match next {
                        Next::Again => continue,
                        Next::After(pause) => {
                            tokio::select! {
                                _ = stop.cancelled() => break,
                                _ = tokio::time::sleep(pause) => continue,
                            }
                        }
                        Next::Idle => self.finish_settled_issues().await,
                    }
                }
                Err(e) => {
                    if outage.is_none() {
                        outage = Some(Instant::now());
                        tracing::error!(
                            error = %chain(&e),
                            "Campaign sending paused: the ledger cannot be read"
                        );
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                // What else was announced meanwhile, the look below finds.
                _ = announced.next() => announced.skip_queued(),
                _ = tokio::time::sleep(self.settings.poll_interval()) => {}
            }
        }
    }

    /// Marks done the issues whose last release was cut short; a failure
    /// is left for the next idle spell.
    async fn finish_settled_issues(&self) {
        let finished = self
            .db
            .bounded(|conn| Box::pin(ledger::finish_settled_issues(conn)))
            .await;
        if let Err(e) = finished {
            tracing::warn!(error = %chain(&e), "Failed to look for settled issues");
        }
    }

    /// Records one waiting audience, or works one batch; says what to do
    /// next.
    async fn work_once(&self, stop: &CancellationToken) -> Result<Next, db::Error> {
        let lease = self.settings.claim_timeout();
        let audience = self
            .db
            .bounded(|conn| Box::pin(ledger::claim_audience(conn, lease)))
            .await?;
        if let Some(claim) = audience {
            self.record_audience(claim, stop).await?;
            return Ok(Next::Again);
        }
        let batch = self
            .db
            .bounded(|conn| Box::pin(ledger::claim_batch(conn, lease)))
            .await?;
        match batch {
            Some(batch) => self.work_batch(&batch, stop).await,
            None => Ok(Next::Idle),
        }
    }

    /// Records an issue's audience chunk by chunk while the claim holds.
    #[tracing::instrument(name = "Record an issue's audience", skip_all, fields(issue_id = %claim.issue_id))]
    async fn record_audience(
        &self,
        claim: AudienceClaim,
        stop: &CancellationToken,
    ) -> Result<(), db::Error> {
        let started = Instant::now();
        let mut recorded = 0;
        while !stop.is_cancelled() {
            let chunk = self
                .db
                .bounded(|conn| {
                    Box::pin(ledger::record_audience_chunk(
                        conn,
                        claim,
                        self.settings.audience_chunk,
                        self.settings.batch_size,
                        self.settings.claim_timeout(),
                    ))
                })
                .await?;
            let Some(chunk) = chunk else {
                tracing::info!(
                    recorded,
                    "Audience recording stopped: the issue was paused, cancelled, or taken over"
                );
                break;
            };
            recorded += chunk.recorded;
            if chunk.recorded > 0 {
                // Its batches are open to every sender, in every process.
                self.notifier.ring(WORK_CHANNEL);
            }
            if chunk.complete {
                tracing::info!(
                    recorded,
                    took_ms = started.elapsed().as_millis() as u64,
                    "Audience recorded"
                );
                return Ok(());
            }
        }
        // Paused or stopping: whoever records next need not wait out the lease.
        self.db
            .bounded(|conn| Box::pin(ledger::release_audience(conn, claim)))
            .await
    }

    /// Sends one claimed batch and records its outcomes.
    #[tracing::instrument(
        name = "Send a batch of an issue",
        skip_all,
        fields(issue_id = %batch.key.issue_id, first_seq = batch.key.first_seq)
    )]
    async fn work_batch(
        &self,
        batch: &ClaimedBatch,
        stop: &CancellationToken,
    ) -> Result<Next, db::Error> {
        let key = batch.key;
        if batch.state == IssueState::Cancelled {
            // Claimed only to be closed: releasing skips what is queued.
            self.release(key, Duration::ZERO, false).await?;
            return Ok(Next::Again);
        }
        // Taken before anything else, so never later than the claim's end.
        let send_by = Instant::now() + self.settings.claim_timeout().saturating_sub(self.send_time);
        let recipients = self
            .db
            .bounded(|conn| Box::pin(ledger::batch_recipients(conn, key)))
            .await?;
        let (emails, unsendable) = self.render(batch, recipients);
        self.record(key, "mark unsendable deliveries failed", move |conn| {
            let unsendable = unsendable.clone();
            Box::pin(async move { ledger::mark_failed(conn, key, &unsendable).await })
        })
        .await;
        if emails.is_empty() {
            self.release(key, Duration::ZERO, false).await?;
            return Ok(Next::Again);
        }
        // The longest this sender may wait for its turn and still send
        // under the claim.
        let patience = send_by.saturating_duration_since(Instant::now());
        let wait = match self.throttle.book(emails.len(), patience).await {
            Booking::Booked { wait } => wait,
            Booking::Full { free_in } => {
                // The schedule is booked beyond this claim: nothing was
                // booked. Let the batch go, due at once, and claim again
                // when the schedule has room.
                self.release(key, Duration::ZERO, false).await?;
                return Ok(Next::After(free_in.saturating_sub(patience / 2)));
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {
                self.release(key, Duration::ZERO, false).await?;
                return Ok(Next::Again);
            }
        }
        // A turn can be many seconds away: whoever unsubscribed or was
        // suppressed meanwhile is skipped now rather than sent the issue.
        let emails = if wait.is_zero() {
            emails
        } else {
            self.still_wanted(key, emails).await?
        };
        if emails.is_empty() {
            self.release(key, Duration::ZERO, false).await?;
            return Ok(Next::Again);
        }
        let outcome = self.send(&emails).await;
        let (retry_in, failed_attempt) =
            match self.record_outcomes(batch, &emails, outcome, send_by).await {
                // Every delivery settled, or only throttled ones left: the
                // batch is done, or due again after a short pause.
                Outcome::Worked { passing: false } => (THROTTLED_PAUSE, false),
                // Not a failed attempt: throttling slows a campaign down, never
                // uses up its attempts.
                Outcome::Throttled { retry_after } => (
                    retry_after
                        .unwrap_or(THROTTLED_PAUSE)
                        .min(self.settings.backoff_max()),
                    false,
                ),
                // Some deliveries, or the whole call, failed in a way that may
                // pass: back off longer each time.
                Outcome::Worked { passing: true } => (
                    retry_delay(
                        batch.attempts + 1,
                        self.settings.backoff_base(),
                        self.settings.backoff_max(),
                        None,
                    ),
                    true,
                ),
                Outcome::Failed { retry_after } => (
                    retry_delay(
                        batch.attempts + 1,
                        self.settings.backoff_base(),
                        self.settings.backoff_max(),
                        retry_after,
                    ),
                    true,
                ),
            };
        self.release(key, retry_in, failed_attempt).await?;
        Ok(Next::Again)
    }

    /// The emails whose recipients are still to get the issue; the others
    /// are skipped in the ledger, with the reason, as when the batch was read.
    async fn still_wanted(
        &self,
        key: BatchKey,
        mut emails: BySeq<Email>,
    ) -> Result<BySeq<Email>, db::Error> {
        let recipients = self
            .db
            .bounded(|conn| Box::pin(ledger::batch_recipients(conn, key)))
            .await?;
        let wanted: std::collections::HashSet<i32> = recipients.iter().map(|r| r.seq).collect();
        emails.retain(|(seq, _)| wanted.contains(seq));
        Ok(emails)
    }

    /// Each recipient's email, or why there can be none.
    fn render(
        &self,
        batch: &ClaimedBatch,
        recipients: Vec<Recipient>,
    ) -> (BySeq<Email>, BySeq<String>) {
        let content = batch.content();
        let mut emails = Vec::with_capacity(recipients.len());
        let mut unsendable = Vec::new();
        for recipient in recipients {
            let to = match SubscriberEmail::parse(&recipient.email) {
                Ok(to) => to,
                Err(e) => {
                    unsendable.push((recipient.seq, format!("invalid recipient: {e}")));
                    continue;
                }
            };
            let unsubscribe = self.unsubscribe_links(recipient.subscriber_id);
            let values = Personalisation::from([
                (RECIPIENT_NAME.to_owned(), recipient.name),
                (UNSUBSCRIBE_URL.to_owned(), unsubscribe.url().to_owned()),
            ]);
            emails.push((
                recipient.seq,
                Email {
                    to,
                    content: personalise(&content, &values),
                    message_stream: batch.message_stream.clone(),
                    delivery: Some(DeliveryId {
                        issue_id: batch.key.issue_id,
                        seq: recipient.seq,
                    }),
                    unsubscribe: Some(unsubscribe),
                },
            ));
        }
        (emails, unsendable)
    }

    /// A recipient's way off the list: the link in the bodies is the one
    /// in the `List-Unsubscribe` header.
    fn unsubscribe_links(&self, subscriber_id: uuid::Uuid) -> UnsubscribeLinks {
        UnsubscribeLinks::new(
            &self.base_url,
            &self.keys.unsubscribe_token(subscriber_id),
            self.unsubscribe_mailbox.as_ref(),
        )
    }

    async fn send(&self, emails: &[(i32, Email)]) -> Result<Vec<Verdict>, EmailError> {
        let batch: Vec<&Email> = emails.iter().map(|(_, email)| email).collect();
        self.email_client.send_batch(&batch).await
    }

    /// Records what the API said of each delivery.
    async fn record_outcomes(
        &self,
        batch: &ClaimedBatch,
        emails: &[(i32, Email)],
        outcome: Result<Vec<Verdict>, EmailError>,
        send_by: Instant,
    ) -> Outcome {
        let key = batch.key;
        let answers: Vec<Option<Answer>> = if Answer::calls_for_one_by_one(&outcome, emails.len()) {
            if let Err(e) = &outcome {
                // Refused for good as a whole: most likely for one bad
                // message, which must not fail the others. Each goes alone.
                tracing::warn!(
                    error = %chain(e),
                    "The email API refused a whole batch of an issue; sending its messages one at a time"
                );
            }
            self.send_one_by_one(emails, send_by).await
        } else {
            match outcome {
                Ok(verdicts) => verdicts.into_iter().map(|v| Some(Answer::of(v))).collect(),
                Err(e) => match Answer::of_failed_call(&e) {
                    Answer::Throttled { retry_after } => {
                        self.throttle.throttled();
                        tracing::warn!(error = %chain(&e), "The email API throttled a batch of an issue; it will be sent again");
                        return Outcome::Throttled { retry_after };
                    }
                    Answer::Passing { error, retry_after } => {
                        tracing::warn!(error = %error, "A batch of an issue was not sent; it will be tried again");
                        let noted: Vec<(i32, String)> = emails
                            .iter()
                            .map(|(seq, _)| (*seq, error.clone()))
                            .collect();
                        self.note_passing(key, noted).await;
                        return Outcome::Failed { retry_after };
                    }
                    // A single message refused for good: its own answer.
                    refused => vec![Some(refused)],
                },
            }
        };
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let mut passing = Vec::new();
        let mut throttled = 0;
        for ((seq, _), answer) in emails.iter().zip(answers) {
            match answer {
                Some(Answer::Sent(message_id)) => sent.push((*seq, message_id)),
                // Left queued, no attempt counted: the batch comes back
                // after the backoff, at the slower pace.
                Some(Answer::Throttled { .. }) => throttled += 1,
                Some(Answer::Passing { error, .. }) => passing.push((*seq, error)),
                Some(Answer::Refused(error)) => failed.push((*seq, error)),
                // Not sent this time: nothing to count.
                None => {}
            }
        }
        if throttled > 0 {
            self.throttle.throttled();
            tracing::warn!(
                throttled,
                "The email API throttled some emails of an issue; they will be sent again"
            );
        } else if !sent.is_empty() {
            self.throttle.accepted();
        }
        if !sent.is_empty() {
            tracing::info!(sent = sent.len(), "Issue emails accepted by the email API");
        }
        self.record(key, "mark deliveries sent", move |conn| {
            let sent = sent.clone();
            Box::pin(async move { ledger::mark_sent(conn, key, &sent).await })
        })
        .await;
        self.record(key, "mark deliveries failed", move |conn| {
            let failed = failed.clone();
            Box::pin(async move { ledger::mark_failed(conn, key, &failed).await })
        })
        .await;
        let passing_left = !passing.is_empty();
        self.note_passing(key, passing).await;
        Outcome::Worked {
            passing: passing_left,
        }
    }

    /// What the API said of each email, sent alone.
    /// Stops at `send_by`, after which the claim could lapse during a send:
    /// the rest stay queued for whoever claims the batch next.
    async fn send_one_by_one(
        &self,
        emails: &[(i32, Email)],
        send_by: Instant,
    ) -> Vec<Option<Answer>> {
        let mut answers = Vec::with_capacity(emails.len());
        for (_, email) in emails {
            if Instant::now() >= send_by {
                answers.push(None);
                continue;
            }
            let mut answer = Answer::of_call(self.email_client.send_batch(&[email]).await, 1);
            answers.push(Some(answer.pop().unwrap_or_else(|| Answer::Passing {
                error: "the email API gave no answer for the message".into(),
                retry_after: None,
            })));
        }
        answers
    }

    /// Counts a passing refusal against each delivery; those out of attempts
    /// fail.
    async fn note_passing(&self, key: BatchKey, errors: Vec<(i32, String)>) {
        let max_attempts = self.settings.max_attempts;
        self.record(key, "count the attempt", move |conn| {
            let errors = errors.clone();
            Box::pin(
                async move { ledger::note_passing_errors(conn, key, &errors, max_attempts).await },
            )
        })
        .await;
    }

    async fn release(
        &self,
        key: BatchKey,
        retry_in: Duration,
        failed_attempt: bool,
    ) -> Result<(), db::Error> {
        self.record(key, "release the batch", move |conn| {
            Box::pin(async move {
                ledger::release_batch(conn, key, retry_in, failed_attempt).await?;
                Ok(0)
            })
        })
        .await;
        Ok(())
    }

    /// Writes an outcome, retrying for a while if Postgres is unavailable:
    /// the email has left (or not) already, and losing the record of a sent
    /// delivery would get it sent again once the claim lapses. Given up on
    /// after half the lease; the batch is then claimed again when its
    /// lease lapses, and what is still queued in it is sent again.
    async fn record(
        &self,
        key: BatchKey,
        what: &str,
        write: impl for<'c> Fn(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>>,
    ) {
        let mut delay = Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + self.settings.claim_timeout() / 2;
        loop {
            match self.db.bounded(&write).await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %chain(&e), "Failed to {what}, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(
                        error = %chain(&e),
                        issue_id = %key.issue_id,
                        first_seq = key.first_seq,
                        "Failed to {what}; the batch is sent again when its claim lapses"
                    );
                    return;
                }
            }
        }
    }
}

/// Values for deliveries, each with its `seq`.
type BySeq<T> = Vec<(i32, T)>;

/// What a sender does after a turn of work.
enum Next {
    /// Look for more work at once.
    Again,
    /// Look again after this pause (the fleet's schedule is full).
    After(Duration),
    /// Nothing was due: wait for a notification or the poll interval.
    Idle,
}

/// How a batch's call went, for its release.
enum Outcome {
    /// The API answered for each message; `passing` when it refused some
    /// for a reason that may pass.
    Worked { passing: bool },
    /// The API asked us to slow down; nothing was sent.
    Throttled { retry_after: Option<Duration> },
    /// The call failed as a whole in a way that may pass.
    Failed { retry_after: Option<Duration> },
}
