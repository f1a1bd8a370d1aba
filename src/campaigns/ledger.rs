//! Every statement on `newsletter_issues`, `deliveries`, `delivery_batches`
//! and `publish_requests`. Each function takes a `&mut PgConnection`, so it
//! runs on a pooled connection or inside the caller's transaction alike.
//!
//! Three rules keep the ledger honest:
//! - a change to deliveries and the issue's counters is one statement, so
//!   the counters never drift from the rows they count;
//! - a sender's every write names the batch claim it holds, so a sender
//!   whose lease lapsed (and whose batch another sender took) changes
//!   nothing;
//! - a delivery is marked sent only with the email API's answer in hand.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
// Dynamic SQL here only splices this module's own constants, never input.
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, AssertSqlSafe, Connection, PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::emails::EmailContent;
use crate::outgoing_webhooks::events::{self as outgoing, Event, Subject};
use crate::subscribers::audience::{self, Audience};
use crate::subscribers::lists;
use crate::subscribers::segments::{Filter, Frozen, Walk, push_filter};
use crate::subscribers::suppression;

/// Postgres channel announcing that an issue has work for senders (it was
/// published, resumed, cancelled, had failed deliveries queued again, or a
/// part of its audience recorded). Sent after the commit, never in it.
pub const WORK_CHANNEL: &str = "newsletter_work";

/// Postgres channel on which every change to an issue's row is announced,
/// with the issue's id as payload (a trigger sends it).
pub const PROGRESS_CHANNEL: &str = "newsletter_progress";

/// Where an issue stands. "Scheduled" is not a state of its own: it is a
/// sending issue whose `send_at` is still ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum IssueState {
    Sending,
    Paused,
    Cancelled,
    Done,
}

impl IssueState {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueState::Sending => "sending",
            IssueState::Paused => "paused",
            IssueState::Cancelled => "cancelled",
            IssueState::Done => "done",
        }
    }
}

/// What the publish form carries so that submitting it twice publishes
/// once: 16 to 128 letters, digits, `-` or `_` (the form puts a UUID in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self, String> {
        let key = key.trim();
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !(16..=128).contains(&key.len()) || !key.chars().all(allowed) {
            return Err("The form's idempotency key is missing or malformed; \
                 reload the page and submit it again."
                .into());
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An issue as the publish form submits it, already parsed and rendered.
pub struct NewIssue<'a> {
    pub id: Uuid,
    pub title: &'a str,
    /// The Markdown as written.
    pub content: &'a str,
    /// What it renders to, with the recipient's `{{placeholders}}` left in.
    pub rendered: &'a EmailContent,
    pub message_stream: &'a str,
    /// `None`, or a moment already past, sends it now. The moment is kept
    /// as typed in the fingerprint, so that a form submitted again after
    /// its moment has passed still replays.
    pub send_at: Option<DateTime<Utc>>,
    /// The admin who published it; `None` when a program did, with an API
    /// token (the audit log names the token).
    pub created_by: Option<Uuid>,
    /// The lists it goes to; `None` for every confirmed subscriber.
    pub list_ids: Option<&'a [Uuid]>,
    /// The segment that narrows them, frozen as it is now; only with lists.
    pub segment: Option<&'a Frozen>,
    /// Whether it goes in the public archive as it is published. Stored by
    /// the archive (`campaigns::archive`), not here: it is only part of
    /// what makes two submissions the same.
    pub public: bool,
}

/// What makes two publishes under one key "the same", kept with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<u8>);

impl Fingerprint {
    /// The issue as it is stored: title, content, schedule, audience and
    /// whether it is public. For the compose form, whose retries are a
    /// browser sending the same form again within seconds.
    pub fn of(issue: &NewIssue<'_>) -> Self {
        let segment = issue.segment.map(|segment| segment.filter.to_json());
        Self::digest(
            issue.title,
            issue.content,
            issue.send_at,
            issue.list_ids,
            segment.as_deref(),
            issue.public,
        )
    }

    /// The request as a program sent it: the lists it named and the
    /// segment's id, before either is resolved. A retry hours later must
    /// replay even if a list was added or archived, or the segment edited,
    /// in between; resolving them again could refuse the very request that
    /// was published.
    pub fn of_request(
        title: &str,
        content: &str,
        send_at: Option<DateTime<Utc>>,
        lists: &[Uuid],
        segment: Option<Uuid>,
        public: bool,
    ) -> Self {
        let segment = segment.map(|id| format!("id:{id}"));
        let lists = (!lists.is_empty()).then_some(lists);
        Self::digest(title, content, send_at, lists, segment.as_deref(), public)
    }

    /// A publish of the stored draft `id`: what a retry of it sends is the
    /// draft's id, whatever the draft said (it is gone once published).
    pub fn of_draft(id: Uuid) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"draft");
        digest.update(id.as_bytes());
        Self(digest.finalize().to_vec())
    }

    /// A publish of the stored draft `id` with the text and choices a
    /// form sent with it, saved onto the draft as it is published: a retry
    /// of the same form replays, and the same key with other text (a form
    /// edited after it was sent) is refused rather than replayed as if the
    /// edit had gone out.
    pub fn of_edited_draft(id: Uuid, edit: &Fingerprint) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"edited draft");
        digest.update(id.as_bytes());
        digest.update(&edit.0);
        Self(digest.finalize().to_vec())
    }

    fn digest(
        title: &str,
        content: &str,
        send_at: Option<DateTime<Utc>>,
        lists: Option<&[Uuid]>,
        segment: Option<&str>,
        public: bool,
    ) -> Self {
        let mut digest = Sha256::new();
        for part in [
            title,
            content,
            &send_at.map(|at| at.to_rfc3339()).unwrap_or_default(),
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        // Only when there are lists, so that an issue for every confirmed
        // subscriber keeps the fingerprint it had before lists existed.
        if let Some(lists) = lists {
            let mut lists = lists.to_vec();
            lists.sort();
            digest.update(b"lists");
            digest.update((lists.len() as u64).to_be_bytes());
            for list in lists {
                digest.update(list.as_bytes());
            }
        }
        if let Some(segment) = segment {
            digest.update(b"segment");
            digest.update((segment.len() as u64).to_be_bytes());
            digest.update(segment.as_bytes());
        }
        // Only when public, for the same reason.
        if public {
            digest.update(b"public");
        }
        Self(digest.finalize().to_vec())
    }
}

/// Whose idempotency keys a key is among: an admin's (the compose form's)
/// or an API token's. Each has its own keys, so that one token's retry
/// never replays another's issue, nor an admin's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    Admin(Uuid),
    Token(Uuid),
}

impl KeyOwner {
    /// The table that holds this owner's keys, and its owner column: two
    /// tables, as a token has no admin row for `publish_requests` to key by.
    fn table(self) -> (&'static str, &'static str, Uuid) {
        match self {
            KeyOwner::Admin(id) => ("publish_requests", "admin_id", id),
            KeyOwner::Token(id) => ("api_publish_requests", "token_id", id),
        }
    }
}

/// What publishing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub issue_id: Uuid,
    /// The key had published this issue already: nothing new was stored.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("this form was already submitted with different content")]
    KeyReused,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Stores an issue in the caller's transaction (the caller wakes the
