//! The campaign ledger as a source of the delivery engine
//! ([`crate::delivery::engine`]): the senders are the engine's tasks over
//! it. A turn of claiming records a due issue's audience if one waits (in
//! chunks, each its own statement, under a lease), else claims one batch
//! of deliveries; with nothing to do the engine sleeps until a
//! notification on [`WORK_CHANNEL`] or the poll interval.
//!
//! A batch is worked through as: skip the recipients no longer subscribed,
//! render each other one's email from the issue (their name, their
//! unsubscribe link); the engine books it on the stream's throttle and
//! sends it; then per delivery: sent (with the provider and its message
//! id), failed for good, or left queued with the attempt counted. The batch
//! is then released: done, or due again after a backoff for what is still
//! queued.
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

use tokio_util::sync::CancellationToken;

use crate::campaigns::ledger::{
    self, AudienceClaim, BatchKey, ClaimedBatch, DeliveryId, IssueState, Recipient, WORK_CHANNEL,
};
use crate::configuration::CampaignSettings;
use crate::db::wakeups::Notifier;
use crate::db::{self, Db};
use crate::delivery::answer::{Answer, INVALID_RECIPIENT, THROTTLED_PAUSE, throttled_delay};
use crate::delivery::engine::{self, Batch, Engine, Source, Turn};
use crate::delivery::mail::Mail;
use crate::domain::SubscriberEmail;
use crate::emails::{Email, UnsubscribeLinks};
use crate::keys::Keys;
use crate::newsletters::{PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL, WebVersion};
use crate::outbox::{Personalisation, personalise_with, retry_delay};
use crate::telemetry::error_chain_line as chain;

/// The campaigns' send loops: the engine over the ledger.
pub type Sender = Engine<CampaignSource, Mail>;

/// The ledger, as the engine claims from it and records into it.
pub struct CampaignSource {
    db: Db,
    settings: CampaignSettings,
    /// The service's public address, for unsubscribe links.
    base_url: String,
    /// Signs each recipient's unsubscribe link.
    keys: Keys,
    /// Where unsubscribe requests by email go, if anywhere.
    unsubscribe_mailbox: Option<SubscriberEmail>,
    /// The providers' timeout: the longest one call can take.
    send_time: Duration,
    /// Announces work to the senders of every process.
    notifier: Notifier,
}

/// A claimed batch, as every write names it.
#[derive(Clone, Copy)]
pub struct Held {
    key: BatchKey,
    /// Earlier attempts of the batch that failed as a whole.
    attempts: i32,
}

