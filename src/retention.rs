//! Retention: forgetting what the service no longer needs to keep. A run
//! works through six targets, each older than its setting in
//! [`RetentionSettings`]:
//!
//! 1. expired confirmation tokens (their links can only say "expired");
//! 2. email bodies: outbox rows that were sent or given up lose their
//!    bodies and personalisation (a confirmation's body holds its link), and
//!    shared contents no outbox row refers to any more are deleted;
//! 3. outbox rows that were sent or given up, deleted whole;
//! 4. sign-ups never confirmed, with their tokens (the outbox names its
//!    recipients by address, not by reference, so their messages go with
//!    the outbox's own retention);
//! 5. the webhook record ids kept to recognise repeated calls;
//! 6. the local inbox's emails, after `body_days` like the outbox's bodies
//!    (only local runs keep any; see [`crate::delivery::inbox`]);
//! 7. outgoing webhook deliveries that were delivered or given up, after
//!    `outbox_days` like the outbox's rows (their payloads may hold an
//!    address).
//!
//! Newsletter deliveries hold no bodies: each issue is stored once, and kept
//! as the archive, so there is nothing of theirs to clear here.
//!
//! The job shares the tables with live traffic, so it never holds what
//! traffic waits for. Each batch is its own short transaction (one
//! statement, two for sign-ups) over at most `retention.batch_size` rows. A batch reads the
//! next keys of an index past where the last one stopped (so a run reads
//! each row once, and no batch walks over what earlier ones deleted), then
//! locks the rows it acts on with `FOR UPDATE SKIP LOCKED`: a row a sign-up
//! or a worker holds is left for the next run instead of being waited for.
//!
//! The statements of the batches live with the module that owns each
//! table ([`crate::subscribers::retention`], [`crate::outbox::store`],
//! [`crate::webhooks`], [`crate::delivery::inbox`]); this module holds the
//! sweep around them, and the one table it owns, `job_leases`.
//!
//! One run at a time across every replica: a run holds the `retention` row
//! of `job_leases`, renews it between batches and releases it at the end,
//! recording when it finished, which is when the next run falls due. A
//! process that dies mid-run leaves the lease to lapse, and another takes
//! the run over; the work is idempotent, so a repeated batch does no harm.
//! The background task ([`Retention::run_periodically`]) stops between
//! batches when asked to.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::RetentionSettings;
use crate::db::{self, Db};
use crate::delivery::inbox;
use crate::outgoing_webhooks::deliveries;
use crate::telemetry::error_chain_line as chain;
use crate::{outbox, subscribers, webhooks};

/// The job's row in `job_leases`.
const JOB: &str = "retention";
/// How long a lease lasts unless renewed. Far longer than any one batch
/// (each is bounded by the database work timeout), so a live run renews in
/// time; short enough that a crashed run is taken over soon.
const LEASE: Duration = Duration::from_secs(60);
/// A running job renews its lease once this much of it has passed.
const RENEW_AFTER: Duration = Duration::from_secs(20);
/// The background task looks at most this long apart for a run that is due.
const CHECK_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// Progress lines come at most this often per target.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a run is forgetting at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ExpiredTokens,
    OutboxBodies,
    SharedContents,
    FinishedOutbox,
    UnconfirmedSignups,
    WebhookRecords,
    InboxEmails,
    FinishedWebhookDeliveries,
}

impl Target {
    /// In the order a run works through them: finished outbox rows go
    /// before their bodies are cleared, so no body is cleared from a row
    /// about to be deleted; shared contents after the rows that referred to
    /// them let go.
    const ALL: [Target; 8] = [
        Target::ExpiredTokens,
        Target::FinishedOutbox,
        Target::OutboxBodies,
        Target::SharedContents,
        Target::UnconfirmedSignups,
        Target::WebhookRecords,
        Target::InboxEmails,
        Target::FinishedWebhookDeliveries,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::ExpiredTokens => "expired confirmation tokens",
            Target::OutboxBodies => "outbox bodies cleared",
            Target::SharedContents => "shared email contents",
            Target::FinishedOutbox => "sent or failed outbox rows",
            Target::UnconfirmedSignups => "unconfirmed sign-ups",
            Target::WebhookRecords => "webhook records",
            Target::InboxEmails => "local inbox emails",
            Target::FinishedWebhookDeliveries => "delivered or failed webhook deliveries",
        }
    }
}