/// senders once it commits, [`super::wake_senders_after_commit`]),
/// unless `key` published one in the past 24 hours: then the same content
/// gets that issue back and other content [`PublishError::KeyReused`].
///
/// The key is taken before the issue is written: a concurrent request with
/// the same key waits on the key's unique index until this transaction
/// ends, then finds the key taken and replays (or is refused).
pub async fn publish(
    conn: &mut PgConnection,
    owner: KeyOwner,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
    issue: NewIssue<'_>,
) -> Result<Published, PublishError> {
    let issue_id = issue.id;
    let fingerprint = &fingerprint.0;
    let (table, column, owner_id) = owner.table();
    // Expired keys are forgotten here, by the only writer of the table: an
    // owner's keys never outnumber a day of their submissions.
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE {column} = $1 AND created_at < now() - interval '24 hours'"
    )))
    .bind(owner_id)
    .execute(&mut *conn)
    .await?;
    let taken: Option<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO {table} ({column}, idempotency_key, fingerprint, issue_id) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT ({column}, idempotency_key) DO UPDATE \
             SET fingerprint = EXCLUDED.fingerprint, issue_id = EXCLUDED.issue_id, \
                 created_at = now() \
             WHERE {table}.created_at < now() - interval '24 hours' \
         RETURNING issue_id"
    )))
    .bind(owner_id)
    .bind(key.as_str())
    .bind(fingerprint)
    .bind(issue_id)
    .fetch_optional(&mut *conn)
    .await?;
    if taken.is_none() {
        let (earlier, issue_id): (Vec<u8>, Uuid) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT fingerprint, issue_id FROM {table} \
             WHERE {column} = $1 AND idempotency_key = $2"
        )))
        .bind(owner_id)
        .bind(key.as_str())
        .fetch_one(&mut *conn)
        .await?;
        return replay(&earlier, fingerprint, issue_id);
    }
    sqlx::query(
        "INSERT INTO newsletter_issues \
             (id, title, content, subject, html_body, text_body, message_stream, send_at, \
              created_by, rate_since, list_ids, segment) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, GREATEST($8, now()), $9, GREATEST($8, now()), $10, \
                 $11)",
    )
    .bind(issue_id)
    .bind(issue.title)
    .bind(issue.content)
    .bind(&issue.rendered.subject)
    .bind(&issue.rendered.html_body)
    .bind(&issue.rendered.text_body)
    .bind(issue.message_stream)
    .bind(issue.send_at)
    .bind(issue.created_by)
    .bind(issue.list_ids)
    .bind(issue.segment.map(Frozen::to_json))
    .execute(&mut *conn)
    .await?;
    outgoing::emit(conn, &[Event::issue_published(issue_id)], event_data).await?;
    Ok(Published {
        issue_id,
        replayed: false,
    })
}

/// What `owner`'s `key` published in the past 24 hours, if anything: the
/// same issue again for the same fingerprint, [`PublishError::KeyReused`]
/// for another. Read before a request's audience is resolved, so that a
/// retry replays whatever changed since; [`publish`] decides the race of
/// two first tries.
pub async fn published_with(
    conn: &mut PgConnection,
    owner: KeyOwner,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
) -> Result<Option<Published>, PublishError> {
    let (table, column, owner_id) = owner.table();
    let earlier: Option<(Vec<u8>, Uuid)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT fingerprint, issue_id FROM {table} \
         WHERE {column} = $1 AND idempotency_key = $2 \
           AND created_at >= now() - interval '24 hours'"
    )))
    .bind(owner_id)
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    earlier
        .map(|(earlier, issue_id)| replay(&earlier, &fingerprint.0, issue_id))
        .transpose()
}

fn replay(earlier: &[u8], now: &[u8], issue_id: Uuid) -> Result<Published, PublishError> {
    if earlier == now {
        Ok(Published {
            issue_id,
            replayed: true,
        })
    } else {
        Err(PublishError::KeyReused)
    }
}

/// One issue in the list, with its counts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IssueSummary {
    pub id: Uuid,
    pub title: String,
    pub state: IssueState,
    pub send_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub audience_complete: bool,
    pub recipients: i64,
    /// Every message the email API accepted, those reported bounced or
    /// complained about afterwards included.
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Of those sent, the deliveries the provider reported as hard bounces
    /// (and not complained about since).
    pub bounced: i64,
    /// Of those sent, the deliveries whose recipient marked them as spam.
    pub complained: i64,
    /// Why the issue paused itself (the complaint guard); `None` when an
    /// admin paused it, or it is not paused.
    pub paused_reason: Option<String>,
}

impl IssueSummary {
    pub fn state(&self) -> IssueState {
        self.state
    }

    /// Recorded and not yet sent, failed or skipped.
    pub fn queued(&self) -> i64 {
        self.recipients - self.sent - self.failed - self.skipped
    }

    /// Waiting for its `send_at`.
    pub fn is_scheduled(&self) -> bool {
        self.state() == IssueState::Sending && self.send_at > Utc::now()
    }

    /// What a person reads as its state.
    pub fn label(&self) -> &'static str {
        if self.is_scheduled() {
            "scheduled"
        } else {
            self.state().as_str()
        }
    }
}

const SUMMARY_COLUMNS: &str = "id, title, state, send_at, created_at, audience_complete, \
                               recipients, sent, failed, skipped, bounced, complained, \
                               paused_reason";

/// The latest `limit` issues, newest first.
pub async fn list(conn: &mut PgConnection, limit: i64) -> Result<Vec<IssueSummary>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM newsletter_issues ORDER BY created_at DESC, id LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Up to `limit` issues, newest first, after the issue `after` (the last
/// of the page before): a keyset page, so that an issue published while a
/// client walks the pages neither shifts nor repeats a row. An `after`
/// that names no issue gives an empty page.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<IssueSummary>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM newsletter_issues \
         WHERE $1::uuid IS NULL \
            OR (created_at, id) < (SELECT created_at, id FROM newsletter_issues WHERE id = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// An issue whole: what it says and where it stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Issue {
    #[sqlx(flatten)]
    pub summary: IssueSummary,
    pub content: String,
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    pub message_stream: String,
}

impl Issue {
    pub fn rendered(&self) -> EmailContent {
        EmailContent {
            subject: self.subject.clone(),
            html_body: self.html_body.clone(),
            text_body: self.text_body.clone(),
        }
    }
}

/// Whether an issue has the id.
pub async fn exists(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM newsletter_issues WHERE id = $1)")
        .bind(id)
        .fetch_one(conn)
        .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Issue>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, content, subject, html_body, text_body, message_stream \
         FROM newsletter_issues WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// An issue sending or paused, with its counters, for the metrics' gauges.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InFlight {
    pub id: Uuid,
    pub state: IssueState,
    pub recipients: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub bounced: i64,
    pub complained: i64,
}

/// The issues sending or paused: one row per issue, never a count over the
/// deliveries, whose counters live on the issue.
pub async fn in_flight(conn: &mut PgConnection) -> Result<Vec<InFlight>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, state, recipients, sent, failed, skipped, bounced, complained \
         FROM newsletter_issues WHERE state IN ('sending', 'paused')",
    )
    .fetch_all(conn)
    .await
}

/// Where a campaign stands, for its page and its live updates.
#[derive(Debug, Clone)]
pub struct Progress {
    pub summary: IssueSummary,
    /// Deliveries settled per second since sending began or last resumed.
    pub rate_per_second: Option<f64>,
}

impl Progress {
    /// Settled (sent, failed or skipped) out of all recorded, in percent;
    /// 100 only once every recipient is recorded and settled.
    pub fn percent(&self) -> u8 {
        let s = &self.summary;
        if s.state() == IssueState::Done {
            return 100;
        }
        if s.recipients == 0 {
            return 0;
        }
        let settled = s.sent + s.failed + s.skipped;
        let percent = (settled * 100 / s.recipients).min(100) as u8;
        if s.audience_complete {
            percent
        } else {
            percent.min(99)
        }
    }

    /// Seconds until the queued deliveries are settled at the current rate.
    pub fn seconds_left(&self) -> Option<u64> {
        let rate = self.rate_per_second.filter(|rate| *rate > 0.0)?;
        if self.summary.state() != IssueState::Sending {
            return None;
        }
        Some((self.summary.queued() as f64 / rate).ceil() as u64)
    }
}

pub async fn progress(conn: &mut PgConnection, id: Uuid) -> Result<Option<Progress>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        summary: IssueSummary,
        elapsed: Option<f64>,
        rate_base: i64,
    }
    let row: Option<Row> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, rate_base, \
                EXTRACT(EPOCH FROM (COALESCE(finished_at, now()) - rate_since))::float8 AS elapsed \
         FROM newsletter_issues WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let settled = row.summary.sent + row.summary.failed + row.summary.skipped;
        let rate_per_second = row
            .elapsed
            .filter(|elapsed| *elapsed > 0.5)
            .map(|elapsed| (settled - row.rate_base).max(0) as f64 / elapsed);
        Progress {
            summary: row.summary,
            rate_per_second,
        }
    }))
}