impl CampaignSource {
    /// Fails on settings the ledger cannot work with.
    pub fn new(
        db: Db,
        settings: CampaignSettings,
        base_url: String,
        keys: Keys,
        send_time: Duration,
        notifier: Notifier,
    ) -> Result<Self, anyhow::Error> {
        if settings.messages_per_second < 1 {
            anyhow::bail!("campaigns.messages_per_second must be at least 1");
        }
        if settings.audience_chunk < settings.sending.batch_size {
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
            settings,
            base_url: base_url.trim_end_matches('/').to_owned(),
            keys,
            unsubscribe_mailbox,
            send_time,
            notifier,
        })
    }

    fn lease(&self) -> Duration {
        self.settings.sending.claim_timeout()
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
                        self.settings.sending.batch_size as i32,
                        self.lease(),
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

    /// Each recipient's email, or why there can be none.
    fn render(
        &self,
        batch: &ClaimedBatch,
        recipients: Vec<Recipient>,
    ) -> (BySeq<Email>, BySeq<String>) {
        let content = batch.content();
        let web_url = batch
            .public_slug
            .as_deref()
            .map(|slug| crate::archive::issue_url(&self.base_url, slug));
        let web_version = WebVersion::link(web_url.as_deref());
        let mut emails = Vec::with_capacity(recipients.len());
        let mut unsendable = Vec::new();
        for recipient in recipients {
            let to = match SubscriberEmail::parse(&recipient.email) {
                Ok(to) => to,
                // The parser's reason quotes the address; the ledger keeps
                // only that it was not one.
                Err(_) => {
                    unsendable.push((recipient.seq, INVALID_RECIPIENT.to_owned()));
                    continue;
                }
            };
            let from_issue = batch.for_lists.then_some(batch.key.issue_id);
            let unsubscribe = self.unsubscribe_links(recipient.subscriber_id, from_issue);
            let values = Personalisation::from([
                (RECIPIENT_NAME.to_owned(), recipient.name),
                (UNSUBSCRIBE_URL.to_owned(), unsubscribe.url().to_owned()),
                (
                    PREFERENCES_URL.to_owned(),
                    unsubscribe.preferences_url().to_owned(),
                ),
            ]);
            emails.push((
                recipient.seq,
                Email {
                    to,
                    content: personalise_with(&content, &values, web_version.markup()),
                    message_stream: batch.message_stream.clone(),
                    delivery: Some(DeliveryId {
                        issue_id: batch.key.issue_id,
                        seq: recipient.seq,
                    }),
                    outbox_id: None,
                    unsubscribe: Some(unsubscribe),
                },
            ));
        }
        (emails, unsendable)
    }

    /// A recipient's way off the list: the link in the bodies is the one
    /// in the `List-Unsubscribe` header.
    /// For an issue sent to lists (`from_issue`), the link leaves those
    /// lists only.
    fn unsubscribe_links(
        &self,
        subscriber_id: uuid::Uuid,
        from_issue: Option<uuid::Uuid>,
    ) -> UnsubscribeLinks {
        UnsubscribeLinks::from_issue(
            &self.base_url,
            &self.keys.unsubscribe_token(subscriber_id),
            self.unsubscribe_mailbox.as_ref(),
            from_issue,
        )
    }

    /// Writes an outcome of the batch, with the engine's retries.
    async fn write(
        &self,
        key: BatchKey,
        what: &str,
        write: impl for<'c> Fn(
            &'c mut sqlx::PgConnection,
        ) -> futures::future::BoxFuture<'c, Result<u64, sqlx::Error>>,
    ) {
        if engine::record(&self.db, self.lease(), what, write)
            .await
            .is_none()
        {
            tracing::error!(
                issue_id = %key.issue_id,
                first_seq = key.first_seq,
                "The batch is sent again when its claim lapses"
            );
        }
    }

    /// Hands the batch back: due again after `retry_in`, with a failed
    /// attempt counted or not.
    async fn release_batch(&self, key: BatchKey, retry_in: Duration, failed_attempt: bool) {
        self.write(key, "release the batch", move |conn| {
            Box::pin(async move {
                ledger::release_batch(conn, key, retry_in, failed_attempt).await?;
                Ok(0)
            })
        })
        .await;
    }
}

impl Source for CampaignSource {
    type Claim = Held;
    type Key = i32;
    type Message = Email;
    const NAME: &'static str = "campaigns";
    const CHANNEL: &'static str = WORK_CHANNEL;
    const PAUSES_ON_FULL_SCHEDULE: bool = true;

    async fn claim(&self, stop: &CancellationToken) -> Result<Turn<Self>, db::Error> {
        let lease = self.lease();
        let audience = self
            .db
            .bounded(|conn| Box::pin(ledger::claim_audience(conn, lease)))
            .await?;
        if let Some(claim) = audience {
            self.record_audience(claim, stop).await?;
            return Ok(Turn::Worked);
        }
        // Taken before the claim, so never later than the claim's end.
        let send_by = Sender::send_by(&self.settings.sending, self.send_time);
        let Some(batch) = self
            .db
            .bounded(|conn| Box::pin(ledger::claim_batch(conn, lease)))
            .await?
        else {
            return Ok(Turn::Idle);
        };
        let key = batch.key;
        if batch.state == IssueState::Cancelled {
            // Claimed only to be closed: releasing skips what is queued.
            self.release_batch(key, Duration::ZERO, false).await;
            return Ok(Turn::Worked);
        }
        let recipients = self
            .db
            .bounded(|conn| Box::pin(ledger::batch_recipients(conn, key)))
            .await?;
        let (emails, unsendable) = self.render(&batch, recipients);
        if !unsendable.is_empty() {
            self.write(key, "mark unsendable deliveries failed", move |conn| {
                let unsendable = unsendable.clone();
                Box::pin(async move { ledger::mark_failed(conn, key, &unsendable).await })
            })
            .await;
        }
        if emails.is_empty() {
            self.release_batch(key, Duration::ZERO, false).await;
            return Ok(Turn::Worked);
        }
        Ok(Turn::Batch(Batch {
            claim: Held {
                key,
                attempts: batch.attempts,
            },
            messages: emails,
            send_by,
        }))
    }