/// Rows each target lost in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub expired_tokens: u64,
    /// Outbox rows whose bodies were cleared (the rows stay).
    pub outbox_bodies: u64,
    pub shared_contents: u64,
    pub finished_outbox: u64,
    /// Subscribers deleted, each with their tokens.
    pub unconfirmed_signups: u64,
    pub webhook_records: u64,
    pub inbox_emails: u64,
    pub webhook_deliveries: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

impl Report {
    fn count(&mut self, target: Target) -> &mut u64 {
        match target {
            Target::ExpiredTokens => &mut self.expired_tokens,
            Target::OutboxBodies => &mut self.outbox_bodies,
            Target::SharedContents => &mut self.shared_contents,
            Target::FinishedOutbox => &mut self.finished_outbox,
            Target::UnconfirmedSignups => &mut self.unconfirmed_signups,
            Target::WebhookRecords => &mut self.webhook_records,
            Target::InboxEmails => &mut self.inbox_emails,
            Target::FinishedWebhookDeliveries => &mut self.webhook_deliveries,
        }
    }

    pub fn total(&self) -> u64 {
        self.expired_tokens
            + self.outbox_bodies
            + self.shared_contents
            + self.finished_outbox
            + self.unconfirmed_signups
            + self.webhook_records
            + self.inbox_emails
            + self.webhook_deliveries
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut report = *self;
        for target in Target::ALL {
            writeln!(f, "{:>10}  {}", report.count(target), target.as_str())?;
        }
        write!(f, "in {:.1} s", self.elapsed.as_secs_f64())
    }
}

/// Whether a run waits for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only if the last run finished at least `interval_minutes` ago.
    Due,
    /// Now, however recent the last run (an operator asked); still never
    /// alongside another run.
    Now,
}

/// How an attempt to run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every target was worked through.
    Finished(Report),
    /// Asked to stop; what was done until then. The next run is due at
    /// once, and starts over.
    Stopped(Report),
    /// Another process holds the lease: it is running now.
    Busy,
    /// The last run finished less than `interval_minutes` ago.
    NotDue,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a retention statement failed")]
    Database(#[from] db::Error),
    /// The lease lapsed (the run stalled for longer than it lasts) and
    /// another process took the run over.
    #[error("the retention lease was taken over by another process")]
    LeaseLost,
}

/// The retention job: settings checked, and a pool to run on.
#[derive(Clone)]
pub struct Retention {
    db: Db,
    settings: RetentionSettings,
}

impl Retention {
    /// Fails on settings that would delete what must be kept, or loop.
    pub fn new(db: Db, settings: RetentionSettings) -> Result<Self, anyhow::Error> {
        if settings.batch_size < 1 {
            anyhow::bail!("retention.batch_size must be at least 1");
        }
        for (name, days) in [
            ("body_days", settings.body_days),
            ("outbox_days", settings.outbox_days),
            ("unconfirmed_days", settings.unconfirmed_days),
            ("webhook_record_days", settings.webhook_record_days),
        ] {
            if days < 1 || i32::try_from(days).is_err() {
                anyhow::bail!("retention.{name} must be a positive number of days, not {days}");
            }
        }
        Ok(Self { db, settings })
    }