/// Stops handing out the issue's batches; those in flight finish. Returns
/// whether the issue was sending.
pub async fn pause(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE newsletter_issues SET state = 'paused', paused_reason = NULL \
         WHERE id = $1 AND state = 'sending'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pauses a sending issue on the service's own initiative, saying why on
/// its page (the complaint guard). Returns whether it was sending.
pub async fn pause_with_reason(
    conn: &mut PgConnection,
    id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE newsletter_issues SET state = 'paused', paused_reason = $2 \
         WHERE id = $1 AND state = 'sending'",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What the email provider reported about a delivery after sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A hard bounce: the message never arrived.
    Bounced,
    /// The recipient marked it as spam.
    Complained,
}

impl Report {
    fn status(self) -> &'static str {
        match self {
            Report::Bounced => "bounced",
            Report::Complained => "complained",
        }
    }
}

/// The issue's counts after a report changed one of its deliveries, as
/// the complaint guard judges them: counted since an admin last resumed
/// the issue after the guard paused it (from the start if never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub state: IssueState,
    /// Sent since the guard's baseline.
    pub sent: i64,
    /// Complained about since the guard's baseline.
    pub complained: i64,
}

/// What an erased subscriber's deliveries say as their reason.
pub const ERASED_REASON: &str = "the reason was erased with the recipient";

/// Replaces the reasons of a subscriber's deliveries and forgets their
/// provider message ids, for their erasure. This release writes only codes
/// and fixed text as reasons, but the previous one wrote the provider's
/// words, which may quote the address; the reasons cannot be told apart, so
/// all of them go. The message id goes because the ids of the provider's
/// webhook records are digests over the message id and the address: with
/// the id, a guessed address could be checked against them. The states and
/// counts stay: the issue's figures remain true.
pub async fn erase_details_of(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<u64, sqlx::Error> {
    let erased = sqlx::query(
        "UPDATE deliveries \
         SET last_error = CASE WHEN last_error IS NULL THEN NULL ELSE $2 END, \
             message_id = NULL \
         WHERE subscriber_id = $1 AND (last_error IS NOT NULL OR message_id IS NOT NULL)",
    )
    .bind(subscriber_id)
    .bind(ERASED_REASON)
    .execute(conn)
    .await?;
    Ok(erased.rows_affected())
}

/// Moves a delivery the provider reported on: `sent` or `queued` to
/// `bounced` or `complained`, or `bounced → complained` (the complaint is
/// the stronger fact; a bounce after a complaint changes nothing). `sent`
/// keeps counting it (and starts to, for a queued one: see below);
/// `bounced` and `complained` count the rows in those states, changed in
/// the same statement as the row. Returns the issue's counts (see
/// [`Reported`]), or `None` when nothing changed: the delivery is unknown,
/// failed or skipped, or already in that state (a repeated report). `why`
/// becomes the delivery's reason on the issue's page.
///
/// A report can arrive while its delivery is still `queued`: the provider
/// rejected it at once, before the sender recorded the API's answer (or
/// while that write is retried through a database blip). The provider
/// reports only on messages it accepted, so the delivery was sent: `sent`
/// counts it here, in the same statement. [`mark_sent`] moves only queued
/// rows and counts only those it moved, so the sender's late answer then
/// changes nothing and counts nothing twice. Dropping such a report instead
/// would lose it for good: its record is remembered, so the provider's
/// retry would be taken for a repeat.
///
/// The delivery's row is locked first, so that two reports about it at
/// once move it one after the other, each from the state the other left.
pub async fn report_delivery(
    conn: &mut PgConnection,
    delivery: DeliveryId,
    report: Report,
    why: &str,
) -> Result<Option<Reported>, sqlx::Error> {
    let was: Option<String> = sqlx::query_scalar(
        "SELECT status FROM deliveries WHERE issue_id = $1 AND seq = $2 FOR UPDATE",
    )
    .bind(delivery.issue_id)
    .bind(delivery.seq)
    .fetch_optional(&mut *conn)
    .await?;
    let allowed = matches!(
        (was.as_deref(), report),
        (Some("sent" | "queued"), _) | (Some("bounced"), Report::Complained)
    );
    if !allowed {
        return Ok(None);
    }
    let counts: Option<(IssueState, i64, i64)> = sqlx::query_as(
        "WITH changed AS ( \
             UPDATE deliveries SET status = $3, last_error = $5, updated_at = now() \
             WHERE issue_id = $1 AND seq = $2 AND status = $4 \
             RETURNING 1 \
         ) \
         UPDATE newsletter_issues \
         SET sent = sent + CASE WHEN $4 = 'queued' THEN 1 ELSE 0 END, \
             bounced = bounced + CASE WHEN $3 = 'bounced' THEN 1 \
                                      WHEN $4 = 'bounced' THEN -1 ELSE 0 END, \
             complained = complained + CASE WHEN $3 = 'complained' THEN 1 ELSE 0 END \
         WHERE id = $1 AND EXISTS (SELECT 1 FROM changed) \
         RETURNING state, sent - guard_sent_base, complained - guard_complained_base",
    )
    .bind(delivery.issue_id)
    .bind(delivery.seq)
    .bind(report.status())
    .bind(was)
    .bind(why)
    .fetch_optional(conn)
    .await?;
    Ok(counts.map(|(state, sent, complained)| Reported {
        state,
        sent,
        complained,
    }))
}

/// Hands out the issue's batches again. Returns whether it was paused.
///
/// Resuming an issue the complaint guard paused is the admin's judgement
/// on the complaints so far: the guard counts afresh from here (see
/// [`Reported`]). Judged on its whole history instead, the issue would
/// pause again at the very next complaint, however few came since. A
/// resume after an admin's own pause keeps the count going, so that
/// pausing and resuming does not wipe out the guard's sample.
pub async fn resume(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE newsletter_issues \
         SET state = 'sending', rate_since = now(), rate_base = sent + failed + skipped, \
             guard_sent_base = CASE WHEN paused_reason IS NULL THEN guard_sent_base \
                                    ELSE sent END, \
             guard_complained_base = CASE WHEN paused_reason IS NULL \
                                          THEN guard_complained_base ELSE complained END, \
             paused_reason = NULL \
         WHERE id = $1 AND state = 'paused'",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        // Its last batches may have ended while it was paused.
        finish_issue_if_settled(&mut *conn, id).await?;
    }
    Ok(done.rows_affected() == 1)
}

