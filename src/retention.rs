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
//!    (only local runs keep any; see [`crate::delivery::inbox`]).
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
use sqlx::PgConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::configuration::RetentionSettings;
use crate::db::{self, Db};
use crate::delivery::inbox;
use crate::telemetry::error_chain_line as chain;

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
}

impl Target {
    /// In the order a run works through them: finished outbox rows go
    /// before their bodies are cleared, so no body is cleared from a row
    /// about to be deleted; shared contents after the rows that referred to
    /// them let go.
    const ALL: [Target; 7] = [
        Target::ExpiredTokens,
        Target::FinishedOutbox,
        Target::OutboxBodies,
        Target::SharedContents,
        Target::UnconfirmedSignups,
        Target::WebhookRecords,
        Target::InboxEmails,
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
                sweep_keys(lease, db, stop, &mut progress, start, |after| {
                    db.bounded(move |conn| Box::pin(expired_tokens(conn, limit, cutoff, after)))
                })
                .await?
            }
            Target::FinishedOutbox => {
                let cutoff = cutoff(db, days(self.settings.outbox_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| {
                    db.bounded(move |conn| Box::pin(finished_outbox(conn, limit, cutoff, after)))
                })
                .await?
            }
            Target::OutboxBodies => {
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| {
                    db.bounded(move |conn| Box::pin(outbox_bodies(conn, limit, cutoff, after)))
                })
                .await?
            }
            Target::SharedContents => {
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| {
                    db.bounded(move |conn| Box::pin(shared_contents(conn, limit, cutoff)))
                })
                .await?
            }
            Target::UnconfirmedSignups => {
                let cutoff = cutoff(db, days(self.settings.unconfirmed_days)).await?;
                let start = (DateTime::UNIX_EPOCH, Uuid::nil());
                sweep_keys(lease, db, stop, &mut progress, start, |after| {
                    db.bounded(move |conn| {
                        Box::pin(unconfirmed_signups(conn, limit, cutoff, after))
                    })
                })
                .await?
            }
            Target::WebhookRecords => {
                let cutoff = cutoff(db, days(self.settings.webhook_record_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| {
                    db.bounded(move |conn| Box::pin(webhook_records(conn, limit, cutoff)))
                })
                .await?
            }
            Target::InboxEmails => {
                let cutoff = cutoff(db, days(self.settings.body_days)).await?;
                sweep_keys(lease, db, stop, &mut progress, (), |()| {
                    db.bounded(move |conn| Box::pin(inbox_emails(conn, limit, cutoff)))
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

// The batches. Each is one statement: `scanned` reads the next `limit` keys
// of an index after the cursor without locking anything, `picked` locks
// those still to be acted on and skips any a live transaction holds, and
// the last CTE acts. The statement answers how many rows it acted on, how
// many it read, and the last key read.

/// A batch's answer: rows acted on, rows read, the last key read.
type Counted<K> = (i64, i64, Option<DateTime<Utc>>, Option<K>);

fn batch<K>(limit: i64, (acted, scanned, at, key): Counted<K>) -> Batch<(DateTime<Utc>, K)> {
    Batch {
        acted: acted as u64,
        more: scanned >= limit,
        last: at.zip(key),
    }
}

async fn expired_tokens(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Vec<u8>),
) -> Result<Batch<(DateTime<Utc>, Vec<u8>)>, sqlx::Error> {
    let counted = sqlx::query_as(
        "WITH scanned AS ( \
             SELECT token_hash, expires_at FROM confirmation_tokens \
             WHERE expires_at < $2 AND (expires_at, token_hash) > ($3, $4) \
             ORDER BY expires_at, token_hash \
             LIMIT $1 \
         ), picked AS ( \
             SELECT token_hash FROM confirmation_tokens \
             WHERE token_hash IN (SELECT token_hash FROM scanned) AND expires_at < $2 \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM confirmation_tokens \
             WHERE token_hash IN (SELECT token_hash FROM picked) \
             RETURNING 1 \
         ), last AS ( \
             SELECT expires_at, token_hash FROM scanned \
             ORDER BY expires_at DESC, token_hash DESC LIMIT 1 \
         ) \
         SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM scanned), \
                (SELECT expires_at FROM last), (SELECT token_hash FROM last)",
    )
    .bind(limit)
    .bind(cutoff)
    .bind(at)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(batch(limit, counted))
}

/// Sent or failed outbox rows that finished before `cutoff`, in the order
/// they finished (the partial index `email_outbox_finished_idx`).
async fn finished_outbox(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<Batch<(DateTime<Utc>, Uuid)>, sqlx::Error> {
    let counted = sqlx::query_as(
        "WITH scanned AS ( \
             SELECT id, COALESCE(sent_at, failed_at) AS finished_at FROM email_outbox \
             WHERE status <> 'pending' AND COALESCE(sent_at, failed_at) < $2 \
               AND (COALESCE(sent_at, failed_at), id) > ($3, $4) \
             ORDER BY COALESCE(sent_at, failed_at), id \
             LIMIT $1 \
         ), picked AS ( \
             SELECT id FROM email_outbox \
             WHERE id IN (SELECT id FROM scanned) AND status <> 'pending' \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM email_outbox WHERE id IN (SELECT id FROM picked) RETURNING 1 \
         ), last AS ( \
             SELECT finished_at, id FROM scanned ORDER BY finished_at DESC, id DESC LIMIT 1 \
         ) \
         SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM scanned), \
                (SELECT finished_at FROM last), (SELECT id FROM last)",
    )
    .bind(limit)
    .bind(cutoff)
    .bind(at)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(batch(limit, counted))
}

/// Clears what a sent or failed row still holds of its email: inline
/// bodies (a failed one keeps them for `outbox requeue-failed` until now),
/// personalisation, and its reference to a shared content, whose subject it
/// keeps in place of the reference (a row has a subject or a content). Once
/// cleared, a failed row can no longer be queued again.
async fn outbox_bodies(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<Batch<(DateTime<Utc>, Uuid)>, sqlx::Error> {
    let counted = sqlx::query_as(
        "WITH scanned AS ( \
             SELECT id, COALESCE(sent_at, failed_at) AS finished_at, \
                    html_body IS NOT NULL OR text_body IS NOT NULL \
                        OR personalisation IS NOT NULL OR content_id IS NOT NULL AS has_body \
             FROM email_outbox \
             WHERE status <> 'pending' AND COALESCE(sent_at, failed_at) < $2 \
               AND (COALESCE(sent_at, failed_at), id) > ($3, $4) \
             ORDER BY COALESCE(sent_at, failed_at), id \
             LIMIT $1 \
         ), picked AS ( \
             SELECT id FROM email_outbox \
             WHERE id IN (SELECT id FROM scanned WHERE has_body) AND status <> 'pending' \
             FOR UPDATE SKIP LOCKED \
         ), cleared AS ( \
             UPDATE email_outbox o \
             SET html_body = NULL, text_body = NULL, personalisation = NULL, \
                 content_id = NULL, \
                 subject = COALESCE(o.subject, \
                     (SELECT c.subject FROM email_contents c WHERE c.id = o.content_id)) \
             WHERE o.id IN (SELECT id FROM picked) \
             RETURNING 1 \
         ), last AS ( \
             SELECT finished_at, id FROM scanned ORDER BY finished_at DESC, id DESC LIMIT 1 \
         ) \
         SELECT (SELECT count(*) FROM cleared), (SELECT count(*) FROM scanned), \
                (SELECT finished_at FROM last), (SELECT id FROM last)",
    )
    .bind(limit)
    .bind(cutoff)
    .bind(at)
    .bind(key)
    .fetch_one(conn)
    .await?;
    Ok(batch(limit, counted))
}

/// Shared contents written before `cutoff` that no outbox row refers to.
/// Pending rows keep theirs; finished ones let go in [`outbox_bodies`].
/// A content is written with its rows, so none gains a reference later.
/// Few rows (one per shared send): no cursor, each batch takes the oldest.
async fn shared_contents(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<Batch<()>, sqlx::Error> {
    let (deleted,): (i64,) = sqlx::query_as(
        "WITH picked AS ( \
             SELECT id FROM email_contents c \
             WHERE created_at < $2 \
               AND NOT EXISTS (SELECT 1 FROM email_outbox o WHERE o.content_id = c.id) \
             ORDER BY created_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM email_contents WHERE id IN (SELECT id FROM picked) RETURNING 1 \
         ) \
         SELECT count(*) FROM deleted",
    )
    .bind(limit)
    .bind(cutoff)
    .fetch_one(conn)
    .await?;
    Ok(Batch {
        acted: deleted as u64,
        more: deleted >= limit,
        last: Some(()),
    })
}

/// Subscribers still pending confirmation who signed up before `cutoff`,
/// with their tokens (which refer to them). The index on (subscribed_at,
/// id) is read in order, confirmed and unsubscribed rows included, so that
/// every batch reads at most `limit` rows.
///
/// Two statements in one short transaction: the first locks the rows to
/// delete, skipping any a sign-up holds; the second, whose snapshot is
/// taken once those locks are held, deletes them with their tokens. A
/// sign-up that stored a token for one of them in between has committed
/// by then, so the second statement sees (and keeps) it; done in one
/// statement, that token would be missed and the foreign key would fail
/// the batch. A subscriber with a live token is kept: they asked again
/// lately (a sign-up of a known address adds a token to the old row), and
/// their link must work. Their address also leaves the suppression list's
/// entry, which keeps an address only while a subscriber has it.
async fn unconfirmed_signups(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<Batch<(DateTime<Utc>, Uuid)>, sqlx::Error> {
    let mut transaction = sqlx::Connection::begin(conn).await?;
    let (scanned, last_at, last_id, locked): (i64, Option<DateTime<Utc>>, Option<Uuid>, Vec<Uuid>) =
        sqlx::query_as(
            "WITH scanned AS ( \
                 SELECT id, subscribed_at FROM subscriptions \
                 WHERE subscribed_at < $2 AND (subscribed_at, id) > ($3, $4) \
                 ORDER BY subscribed_at, id \
                 LIMIT $1 \
             ), picked AS ( \
                 SELECT id FROM subscriptions \
                 WHERE id IN (SELECT id FROM scanned) \
                   AND status = 'pending_confirmation' AND subscribed_at < $2 \
                 FOR UPDATE SKIP LOCKED \
             ), last AS ( \
                 SELECT subscribed_at, id FROM scanned \
                 ORDER BY subscribed_at DESC, id DESC LIMIT 1 \
             ) \
             SELECT (SELECT count(*) FROM scanned), \
                    (SELECT subscribed_at FROM last), (SELECT id FROM last), \
                    ARRAY(SELECT id FROM picked)",
        )
        .bind(limit)
        .bind(cutoff)
        .bind(at)
        .bind(key)
        .fetch_one(&mut *transaction)
        .await?;
    let deleted: i64 = if locked.is_empty() {
        0
    } else {
        sqlx::query_scalar(
            "WITH picked AS ( \
                 SELECT id, email FROM subscriptions \
                 WHERE id = ANY($1) \
                   AND id NOT IN ( \
                       SELECT subscriber_id FROM confirmation_tokens \
                       WHERE subscriber_id = ANY($1) AND expires_at >= now()) \
             ), tokens AS ( \
                 DELETE FROM confirmation_tokens \
                 WHERE subscriber_id IN (SELECT id FROM picked) \
                 RETURNING 1 \
             ), unnamed AS ( \
                 UPDATE suppressions SET email = NULL \
                 WHERE email IN (SELECT lower(email) FROM picked) \
                 RETURNING 1 \
             ), deleted AS ( \
                 DELETE FROM subscriptions WHERE id IN (SELECT id FROM picked) RETURNING 1 \
             ) \
             SELECT count(*) FROM deleted",
        )
        .bind(&locked)
        .fetch_one(&mut *transaction)
        .await?
    };
    transaction.commit().await?;
    Ok(batch(limit, (deleted, scanned, last_at, last_id)))
}

/// Webhook record ids received before `cutoff`: only the provider's
/// retries need them, and those stop within days. The index is on
/// received_at alone, so there is no cursor to resume from; each batch
/// deletes the oldest.
async fn webhook_records(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<Batch<()>, sqlx::Error> {
    let (deleted,): (i64,) = sqlx::query_as(
        "WITH picked AS ( \
             SELECT source, record_id FROM webhook_records \
             WHERE received_at < $2 \
             ORDER BY received_at \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED \
         ), deleted AS ( \
             DELETE FROM webhook_records w USING picked p \
             WHERE w.source = p.source AND w.record_id = p.record_id \
             RETURNING 1 \
         ) \
         SELECT count(*) FROM deleted",
    )
    .bind(limit)
    .bind(cutoff)
    .fetch_one(conn)
    .await?;
    Ok(Batch {
        acted: deleted as u64,
        more: deleted >= limit,
        last: Some(()),
    })
}

/// The local inbox's emails kept before `cutoff`: their bodies hold live
/// links, as the outbox's do. The inbox's own statement, oldest first; no
/// cursor, as for webhook records.
async fn inbox_emails(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<Batch<()>, sqlx::Error> {
    let deleted = inbox::prune(conn, limit, cutoff).await?;
    Ok(Batch {
        acted: deleted as u64,
        more: deleted >= limit,
        last: Some(()),
    })
}