    /// Runs when due, until `stop` is cancelled. A failed run is logged
    /// with its causes and tried again at the next check; nothing here ends
    /// the process.
    pub async fn run_periodically(self, stop: CancellationToken) {
        let every = self
            .settings
            .interval()
            .clamp(Duration::from_secs(1), CHECK_AT_MOST_EVERY);
        tracing::info!(
            interval_minutes = self.settings.interval_minutes,
            "Retention job started"
        );
        while !stop.is_cancelled() {
            match self.run(When::Due, &stop).await {
                Ok(Outcome::Busy) => tracing::debug!("Retention is running elsewhere"),
                Ok(Outcome::NotDue | Outcome::Finished(_) | Outcome::Stopped(_)) => {}
                Err(e) => tracing::error!(
                    error = %chain(&e),
                    "Retention run failed; it will be tried again"
                ),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        tracing::info!("Retention job stopped");
    }

    /// One run, if the lease can be taken (and, for [`When::Due`], one is
    /// due). Stops between batches once `stop` is cancelled.
    #[tracing::instrument(name = "Retention run", skip_all, fields(when = ?when))]
    pub async fn run(&self, when: When, stop: &CancellationToken) -> Result<Outcome, Error> {
        let interval = self.settings.interval();
        let Some(mut lease) = Lease::take(&self.db, when, interval).await? else {
            return Ok(if Lease::held(&self.db).await? {
                Outcome::Busy
            } else {
                Outcome::NotDue
            });
        };
        tracing::info!("Retention run started");
        let started = Instant::now();
        let mut report = Report::default();
        let mut worked = Ok(true);
        for target in Target::ALL {
            worked = self.sweep(target, &mut lease, &mut report, stop).await;
            if !matches!(worked, Ok(true)) {
                break;
            }
        }
        report.elapsed = started.elapsed();
        // Released on failure too, so that another replica need not wait
        // for the lease to lapse; only a finished run counts as the last one.
        let finished = matches!(worked, Ok(true));
        let released = lease.release(&self.db, finished).await;
        let finished = worked?;
        if let Err(e) = released {
            tracing::warn!(error = %chain(&e), "Failed to release the retention lease; it will lapse");
        }
        if finished {
            tracing::info!(
                expired_tokens = report.expired_tokens,
                outbox_bodies = report.outbox_bodies,
                shared_contents = report.shared_contents,
                finished_outbox = report.finished_outbox,
                unconfirmed_signups = report.unconfirmed_signups,
                webhook_records = report.webhook_records,
                inbox_emails = report.inbox_emails,
                webhook_deliveries = report.webhook_deliveries,
                total = report.total(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                "Retention run finished"
            );
            Ok(Outcome::Finished(report))
        } else {
            tracing::info!(
                total = report.total(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                "Retention run stopped before the end"
            );
            Ok(Outcome::Stopped(report))
        }
    }

    /// Works through one target batch by batch. Returns false if it stopped
    /// because `stop` was cancelled.
    async fn sweep(
        &self,
        target: Target,
        lease: &mut Lease,
        report: &mut Report,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        let days = |days: i64| i32::try_from(days).expect("checked in Retention::new");
        let limit = self.settings.batch_size;
        let db = &self.db;
        let mut progress = Progress::new(target);
        let completed = match target {
            Target::ExpiredTokens => {
                let cutoff = cutoff(db, 0).await?;
                let start = (DateTime::UNIX_EPOCH, Vec::new());
                sweep_keys(lease, db, stop, &mut progress, start, |after| async move {
                    let counted = db
                        .bounded(move |conn| {
                            Box::pin(subscribers::retention::expired_tokens(
                                conn, limit, cutoff, after,
                            ))
                        })
                        .await?;
                    Ok(keyed(limit, counted))
                })
                .await?
            }
            Target::FinishedOutbox => {
                let cutoff = cutoff(db, days(self.settings.outbox_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| async move {
                    let counted = db
                        .bounded(move |conn| {
                            Box::pin(outbox::store::delete_finished(conn, limit, cutoff, after))
                        })
                        .await?;
                    Ok(keyed(limit, counted))
                })
                .await?
            }
            Target::OutboxBodies => {
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| async move {
                    let counted = db
                        .bounded(move |conn| {
                            Box::pin(outbox::store::clear_finished_bodies(
                                conn, limit, cutoff, after,
                            ))
                        })
                        .await?;
                    Ok(keyed(limit, counted))
                })
                .await?
            }
            Target::SharedContents => {
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| async move {
                    let deleted = db
                        .bounded(move |conn| {
                            Box::pin(outbox::store::delete_unused_contents(conn, limit, cutoff))
                        })
                        .await?;
                    Ok(oldest(limit, deleted))
                })
                .await?
            }
            Target::UnconfirmedSignups => {
                let cutoff = cutoff(db, days(self.settings.unconfirmed_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| async move {
                    let counted = db
                        .bounded(move |conn| {
                            Box::pin(subscribers::retention::unconfirmed_signups(
                                conn, limit, cutoff, after,
                            ))
                        })
                        .await?;
                    Ok(keyed(limit, counted))
                })
                .await?
            }
            Target::WebhookRecords => {
                let cutoff = cutoff(db, days(self.settings.webhook_record_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| async move {
                    let deleted = db
                        .bounded(move |conn| {
                            Box::pin(webhooks::forget_records(conn, limit, cutoff))
                        })
                        .await?;
                    Ok(oldest(limit, deleted))
                })
                .await?
            }
            Target::InboxEmails => {
                // The inbox's own statement, oldest first; no cursor, as
                // for webhook records.
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| async move {
                    let deleted = db
                        .bounded(move |conn| Box::pin(inbox::prune(conn, limit, cutoff)))
                        .await?;
                    Ok(oldest(limit, deleted as u64))
                })
                .await?
            }
            Target::FinishedWebhookDeliveries => {
                let cutoff = cutoff(db, days(self.settings.outbox_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| async move {
                    let deleted = db
                        .bounded(move |conn| {
                            Box::pin(deliveries::delete_finished(conn, limit, cutoff))
                        })
                        .await?;
                    Ok(oldest(limit, deleted))
                })
                .await?
            }
        };
        *report.count(target) += progress.rows;
        progress.done(completed);
        Ok(completed)
    }
}

/// What one batch did.
struct Batch<K> {
    /// Rows deleted or cleared.
    acted: u64,
    /// Whether the target may hold more: the batch found as many rows as it
    /// may take.
    more: bool,
    /// The last key it read, where the next batch starts.
    last: Option<K>,
}

/// Runs batches until the target is done or `stop` is cancelled, each
/// after the last key the one before it read, renewing the lease as it
/// goes. Returns false if stopped.
async fn sweep_keys<K, F, Fut>(
    lease: &mut Lease,
    db: &Db,
    stop: &CancellationToken,
    progress: &mut Progress,
    start: K,
    batch: F,
) -> Result<bool, Error>
where
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<Batch<K>, db::Error>>,
{
    let mut after = start;
    loop {
        if stop.is_cancelled() {
            return Ok(false);
        }
        lease.renew_if_due(db).await?;
        let done = batch(after).await?;
        progress.add(done.acted);
        match (done.more, done.last) {
            (true, Some(last)) => after = last,
            _ => return Ok(true),
        }
    }
}

/// Rows so far for one target, logged now and then and at the end.
struct Progress {
    target: Target,
    rows: u64,
    started: Instant,
    logged: Instant,
}

impl Progress {
    fn new(target: Target) -> Self {
        let now = Instant::now();
        Self {
            target,
            rows: 0,
            started: now,
            logged: now,
        }
    }

    fn add(&mut self, rows: u64) {
        self.rows += rows;
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = Instant::now();
            tracing::info!(
                what = self.target.as_str(),
                rows = self.rows,
                "Retention in progress"
            );
        }
    }

    fn done(&self, completed: bool) {
        tracing::info!(
            what = self.target.as_str(),
            rows = self.rows,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            completed,
            "Retention target done"
        );
    }
}

/// The database's clock, `days` ago: every cutoff of a run comes from the
/// one clock the rows were stamped with.
async fn cutoff(db: &Db, days: i32) -> Result<DateTime<Utc>, db::Error> {
    db.bounded(move |conn| {
        Box::pin(
            sqlx::query_scalar("SELECT now() - make_interval(days => $1)")
                .bind(days)
                .fetch_one(conn),
        )
    })
    .await
}

/// The `job_leases` row this process holds, under its own holder id.
struct Lease {
    holder: Uuid,
    renewed: Instant,
}

impl Lease {
    /// Takes the lease if nobody holds it (a holder that stopped renewing
    /// lost it when it lapsed) and, for [`When::Due`], the last run finished
    /// an interval ago. One statement, so two processes trying at once
    /// cannot both succeed: the second waits for the first's row and reads
    /// it held.
    async fn take(db: &Db, when: When, interval: Duration) -> Result<Option<Self>, db::Error> {
        let holder = Uuid::new_v4();
        let started = Instant::now();
        let taken: Option<Uuid> = db
            .bounded(move |conn| {
                Box::pin(
                    sqlx::query_scalar(
                        "INSERT INTO job_leases (job, holder, held_until) \
                         VALUES ($1, $2, now() + make_interval(secs => $3)) \
                         ON CONFLICT (job) DO UPDATE \
                         SET holder = EXCLUDED.holder, held_until = EXCLUDED.held_until \
                         WHERE job_leases.held_until < now() \
                           AND ($4 OR job_leases.last_finished_at IS NULL \
                                OR job_leases.last_finished_at <= now() - make_interval(secs => $5)) \
                         RETURNING holder",
                    )
                    .bind(JOB)
                    .bind(holder)
                    .bind(LEASE.as_secs_f64())
                    .bind(when == When::Now)
                    .bind(interval.as_secs_f64())
                    .fetch_optional(conn),
                )
            })
            .await?;
        Ok(taken.map(|holder| Self {
            holder,
            renewed: started,
        }))
    }

    /// Whether someone holds the lease now.
    async fn held(db: &Db) -> Result<bool, db::Error> {
        let held: Option<bool> = db
            .bounded(|conn| {
                Box::pin(
                    sqlx::query_scalar("SELECT held_until >= now() FROM job_leases WHERE job = $1")
                        .bind(JOB)
                        .fetch_optional(conn),
                )
            })
            .await?;
        Ok(held.unwrap_or(false))
    }

    /// Extends the lease once a third of it has passed. Fails if another
    /// process holds it now: this run must not go on beside theirs.
    async fn renew_if_due(&mut self, db: &Db) -> Result<(), Error> {
        if self.renewed.elapsed() < RENEW_AFTER {
            return Ok(());
        }
        let started = Instant::now();
        let holder = self.holder;
        let renewed = db
            .bounded(move |conn| {
                Box::pin(
                    sqlx::query(
                        "UPDATE job_leases SET held_until = now() + make_interval(secs => $3) \
                         WHERE job = $1 AND holder = $2",
                    )
                    .bind(JOB)
                    .bind(holder)
                    .bind(LEASE.as_secs_f64())
                    .execute(conn),
                )
            })
            .await?;
        if renewed.rows_affected() == 0 {
            return Err(Error::LeaseLost);
        }
        self.renewed = started;
        Ok(())
    }

    /// Gives the lease up; a `finished` run also becomes the last run, from
    /// which the next one is due.
    async fn release(self, db: &Db, finished: bool) -> Result<(), db::Error> {
        let holder = self.holder;
        db.bounded(move |conn| {
            Box::pin(
                sqlx::query(
                    "UPDATE job_leases SET held_until = now(), \
                         last_finished_at = CASE WHEN $3 THEN now() ELSE last_finished_at END \
                     WHERE job = $1 AND holder = $2",
                )
                .bind(JOB)
                .bind(holder)
                .bind(finished)
                .execute(conn),
            )
        })
        .await?;
        Ok(())
    }
}

// The batches are the owners' statements (see each table's module): each
// answers how many rows it acted on and, for a target read in key order,
// how many keys it read and the last one, where the next batch starts.

/// A keyed batch's answer: rows acted on, keys read, the last key read.
type Counted<K> = (i64, i64, Option<DateTime<Utc>>, Option<K>);

/// A keyed batch as the sweep counts it: the target may hold more when the
/// batch read as many keys as it may.
fn keyed<K>(limit: i64, (acted, read, at, key): Counted<K>) -> Batch<(DateTime<Utc>, K)> {
    Batch {
        acted: acted as u64,
        more: read >= limit,
        last: at.zip(key),
    }
}

/// A batch of a target with no cursor (each batch takes the oldest): it
/// may hold more when the batch acted on as many rows as it may.
fn oldest(limit: i64, acted: u64) -> Batch<()> {
    Batch {
        acted,
        more: acted >= limit as u64,
        last: Some(()),
    }
}