/// Ends the campaign. Only the issue's state changes here, at once
/// however large the audience: senders then close its open batches one by
/// one, skipping what is still queued in them as cancelled (a batch in
/// flight finishes first, its email may be with the API already). Returns
/// whether the issue was sending or paused.
///
/// The explicit `FOR UPDATE` conflicts with the `FOR KEY SHARE` a sender
/// takes on the issue while it releases a batch, so the release sees the
/// cancellation or the cancellation waits for the release; a plain UPDATE
/// would not wait (its lock is compatible with that one).
pub async fn cancel(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let mut transaction = conn.begin().await?;
    let found: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM newsletter_issues \
         WHERE id = $1 AND state IN ('sending', 'paused') FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *transaction)
    .await?;
    if found.is_none() {
        transaction.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "UPDATE newsletter_issues SET state = 'cancelled', finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Deliveries requeued per transaction: bounded, so that requeueing a
/// whole failed campaign of a million never meets the statement timeout.
const REQUEUE_CHUNK: i32 = 20_000;

/// Queues the issue's failed deliveries again with a fresh count of
/// attempts, and reopens their batches, a range of seqs at a time. Returns
/// how many were queued. A cancelled issue stays cancelled: nothing is
/// requeued.
pub async fn requeue_failed(conn: &mut PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    let mut requeued = 0;
    let mut from: i32 = 1;
    loop {
        let mut transaction = conn.begin().await?;
        // The full row lock: releases of this issue's batches wait for it
        // (see `cancel`), so none can close a batch this reopens.
        let recipients: Option<i64> = sqlx::query_scalar(
            "SELECT recipients FROM newsletter_issues \
             WHERE id = $1 AND state IN ('sending', 'paused', 'done') FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *transaction)
        .await?;
        // Ended explicitly: a transaction dropped unfinished is rolled back
        // only when its connection is next used, holding the lock till then.
        if recipients.is_none_or(|n| i64::from(from) > n) {
            transaction.rollback().await?;
            break;
        }
        let to = from.saturating_add(REQUEUE_CHUNK - 1);
        let done: i64 = sqlx::query_scalar(
            "WITH reopened AS ( \
                 UPDATE delivery_batches b \
                 SET done = false, attempts = 0, next_attempt_at = now() \
                 WHERE b.issue_id = $1 AND b.last_seq >= $2 AND b.first_seq <= $3 \
                   AND EXISTS ( \
                       SELECT 1 FROM deliveries d \
                       WHERE d.issue_id = $1 AND d.seq BETWEEN b.first_seq AND b.last_seq \
                         AND d.seq BETWEEN $2 AND $3 AND d.status = 'failed') \
             ), requeued AS ( \
                 UPDATE deliveries SET status = 'queued', attempts = 0, updated_at = now() \
                 WHERE issue_id = $1 AND seq BETWEEN $2 AND $3 AND status = 'failed' \
                 RETURNING 1 \
             ), counted AS ( \
                 UPDATE newsletter_issues \
                 SET failed = failed - (SELECT count(*) FROM requeued), \
                     state = CASE WHEN state = 'done' THEN 'sending' ELSE state END, \
                     finished_at = CASE WHEN state = 'done' THEN NULL ELSE finished_at END, \
                     rate_since = CASE WHEN state = 'done' THEN now() ELSE rate_since END, \
                     rate_base = CASE WHEN state = 'done' \
                         THEN sent + skipped + failed - (SELECT count(*) FROM requeued) \
                         ELSE rate_base END \
                 WHERE id = $1 AND (SELECT count(*) FROM requeued) > 0 \
             ) \
             SELECT count(*) FROM requeued",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *transaction)
        .await?;
        transaction.commit().await?;
        requeued += done as u64;
        if to == i32::MAX {
            break;
        }
        from = to + 1;
    }
    Ok(requeued)
}

/// A recipient who did not get the issue, and why.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Undelivered {
    pub seq: i32,
    /// `None` once the subscriber was erased.
    pub email: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i16,
}

/// How many of the issue's deliveries each provider took, most first.
/// Deliveries sent before providers were recorded are not counted. Reads
/// every delivery of the issue: for the issue's page, not for a loop.
pub async fn sent_by_provider(
    conn: &mut PgConnection,
    issue_id: Uuid,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT provider, count(*) FROM deliveries \
         WHERE issue_id = $1 AND provider IS NOT NULL \
         GROUP BY provider ORDER BY count(*) DESC, provider",
    )
    .bind(issue_id)
    .fetch_all(conn)
    .await
}

/// The issue's deliveries that did not reach their recipient (failed,
/// skipped, bounced) or that did and were complained about, after
/// `after_seq`, in order, at most `limit`. The status list is the
/// predicate of `deliveries_unreached_idx`, word for word, so that the
/// planner can prove the index covers it: the rows come from that small
/// index, not from a scan of the issue's every delivery.
pub async fn undelivered(
    conn: &mut PgConnection,
    id: Uuid,
    after_seq: i32,
    limit: i64,
) -> Result<Vec<Undelivered>, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(UNDELIVERED.as_str()))
        .bind(id)
        .bind(after_seq)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The statement of [`undelivered`]: each delivery with its recipient's
/// address ([`audience::ADDRESSES_SQL`]), NULL once they were erased.
static UNDELIVERED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.seq, s.email, d.status, d.last_error AS reason, d.attempts \
         FROM deliveries d LEFT JOIN ({addresses}) s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 AND d.seq > $2 \
           AND d.status IN ('failed', 'skipped', 'bounced', 'complained') \
         ORDER BY d.seq LIMIT $3",
        addresses = audience::ADDRESSES_SQL,
    )
});

/// Names one delivery wherever it travels: in the email API's `Metadata`,
/// and back in its webhooks. Written `<issue id>:<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId {
    pub issue_id: Uuid,
    pub seq: i32,
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.issue_id, self.seq)
    }
}