    /// Skips, in the ledger, whoever unsubscribed or was suppressed while
    /// the batch waited for its turn.
    async fn still_wanted(
        &self,
        held: &Held,
        mut emails: BySeq<Email>,
    ) -> Result<BySeq<Email>, db::Error> {
        let key = held.key;
        let recipients = self
            .db
            .bounded(|conn| Box::pin(ledger::batch_recipients(conn, key)))
            .await?;
        let wanted: std::collections::HashSet<i32> = recipients.iter().map(|r| r.seq).collect();
        emails.retain(|(seq, _)| wanted.contains(seq));
        Ok(emails)
    }

    /// Records each delivery's outcome, then releases the batch: done, or
    /// due again after a pause (throttled: no attempt counted) or a backoff
    /// (a passing failure: an attempt counted).
    async fn record(&self, held: Held, outcomes: Vec<(i32, Option<Answer>)>) {
        let key = held.key;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let mut passing = Vec::new();
        let mut throttled: Option<Option<Duration>> = None;
        let mut passing_retry_after: Option<Duration> = None;
        for (seq, answer) in outcomes {
            match answer {
                Some(Answer::Sent {
                    message_id,
                    provider,
                    ..
                }) => sent.push((provider, seq, message_id)),
                // Left queued, no attempt counted: the batch comes back
                // after the pause, at the slower pace.
                Some(Answer::Throttled { retry_after }) => {
                    throttled = Some(throttled.flatten().max(retry_after))
                }
                Some(Answer::Passing { error, retry_after }) => {
                    passing_retry_after = passing_retry_after.max(retry_after);
                    passing.push((seq, error.to_string()))
                }
                Some(Answer::Refused(error)) => failed.push((seq, error.to_string())),
                // Not sent this time: nothing to count.
                None => {}
            }
        }
        // Usually one provider took the whole batch; after a failover in
        // the middle of it, each records its own.
        sent.sort_by_key(|(provider, seq, _)| (*provider, *seq));
        for by_provider in sent.chunk_by(|a, b| a.0 == b.0) {
            let provider = ledger::Provider::new(by_provider[0].0);
            let sent: BySeq<Option<String>> = by_provider
                .iter()
                .map(|(_, seq, id)| (*seq, id.clone()))
                .collect();
            self.write(key, "mark deliveries sent", move |conn| {
                let sent = sent.clone();
                Box::pin(async move { ledger::mark_sent(conn, key, provider, &sent).await })
            })
            .await;
        }
        if !failed.is_empty() {
            self.write(key, "mark deliveries failed", move |conn| {
                let failed = failed.clone();
                Box::pin(async move { ledger::mark_failed(conn, key, &failed).await })
            })
            .await;
        }
        let passing_left = !passing.is_empty();
        if passing_left {
            tracing::warn!(
                deliveries = passing.len(),
                "Deliveries of an issue were not sent; they will be tried again"
            );
            let max_attempts = self.settings.sending.max_attempts as i16;
            self.write(key, "count the attempt", move |conn| {
                let errors = passing.clone();
                Box::pin(async move {
                    ledger::note_passing_errors(conn, key, &errors, max_attempts).await
                })
            })
            .await;
        }
        let sending = &self.settings.sending;
        let (retry_in, failed_attempt) = match (throttled, passing_left) {
            // Not a failed attempt: throttling slows an issue down, never
            // uses up its attempts.
            (Some(retry_after), _) => (throttled_delay(retry_after, sending.backoff_max()), false),
            // Failed in a way that may pass: back off longer each time.
            (None, true) => (
                retry_delay(
                    held.attempts + 1,
                    sending.backoff_base(),
                    sending.backoff_max(),
                    passing_retry_after,
                ),
                true,
            ),
            // Every delivery settled, or some left unsent for lack of time.
            (None, false) => (THROTTLED_PAUSE, false),
        };
        self.release_batch(key, retry_in, failed_attempt).await;
    }

    async fn release(&self, held: Held, _keys: Vec<i32>) {
        self.release_batch(held.key, Duration::ZERO, false).await;
    }

    /// Marks done the issues whose last release was cut short; a failure
    /// is left for the next idle spell.
    async fn idle(&self) {
        let finished = self
            .db
            .bounded(|conn| Box::pin(ledger::finish_settled_issues(conn)))
            .await;
        if let Err(e) = finished {
            tracing::warn!(error = %chain(&e), "Failed to look for settled issues");
        }
    }
}

/// Values for deliveries, each with its `seq`.
type BySeq<T> = Vec<(i32, T)>;