impl FromStr for DeliveryId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (issue, seq) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}` is not a delivery id"))?;
        Ok(DeliveryId {
            issue_id: issue
                .parse()
                .map_err(|_| format!("`{s}` is not a delivery id"))?,
            seq: seq
                .parse()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| format!("`{s}` is not a delivery id"))?,
        })
    }
}

// ---------------------------------------------------------------------------
// What recorders and senders do.

/// A recorder's hold on an issue whose audience is not recorded yet.
#[derive(Debug, Clone, Copy)]
pub struct AudienceClaim {
    pub issue_id: Uuid,
    pub claim: Uuid,
}

/// Takes the next due issue whose audience is not yet recorded, for `lease`.
pub async fn claim_audience(
    conn: &mut PgConnection,
    lease: Duration,
) -> Result<Option<AudienceClaim>, sqlx::Error> {
    let claimed: Option<(Uuid, Uuid)> = sqlx::query_as(
        "UPDATE newsletter_issues \
         SET audience_claim = gen_random_uuid(), \
             audience_claimed_until = now() + make_interval(secs => $1) \
         WHERE id = ( \
             SELECT id FROM newsletter_issues \
             WHERE state = 'sending' AND NOT audience_complete AND send_at <= now() \
               AND (audience_claimed_until IS NULL OR audience_claimed_until < now()) \
             ORDER BY send_at LIMIT 1 FOR UPDATE SKIP LOCKED \
         ) \
         RETURNING id, audience_claim",
    )
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await?;
    Ok(claimed.map(|(issue_id, claim)| AudienceClaim { issue_id, claim }))
}

/// What one chunk of audience recording did.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    pub recorded: i64,
    pub complete: bool,
}

/// Records the next `chunk` confirmed subscribers (by id, after the cursor)
/// who had confirmed by the issue's `send_at`, numbers them on from the
/// last, cuts them into batches of `batch_size`, and moves the cursor and
/// the lease on, in one short transaction. A subscriber whose address is
/// on the suppression list is recorded as skipped, with the reason, so
/// that the issue's page says who was left out and why. `None` when the claim was lost
/// or the issue was paused or cancelled meanwhile: the chunk is then rolled
/// back, and whoever records next starts from the same cursor.
///
/// `confirmed_at <= send_at` is what freezes the audience although it is
/// recorded over many transactions: someone confirming after the issue
/// went out is never included, however late their chunk is read. Rows
/// confirmed before `confirmed_at` existed have none, and are included.
/// The cursor is read first and passed as a value, so that the chunk is an
/// index range scan on the primary key from the cursor on. It is read
/// without a lock, and the statement's last step moves it on only if the
/// claim, the state and the cursor are still as read: the issue's row is
/// locked for a moment at the end, not for the whole chunk, so a pause or
/// a cancel never waits behind a recording.
pub async fn record_audience_chunk(
    conn: &mut PgConnection,
    claim: AudienceClaim,
    chunk: i64,
    batch_size: i32,
    lease: Duration,
) -> Result<Option<Chunk>, sqlx::Error> {
    let mut transaction = conn.begin().await?;
    // Its send time, recipients so far, cursor, lists and segment.
    type Recording = (
        DateTime<Utc>,
        i64,
        Option<Uuid>,
        Option<Vec<Uuid>>,
        Option<serde_json::Value>,
    );
    let issue: Option<Recording> = sqlx::query_as(
        "SELECT send_at, recipients, audience_cursor, list_ids, segment FROM newsletter_issues \
         WHERE id = $1 AND audience_claim = $2 AND state = 'sending' AND NOT audience_complete",
    )
    .bind(claim.issue_id)
    .bind(claim.claim)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((send_at, recorded_before, cursor, list_ids, segment)) = issue else {
        transaction.rollback().await?;
        return Ok(None);
    };
    if let (Some(list_ids), Some(segment)) = (&list_ids, segment) {
        let filter = thaw(&mut transaction, segment).await?;
        let mut arguments = PgArguments::default();
        let encode = sqlx::Error::Encode;
        arguments.add(claim.issue_id).map_err(encode)?;
        arguments
            .add(cursor.unwrap_or(Uuid::nil()))
            .map_err(encode)?;
        arguments.add(send_at).map_err(encode)?;
        arguments.add(recorded_before).map_err(encode)?;
        arguments.add(chunk).map_err(encode)?;
        arguments.add(batch_size).map_err(encode)?;
        arguments.add(lease.as_secs_f64()).map_err(encode)?;
        arguments.add(claim.claim).map_err(encode)?;
        arguments.add(cursor).map_err(encode)?;
        arguments.add(list_ids.clone()).map_err(encode)?;
        // The statement's own ten, then the filter's values from `$11` on.
        let (before, after) = &*RECORD_SEGMENT_AUDIENCE_CHUNK;
        let mut query = QueryBuilder::<Postgres>::with_arguments(before.as_str(), arguments);
        push_filter(&mut query, &filter, Walk::ById);
        query.push(after.as_str());
        let moved_on: Option<(i64, bool)> = query
            .build_query_as()
            .fetch_optional(&mut *transaction)
            .await?;
        return settle_chunk(transaction, claim, moved_on).await;
    }
    let statement = match list_ids {
        None => RECORD_AUDIENCE_CHUNK.as_str(),
        Some(_) => RECORD_LIST_AUDIENCE_CHUNK.as_str(),
    };
    let mut record = sqlx::query_as(AssertSqlSafe(statement))
        .bind(claim.issue_id)
        .bind(cursor.unwrap_or(Uuid::nil()))
        .bind(send_at)
        .bind(recorded_before)
        .bind(chunk)
        .bind(batch_size)
        .bind(lease.as_secs_f64())
        .bind(claim.claim)
        .bind(cursor);
    if let Some(list_ids) = list_ids {
        // `$10`, after the statement's own nine.
        record = record.bind(list_ids);
    }
    let moved_on: Option<(i64, bool)> = record.fetch_optional(&mut *transaction).await?;
    settle_chunk(transaction, claim, moved_on).await
}

/// Commits a recorded chunk (`moved_on`: how many, and whether that was
/// the last), or rolls back when the claim, the state or the cursor moved.
async fn settle_chunk(
    mut transaction: sqlx::Transaction<'_, Postgres>,
    claim: AudienceClaim,
    moved_on: Option<(i64, bool)>,
) -> Result<Option<Chunk>, sqlx::Error> {
    let Some((recorded, complete)) = moved_on else {
        transaction.rollback().await?;
        return Ok(None);
    };
    if complete {
        finish_issue_if_settled(&mut transaction, claim.issue_id).await?;
    }
    transaction.commit().await?;
    Ok(Some(Chunk { recorded, complete }))
}

/// The issue's segment as it was frozen when it was published, checked
/// again against the attribute kinds of that moment.
async fn thaw(conn: &mut PgConnection, segment: serde_json::Value) -> Result<Filter, sqlx::Error> {
    let frozen = Frozen::from_json(segment).map_err(|e| sqlx::Error::Decode(e.into()))?;
    let lists = lists::all(&mut *conn)
        .await?
        .into_iter()
        .map(|list| (list.id, list.name))
        .collect();
    let imports = crate::imports::store::known(&mut *conn).await?;
    frozen
        .thaw(lists, imports)
        .map_err(|e| sqlx::Error::Decode(e.to_string().into()))
}

/// The statement of [`record_audience_chunk`]: the next chunk of the
/// audience ([`Audience::sql`], the subscriber store's definition of who an
/// issue goes to, with `suppressed` the reason a subscriber is left out)
/// after the cursor, in id order.
static RECORD_AUDIENCE_CHUNK: LazyLock<String> =
    LazyLock::new(|| record_audience_chunk_sql(Audience::confirmed_by("$3")));

/// [`RECORD_AUDIENCE_CHUNK`] for an issue that goes to lists: `$10` holds
/// their ids.
static RECORD_LIST_AUDIENCE_CHUNK: LazyLock<String> = LazyLock::new(|| {
    record_audience_chunk_sql(Audience::confirmed_by("$3").on_lists("$10").after("$2"))
});

/// Where a segment's filter goes in [`RECORD_SEGMENT_AUDIENCE_CHUNK`].
const SEGMENT_MARK: &str = "/* the segment's filter */";

/// [`RECORD_LIST_AUDIENCE_CHUNK`] narrowed by a segment, in two halves: the
/// segment's filter, compiled with its values bound from `$11` on, goes
/// between them.
static RECORD_SEGMENT_AUDIENCE_CHUNK: LazyLock<(String, String)> = LazyLock::new(|| {
    let statement = record_audience_chunk_sql(
        Audience::confirmed_by("$3")
            .on_lists("$10")
            .after("$2")
            .narrowed_by(SEGMENT_MARK),
    );
    let (before, after) = statement
        .split_once(SEGMENT_MARK)
        .expect("the statement holds the mark once");
    (before.to_owned(), after.to_owned())
});

fn record_audience_chunk_sql(audience: Audience<'_>) -> String {
    format!(
        "WITH chosen AS ( \
             SELECT a.id, ($4 + row_number() OVER (ORDER BY a.id))::int AS seq, \
                    a.suppressed \
             FROM ({audience}) a \
             WHERE a.id > $2 \
             ORDER BY a.id LIMIT $5 \
         ), recorded AS ( \
             INSERT INTO deliveries (issue_id, seq, subscriber_id, status, last_error, updated_at) \
             SELECT $1, seq, id, \
                    CASE WHEN suppressed IS NULL THEN 'queued' ELSE 'skipped' END, \
                    {why}, \
                    CASE WHEN suppressed IS NOT NULL THEN now() END \
             FROM chosen \
         ), bounds AS ( \
             SELECT min(seq) AS low, max(seq) AS high, count(*) AS n, \
                    count(suppressed) AS suppressed, \
                    (SELECT id FROM chosen ORDER BY seq DESC LIMIT 1) AS last_id \
             FROM chosen \
         ), batches AS ( \
             INSERT INTO delivery_batches (issue_id, first_seq, last_seq) \
             SELECT $1, first, LEAST(first + $6 - 1, bounds.high) \
             FROM bounds, generate_series(bounds.low, bounds.high, $6) AS first \
             WHERE bounds.n > 0 \
         ) \
         UPDATE newsletter_issues i \
         SET recipients = i.recipients + bounds.n, \
             skipped = i.skipped + bounds.suppressed, \
             audience_cursor = COALESCE(bounds.last_id, i.audience_cursor), \
             audience_complete = bounds.n < $5, \
             audience_claimed_until = now() + make_interval(secs => $7) \
         FROM bounds \
         WHERE i.id = $1 AND i.audience_claim = $8 AND i.state = 'sending' \
           AND NOT i.audience_complete AND i.audience_cursor IS NOT DISTINCT FROM $9 \
         RETURNING bounds.n, i.audience_complete",
        audience = audience.sql(),
        why = suppression::skipped_because_sql("suppressed"),
    )
}

/// The statement of [`audience_size`], from the same audience as
/// [`RECORD_AUDIENCE_CHUNK`], so that the count cannot drift from what is
/// recorded. It leaves out the listed by the
/// join's own column, which Postgres reads as an anti-join; on `suppressed`
/// (NOT NULL in the table, which the planner does not use here) it would
/// join every row and filter after, a third slower at a million.
static AUDIENCE_SIZE: LazyLock<String> =
    LazyLock::new(|| audience_size_sql(Audience::confirmed_by("now()")));

/// [`AUDIENCE_SIZE`] for lists: `$1` holds their ids.
static LIST_AUDIENCE_SIZE: LazyLock<String> =
    LazyLock::new(|| audience_size_sql(Audience::confirmed_by("now()").on_lists("$1")));

fn audience_size_sql(audience: Audience<'_>) -> String {
    format!(
        "SELECT count(*) FROM ({audience}) a WHERE a.suppressed_email IS NULL",
        audience = audience.sql(),
    )
}

/// How many subscribers an issue published now would be sent to: those
/// [`record_audience_chunk`] records as queued, the confirmed whose address
/// is not on the suppression list. What the publish button asks about
/// ("Send to 1,204 subscribers?"). The audience itself is recorded when the
/// issue is due, so whoever confirms or leaves before then changes it.
///
/// It reads every confirmed subscriber, so on a large list it takes a
/// while; Postgres gives up on it after `limit` (a statement timeout for
/// this transaction alone, which must be open on `conn`), and the caller
/// asks without a number. `lists`: the lists it would go to, `None` for
/// every confirmed subscriber.
pub async fn audience_size(
    conn: &mut PgConnection,
    limit: Duration,
    lists: Option<&[Uuid]>,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(limit.as_millis().max(1).to_string())
        .execute(&mut *conn)
        .await?;
    match lists {
        None => sqlx::query_scalar(AssertSqlSafe(AUDIENCE_SIZE.as_str())),
        Some(lists) => {
            sqlx::query_scalar(AssertSqlSafe(LIST_AUDIENCE_SIZE.as_str())).bind(lists.to_vec())
        }
    }
    .fetch_one(conn)
    .await
}

/// Gives up a recorder's claim before its lease ends (the recorder stops,
/// or the issue was paused), so that recording can go on at once when it
/// may.
pub async fn release_audience(
    conn: &mut PgConnection,
    claim: AudienceClaim,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE newsletter_issues SET audience_claimed_until = NULL \
         WHERE id = $1 AND audience_claim = $2 AND NOT audience_complete",
    )
    .bind(claim.issue_id)
    .bind(claim.claim)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a sending issue done once its audience is recorded and no batch
/// is left open.
async fn finish_issue_if_settled(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let finished: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE newsletter_issues SET state = 'done', finished_at = now() \
         WHERE id = $1 AND state = 'sending' AND audience_complete \
           AND NOT EXISTS (SELECT 1 FROM delivery_batches WHERE issue_id = $1 AND NOT done) \
         RETURNING id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    emit_finished(conn, &finished).await
}

/// `issue.finished` for each issue that just became done, in the same
/// transaction as the change.
async fn emit_finished(conn: &mut PgConnection, finished: &[Uuid]) -> Result<(), sqlx::Error> {
    let events: Vec<Event> = finished
        .iter()
        .copied()
        .map(Event::issue_finished)
        .collect();
    outgoing::emit(conn, &events, event_data).await
}

/// What an outgoing webhook says of these issues: id, title, state and
/// counts, per issue. Issues have no address: `_addresses` is never
/// asked for.
async fn event_data(
    conn: &mut PgConnection,
    ids: &[Uuid],
    _addresses: &[String],
) -> Result<Vec<Subject>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, NULL::text AS address, jsonb_build_object( \
                    'id', id, 'title', title, 'state', state, 'send_at', send_at, \
                    'finished_at', finished_at, 'recipients', recipients, 'sent', sent, \
                    'failed', failed, 'skipped', skipped, 'bounced', bounced, \
                    'complained', complained) AS data \
         FROM newsletter_issues WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Which batch, under which claim: what every write of its sender names.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct BatchKey {
    pub issue_id: Uuid,
    pub first_seq: i32,
    pub last_seq: i32,
    pub claim_id: Uuid,
}

/// Marks done every sending issue that is settled but was not marked: its
/// last release was cut short (the process died between the two), or it
/// ended while paused. Senders run it when idle; it reads only the sending
/// issues whose audience is complete.
pub async fn finish_settled_issues(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let mut transaction = conn.begin().await?;
    let finished: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE newsletter_issues i SET state = 'done', finished_at = now() \
         WHERE i.state = 'sending' AND i.audience_complete \
           AND NOT EXISTS (SELECT 1 FROM delivery_batches b WHERE b.issue_id = i.id AND NOT b.done) \
         RETURNING i.id",
    )
    .fetch_all(&mut *transaction)
    .await?;
    emit_finished(&mut transaction, &finished).await?;
    transaction.commit().await?;
    Ok(finished.len() as u64)
}

/// A batch a sender holds, with the issue's content to render from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedBatch {
    #[sqlx(flatten)]
    pub key: BatchKey,
    /// Earlier attempts of this batch that failed as a whole.
    pub attempts: i32,
    /// `Cancelled` when the batch is claimed only to be closed.
    pub state: IssueState,
    pub subject: String,
    pub html_body: String,
    pub text_body: String,
    pub message_stream: String,
    /// Whether the issue goes to lists: then its unsubscribe links leave
    /// those lists only.
    pub for_lists: bool,
    /// The issue's slug while it is in the public archive, read with each
    /// claim: an issue made public or private mid-send changes the
    /// batches still to go.
    pub public_slug: Option<String>,
}

impl ClaimedBatch {
    pub fn content(&self) -> EmailContent {
        EmailContent {
            subject: self.subject.clone(),
            html_body: self.html_body.clone(),
            text_body: self.text_body.clone(),
        }
    }
}

/// Takes the next due batch of a sending issue (or an open batch of a
/// cancelled one, to close) for `lease`. `SKIP LOCKED` lets senders on
/// every replica claim different batches without waiting on each other; a
/// batch whose lease lapsed (its sender died) is due again.
pub async fn claim_batch(
    conn: &mut PgConnection,
    lease: Duration,
) -> Result<Option<ClaimedBatch>, sqlx::Error> {
    sqlx::query_as(
        "WITH claimed AS ( \
             UPDATE delivery_batches b \
             SET claim_id = gen_random_uuid(), \
                 claimed_until = now() + make_interval(secs => $1) \
             WHERE (b.issue_id, b.first_seq) = ( \
                 SELECT due.issue_id, due.first_seq \
                 FROM delivery_batches due \
                 JOIN newsletter_issues i ON i.id = due.issue_id \
                 WHERE NOT due.done \
                   AND ((i.state = 'sending' AND i.send_at <= now() \
                         AND due.next_attempt_at <= now()) \
                        OR i.state = 'cancelled') \
                   AND (due.claimed_until IS NULL OR due.claimed_until < now()) \
                 ORDER BY due.next_attempt_at, due.issue_id, due.first_seq \
                 LIMIT 1 FOR UPDATE OF due SKIP LOCKED \
             ) \
             RETURNING b.issue_id, b.first_seq, b.last_seq, b.claim_id, b.attempts \
         ) \
         SELECT claimed.issue_id, claimed.first_seq, claimed.last_seq, claimed.claim_id, \
                claimed.attempts, i.state, i.subject, i.html_body, i.text_body, \
                i.message_stream, i.list_ids IS NOT NULL AS for_lists, \
                CASE WHEN i.public_at IS NOT NULL THEN i.slug END AS public_slug \
         FROM claimed JOIN newsletter_issues i ON i.id = claimed.issue_id",
    )
    .bind(lease.as_secs_f64())
    .fetch_optional(conn)
    .await
}

/// The lists an issue went to; `None` when it went to every confirmed
/// subscriber, or there is no such issue.
pub async fn lists_of(
    conn: &mut PgConnection,
    issue_id: Uuid,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    sqlx::query_scalar("SELECT list_ids FROM newsletter_issues WHERE id = $1")
        .bind(issue_id)
        .fetch_optional(conn)
        .await
        .map(Option::flatten)
}

/// One queued delivery of a claimed batch, with who it goes to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub seq: i32,
    pub subscriber_id: Uuid,
    pub email: String,
    pub name: String,
    pub attempts: i16,
}

/// The batch's queued deliveries to confirmed subscribers whose address is
/// not suppressed. The others (no longer confirmed, erased, or suppressed
/// since the audience was recorded) are skipped first, with the reason, in
/// the same statement that counts them.
pub async fn batch_recipients(
    conn: &mut PgConnection,
    batch: BatchKey,
) -> Result<Vec<Recipient>, sqlx::Error> {
    sqlx::query(AssertSqlSafe(SKIP_UNWANTED.as_str()))
        .bind(batch.issue_id)
        .bind(batch.first_seq)
        .bind(batch.last_seq)
        .bind(batch.claim_id)
        .execute(&mut *conn)
        .await?;
    // A suppression committed between the two statements leaves its
    // delivery queued and out of this list: the batch is then released
    // with it queued, and the next claim skips it.
    sqlx::query_as(AssertSqlSafe(BATCH_RECIPIENTS.as_str()))
        .bind(batch.issue_id)
        .bind(batch.first_seq)
        .bind(batch.last_seq)
        .fetch_all(conn)
        .await
}

/// The lists of the issue `$1` of a batch's statements, read once per
/// statement. The cast makes it an array expression: `ANY` of a bare
/// subquery would compare each list id to its rows, whole arrays.
const ISSUE_LISTS: &str = "(SELECT i.list_ids FROM newsletter_issues i WHERE i.id = $1)::uuid[]";

/// The statement of [`batch_recipients`] that reads the batch's queued
/// deliveries with who they go to: those whose subscriber is still
/// reachable ([`audience::reachable_sql`]).
static BATCH_RECIPIENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT d.seq, d.subscriber_id, s.email, s.name, d.attempts \
         FROM deliveries d JOIN ({reachable}) s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 AND d.seq BETWEEN $2 AND $3 AND d.status = 'queued' \
         ORDER BY d.seq",
        reachable = audience::reachable_sql(ISSUE_LISTS),
    )
});

/// The statement of [`batch_recipients`] that skips the batch's queued
/// deliveries nobody should get, each with why: from each subscriber's
/// standing ([`audience::standing_sql`]).
static SKIP_UNWANTED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH unwanted AS ( \
             SELECT d.seq, \
                    CASE WHEN s.id IS NULL OR NOT s.confirmed \
                         THEN 'no longer subscribed when the issue was sent' \
                         WHEN NOT s.on_lists \
                         THEN 'had left the issue''s lists when it was sent' \
                         ELSE {why} END AS why \
             FROM deliveries d \
             LEFT JOIN ({standing}) s ON s.id = d.subscriber_id \
             WHERE d.issue_id = $1 AND d.seq BETWEEN $2 AND $3 AND d.status = 'queued' \
               AND (s.id IS NULL OR NOT s.confirmed OR NOT s.on_lists \
                    OR s.suppressed IS NOT NULL) \
         ), skipped AS ( \
             UPDATE deliveries d \
             SET status = 'skipped', updated_at = now(), last_error = unwanted.why \
             FROM unwanted \
             WHERE d.issue_id = $1 AND d.seq = unwanted.seq AND d.status = 'queued' \
               AND EXISTS ( \
                   SELECT 1 FROM delivery_batches b \
                   WHERE b.issue_id = $1 AND b.first_seq = $2 AND b.claim_id = $4) \
             RETURNING 1 \
         ) \
         UPDATE newsletter_issues SET skipped = skipped + (SELECT count(*) FROM skipped) \
         WHERE id = $1 AND (SELECT count(*) FROM skipped) > 0",
        standing = audience::standing_sql(ISSUE_LISTS),
        why = suppression::skipped_because_sql("s.suppressed"),
    )
});

/// `provider` accepted these deliveries: `(seq, its message id)`. Unlike
/// every other write of a sender this one does not need the claim to hold
/// still: an email the provider took has left, whoever holds its batch
/// now, and the ledger must say so. Returns how many were still queued.
pub async fn mark_sent(
    conn: &mut PgConnection,
    batch: BatchKey,
    provider: Provider,
    sent: &[(i32, Option<String>)],
) -> Result<u64, sqlx::Error> {
    let (seqs, ids): (Vec<i32>, Vec<Option<&str>>) =
        sent.iter().map(|(seq, id)| (*seq, id.as_deref())).unzip();
    settle(
        conn,
        batch,
        Guard::None,
        &format!(
            "UPDATE deliveries d \
             SET status = 'sent', message_id = ($6::text[])[array_position($5::int[], d.seq)], \
                 provider = '{}', last_error = NULL, attempts = d.attempts + 1, \
                 updated_at = now()",
            provider.as_str()
        ),
        "sent",
        &seqs,
        &ids,
    )
    .await
}

/// A provider's name as the ledger records it: one of the configured
/// providers', never text from outside, so it is written into the
/// statement as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider(&'static str);

impl Provider {
    /// `name` must be a plain lowercase word, as every provider's is.
    pub fn new(name: &'static str) -> Self {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()),
            "a provider's name is a plain lowercase word, not {name:?}"
        );
        Self(name)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

/// These deliveries can never be sent as they are: `(seq, reason)`.
pub async fn mark_failed(
    conn: &mut PgConnection,
    batch: BatchKey,
    failed: &[(i32, String)],
) -> Result<u64, sqlx::Error> {
    let (seqs, reasons): (Vec<i32>, Vec<Option<&str>>) = failed
        .iter()
        .map(|(seq, why)| (*seq, Some(why.as_str())))
        .unzip();
    settle(
        conn,
        batch,
        Guard::Claim,
        "UPDATE deliveries d \
         SET status = 'failed', last_error = ($6::text[])[array_position($5::int[], d.seq)], \
             attempts = d.attempts + 1, updated_at = now()",
        "failed",
        &seqs,
        &reasons,
    )
    .await
}

/// Whether a write needs the batch's claim to still be held.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    Claim,
    None,
}

/// Most bytes of lists one settling statement carries. A statement larger
/// than a TLS record (16 KiB) leaves in more than one write, and sqlx 0.9.0
/// does not set `TCP_NODELAY`: the second write waits for Postgres to
/// acknowledge the first, which it delays (40 ms on Linux) while the rest of
/// the message is missing (see `signups::BATCH_BYTES`). 500 MessageIDs are
/// about 24 KiB; in two statements they cost a round trip more, not 40 ms.
const SETTLE_BYTES: usize = 12 * 1024;
/// What a listed delivery adds to a statement besides its value: its seq
/// and the two lengths.
const SETTLE_ROW_BYTES: usize = 12;

/// Moves the listed queued deliveries of a batch to a final status and
/// adds them to the issue's counter of that status, one statement per
/// [`SETTLE_BYTES`] of the lists, each statement changing rows and counter
/// together.
///
/// The rows are found by `seq = ANY`, a lookup in the primary key whatever
/// Postgres estimates, and each takes its value by its place in the list.
/// Joined to `UNNEST` of the lists instead, the statement's generic plan
/// (used from its sixth execution on a connection) could rescan the whole
/// list for every row, when the ledger had no statistics yet: about 50 ms
/// for a batch of 500 instead of 5.
async fn settle(
    conn: &mut PgConnection,
    batch: BatchKey,
    guard: Guard,
    update: &str,
    counter: &str,
    seqs: &[i32],
    values: &[Option<&str>],
) -> Result<u64, sqlx::Error> {
    let size = |value: &Option<&str>| value.map_or(0, str::len) + SETTLE_ROW_BYTES;
    let mut settled = 0;
    let mut start = 0;
    while start < seqs.len() {
        let mut end = start + 1;
        let mut bytes = size(&values[start]);
        while end < seqs.len() && bytes + size(&values[end]) <= SETTLE_BYTES {
            bytes += size(&values[end]);
            end += 1;
        }
        let (part_seqs, part_values) = (&seqs[start..end], &values[start..end]);
        settled += settle_part(conn, batch, guard, update, counter, part_seqs, part_values).await?;
        start = end;
    }
    Ok(settled)
}

async fn settle_part(
    conn: &mut PgConnection,
    batch: BatchKey,
    guard: Guard,
    update: &str,
    counter: &str,
    seqs: &[i32],
    values: &[Option<&str>],
) -> Result<u64, sqlx::Error> {
    let settled: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "WITH settled AS ( \
             {update} \
             WHERE d.issue_id = $1 AND d.seq = ANY($5::int[]) AND d.seq BETWEEN $2 AND $3 \
               AND d.status = 'queued' \
               AND (NOT $7 OR EXISTS ( \
                   SELECT 1 FROM delivery_batches b \
                   WHERE b.issue_id = $1 AND b.first_seq = $2 AND b.claim_id = $4)) \
             RETURNING 1 \
         ), counted AS ( \
             UPDATE newsletter_issues SET {counter} = {counter} + (SELECT count(*) FROM settled) \
             WHERE id = $1 AND (SELECT count(*) FROM settled) > 0 \
         ) \
         SELECT count(*) FROM settled"
    )))
    .bind(batch.issue_id)
    .bind(batch.first_seq)
    .bind(batch.last_seq)
    .bind(batch.claim_id)
    .bind(seqs)
    .bind(values)
    .bind(guard == Guard::Claim)
    .fetch_one(conn)
    .await?;
    Ok(settled as u64)
}

/// The API refused these deliveries for now: `(seq, error)`. Each keeps its
/// place in the queue with the attempt counted, unless it has had
/// `max_attempts`, in which case it fails with the error. Returns how many
/// failed for good.
pub async fn note_passing_errors(
    conn: &mut PgConnection,
    batch: BatchKey,
    errors: &[(i32, String)],
    max_attempts: i16,
) -> Result<u64, sqlx::Error> {
    // Whether an attempt was the last is decided in the statement, from
    // the row's own count: a copy read at claim time could be stale.
    let (seqs, texts): (Vec<i32>, Vec<&str>) =
        errors.iter().map(|(seq, e)| (*seq, e.as_str())).unzip();
    if seqs.is_empty() {
        return Ok(0);
    }
    let failed: i64 = sqlx::query_scalar(
        "WITH noted AS ( \
             UPDATE deliveries d \
             SET attempts = d.attempts + 1, updated_at = now(), \
                 last_error = CASE WHEN d.attempts + 1 >= $7 \
                     THEN 'gave up after ' || (d.attempts + 1) || ' attempts: ' || new.value \
                     ELSE new.value END, \
                 status = CASE WHEN d.attempts + 1 >= $7 THEN 'failed' ELSE 'queued' END \
             FROM UNNEST($5::int[], $6::text[]) AS new (seq, value) \
             WHERE d.issue_id = $1 AND d.seq = new.seq AND d.seq BETWEEN $2 AND $3 \
               AND d.status = 'queued' \
               AND EXISTS ( \
                   SELECT 1 FROM delivery_batches b \
                   WHERE b.issue_id = $1 AND b.first_seq = $2 AND b.claim_id = $4) \
             RETURNING d.status \
         ), counted AS ( \
             UPDATE newsletter_issues \
             SET failed = failed + (SELECT count(*) FROM noted WHERE status = 'failed') \
             WHERE id = $1 AND (SELECT count(*) FROM noted WHERE status = 'failed') > 0 \
         ) \
         SELECT count(*) FROM noted WHERE status = 'failed'",
    )
    .bind(batch.issue_id)
    .bind(batch.first_seq)
    .bind(batch.last_seq)
    .bind(batch.claim_id)
    .bind(&seqs)
    .bind(&texts)
    .bind(max_attempts)
    .fetch_one(conn)
    .await?;
    Ok(failed as u64)
}

/// Lets go of a held batch: it is done once none of its deliveries is
/// queued; otherwise those are tried again after `retry_in`.
/// `failed_attempt` says the batch's last try failed, which counts towards
/// its backoff; anything else (sent, throttled, shutting down) resets the
/// count. When the issue was cancelled, what the batch leaves queued is
/// skipped instead. Finishes the issue once nothing is left.
///
/// Two statements in a transaction, on purpose: the first waits for any
/// cancel or requeue of the issue in progress (they hold the issue's row
/// lock, which conflicts with `FOR KEY SHARE`); the second then starts from
/// a snapshot taken after it, and so sees their outcome. In one statement
/// the snapshot would predate the wait, and a batch reopened by a requeue
/// could be closed over its queued deliveries.
pub async fn release_batch(
    conn: &mut PgConnection,
    batch: BatchKey,
    retry_in: Duration,
    failed_attempt: bool,
) -> Result<(), sqlx::Error> {
    let mut transaction = conn.begin().await?;
    let state: Option<IssueState> =
        sqlx::query_scalar("SELECT state FROM newsletter_issues WHERE id = $1 FOR KEY SHARE")
            .bind(batch.issue_id)
            .fetch_optional(&mut *transaction)
            .await?;
    let cancelled = state == Some(IssueState::Cancelled);
    sqlx::query(
        "WITH cancelled AS ( \
             UPDATE deliveries d \
             SET status = 'skipped', last_error = 'the issue was cancelled', updated_at = now() \
             WHERE $7 AND d.issue_id = $1 AND d.seq BETWEEN $2 AND $3 AND d.status = 'queued' \
               AND EXISTS ( \
                   SELECT 1 FROM delivery_batches b \
                   WHERE b.issue_id = $1 AND b.first_seq = $2 AND b.claim_id = $4) \
             RETURNING 1 \
         ), counted AS ( \
             UPDATE newsletter_issues SET skipped = skipped + (SELECT count(*) FROM cancelled) \
             WHERE id = $1 AND (SELECT count(*) FROM cancelled) > 0 \
         ) \
         UPDATE delivery_batches b \
         SET claim_id = NULL, claimed_until = NULL, \
             done = $7 OR NOT EXISTS ( \
                 SELECT 1 FROM deliveries d \
                 WHERE d.issue_id = $1 AND d.seq BETWEEN $2 AND $3 AND d.status = 'queued'), \
             attempts = CASE WHEN $6 THEN b.attempts + 1 ELSE 0 END, \
             next_attempt_at = now() + make_interval(secs => $5) \
         WHERE b.issue_id = $1 AND b.first_seq = $2 AND b.claim_id = $4",
    )
    .bind(batch.issue_id)
    .bind(batch.first_seq)
    .bind(batch.last_seq)
    .bind(batch.claim_id)
    .bind(retry_in.as_secs_f64())
    .bind(failed_attempt)
    .bind(cancelled)
    .execute(&mut *transaction)
    .await?;
    finish_issue_if_settled(&mut transaction, batch.issue_id).await?;
    transaction.commit().await
}

/// One issue's delivery to the subscriber, from the ledger.
#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub issue_id: Uuid,
    /// None if the issue itself is gone (the ledger has no foreign key).
    #[serde(rename = "issue_title")]
    pub title: Option<String>,
    pub status: String,
    pub attempts: i16,
    pub message_id: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A subscriber's deliveries, latest issue first, at most `limit`.
///
/// The ledger gains a row per recipient per issue and is found here by
/// subscriber, which `deliveries_subscriber_id_idx` makes a lookup rather
/// than a scan of every issue's audience.
pub async fn deliveries(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.issue_id, i.title, d.status, d.attempts, d.message_id, d.last_error, \
                d.updated_at \
         FROM deliveries d LEFT JOIN newsletter_issues i ON i.id = d.issue_id \
         WHERE d.subscriber_id = $1 \
         ORDER BY i.send_at DESC NULLS LAST, d.issue_id \
         LIMIT $2",
    )
    .bind(subscriber_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn delivery_count(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .fetch_one(conn)
        .await
}
