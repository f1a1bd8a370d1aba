//! The deliveries of outgoing webhooks: the one owner of
//! `webhook_deliveries`. One row per endpoint and event, queued by
//! [`super::events::emit`], claimed by the webhook source's workers under a
//! lease, and settled under that claim: a worker whose lease lapsed and was
//! taken over finds that its late writes match no row.
//!
//! Every state change is one statement (or one short transaction), so a
//! worker killed between two leaves a row that another worker picks up once
//! the lease lapses: delivery is at least once, and the event id tells a
//! receiver what it has seen before.
//!
//! Erasure has no function here: when a subscriber's row is deleted, by
//! whichever release or job, a trigger on `subscriptions` takes their
//! address and name out of every payload about them, sent or not
//! (migration `20270119090001_forget_deleted_subscribers_in_webhook_payloads`).
//! At least once yields to erasure there: a delivery still to go is sent
//! without them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::endpoints;
use super::events::CHANNEL;

/// A delivery a worker holds, with what it takes to make the call. Its
/// Debug leaves the secret out, so that no log line can hold it.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub claim_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub payload: String,
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("claim_id", &self.claim_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .field("payload", &self.payload)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Why a delivery whose every attempt ended with its worker gone was given
/// up: no outcome of the last call was recorded.
pub const GAVE_UP_AFTER_LOST_CALLS: &str =
    "given up: every attempt was made, the last with no outcome recorded";

/// Claims up to `batch` due deliveries of enabled endpoints for `lease`,
/// counting the attempt.
///
/// An attempt is a call made, and the claim counts it before the call
/// because only then does a worker that dies mid-call still count: the
/// receiver may well have had the call, and an endpoint whose calls hang
/// until the worker is killed (out of memory, a deploy's timeout) must
/// still use up its attempts. For the same reason a claimed row is due
/// again only after the wait that attempt would earn by failing
/// (`retry_delays`, the schedule, the longest wait once past its end), or
/// the lease if that is longer: a worker killed mid-call backs the
/// endpoint off as a failed call does. A worker that lives records the
/// outcome, which sets the next attempt itself, or hands back the calls it
/// did not make ([`release`]), uncounted.
///
/// A due row that has had every attempt the schedule allows (one more than
/// its delays) and still carries the lease of its last claim is marked
/// failed here instead of claimed again: only a worker killed during its
/// last call leaves such a row, and an endpoint that gets workers killed on
/// every call would otherwise be called for ever, each lapsed lease making
/// room for one more attempt. An admin's [`retry`] clears the lease, so the
/// one more attempt it asks for is still made.
pub async fn claim_due(
    conn: &mut PgConnection,
    lease: Duration,
    batch: i64,
    retry_delays: &[f64],
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS ( \
             SELECT d.id, d.leased_until IS NOT NULL \
                   AND d.attempts >= cardinality($4::float8[]) + 1 AS spent \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled \
             WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
             ORDER BY d.next_attempt_at \
             LIMIT $2 \
             FOR UPDATE OF d SKIP LOCKED \
         ), given_up AS ( \
             UPDATE webhook_deliveries d \
             SET status = 'failed', claim_id = NULL, leased_until = NULL, \
                 last_error = $5 \
             FROM due WHERE d.id = due.id AND due.spent \
         ) \
         UPDATE webhook_deliveries d \
         SET claim_id = $3, attempts = d.attempts + 1, last_attempt_at = now(), \
             leased_until = now() + make_interval(secs => $1), \
             next_attempt_at = now() + make_interval(secs => GREATEST($1, COALESCE( \
                 ($4::float8[])[d.attempts + 1], ($4::float8[])[cardinality($4::float8[])], 0))) \
         FROM due, webhook_endpoints e \
         WHERE d.id = due.id AND NOT due.spent AND e.id = d.endpoint_id \
         RETURNING d.id, d.claim_id, d.endpoint_id, d.event_id, d.attempts, \
                   d.payload::text AS payload, e.url, e.secret",
    )
    .bind(lease.as_secs_f64())
    .bind(batch)
    .bind(Uuid::new_v4())
    .bind(retry_delays)
    .bind(GAVE_UP_AFTER_LOST_CALLS)
    .fetch_all(conn)
    .await
}

/// A delivery as its claim names it.
pub type Held = (Uuid, Uuid);

/// The receiver took it (a 2xx). Returns whether the claim still held.
pub async fn mark_delivered(
    conn: &mut PgConnection,
    (id, claim): Held,
    endpoint_id: Uuid,
    code: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let mut transaction = conn.begin().await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries \
         SET status = 'delivered', delivered_at = now(), leased_until = NULL, \
             last_code = $3, last_error = NULL \
         WHERE id = $1 AND claim_id = $2 AND status = 'pending'",
    )
    .bind(id)
    .bind(claim)
    .bind(code)
    .execute(&mut *transaction)
    .await?;
    endpoints::note_success(&mut transaction, endpoint_id).await?;
    transaction.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Goes again after the delay.
    Retried,
    /// No attempt is left: kept as failed.
    GaveUp,
    /// The claim had lapsed: another worker's outcome stands.
    Lost,
}

/// The attempt failed with `error` (a fixed text of ours) and `code` (the
/// receiver's status, if it answered): the delivery goes again after
/// `retry_in`, or, with `None`, is kept as failed. While the endpoint is
/// disabled (an admin disabled it during the call) the delivery stays
/// parked instead, to go once it is enabled again. The endpoint's run of
/// failures grows either way, and may disable it ([`endpoints::note_failure`]).
pub async fn mark_failed_attempt(
    conn: &mut PgConnection,
    (id, claim): Held,
    endpoint_id: Uuid,
    failure: (Option<i32>, &str),
    retry_in: Option<Duration>,
    disable_after: Duration,
) -> Result<Failed, sqlx::Error> {
    let (code, error) = failure;
    let mut transaction = conn.begin().await?;
    let done = sqlx::query(
        "UPDATE webhook_deliveries d \
         SET status = CASE WHEN $5::float8 IS NULL THEN 'failed' ELSE 'pending' END, \
             next_attempt_at = CASE WHEN e.enabled \
                 THEN now() + make_interval(secs => COALESCE($5, 0)) ELSE 'infinity' END, \
             leased_until = NULL, last_code = $3, last_error = $4 \
         FROM webhook_endpoints e \
         WHERE d.id = $1 AND d.claim_id = $2 AND d.status = 'pending' \
           AND e.id = d.endpoint_id",
    )
    .bind(id)
    .bind(claim)
    .bind(code)
    .bind(error)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .execute(&mut *transaction)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(Failed::Lost);
    }
    if endpoints::note_failure(&mut transaction, endpoint_id, disable_after).await? {
        park_endpoint(&mut transaction, endpoint_id).await?;
    }
    transaction.commit().await?;
    Ok(if retry_in.is_some() {
        Failed::Retried
    } else {
        Failed::GaveUp
    })
}

/// Hands claimed deliveries back untouched, due now, without counting the
/// attempt that never happened: on shutdown, and for the calls of a batch
/// that ran out of claim time before they started. A delivery of an
/// endpoint disabled meanwhile stays parked.
pub async fn release(conn: &mut PgConnection, held: &[Held]) -> Result<u64, sqlx::Error> {
    let (ids, claims): (Vec<Uuid>, Vec<Uuid>) = held.iter().copied().unzip();
    let done = sqlx::query(
        "UPDATE webhook_deliveries d \
         SET leased_until = NULL, attempts = d.attempts - 1, \
             next_attempt_at = CASE WHEN e.enabled THEN now() ELSE 'infinity' END \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS held (id, claim_id), webhook_endpoints e \
         WHERE d.id = held.id AND d.claim_id = held.claim_id AND d.status = 'pending' \
           AND e.id = d.endpoint_id",
    )
    .bind(&ids)
    .bind(&claims)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Sends a delivery of the endpoint again, whatever became of it, as soon
/// as a worker is free (or once the endpoint is enabled again). Returns
/// whether it exists; the workers are notified at commit.
pub async fn retry(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done: Option<bool> = sqlx::query_scalar(
        "WITH retried AS ( \
             UPDATE webhook_deliveries d \
             SET status = 'pending', claim_id = NULL, leased_until = NULL, delivered_at = NULL, \
                 next_attempt_at = CASE WHEN e.enabled THEN now() ELSE 'infinity' END \
             FROM webhook_endpoints e \
             WHERE d.id = $2 AND d.endpoint_id = $1 AND e.id = d.endpoint_id \
             RETURNING 1 \
         ) \
         SELECT pg_notify($3, '') IS NOT NULL FROM retried",
    )
    .bind(endpoint_id)
    .bind(id)
    .bind(CHANNEL)
    .fetch_optional(conn)
    .await?;
    Ok(done.is_some())
}

/// Puts the endpoint's pending deliveries out of the workers' way while it
/// is disabled: the due index then holds only what can go.
pub async fn park_endpoint(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = 'infinity' \
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The endpoint is being enabled again: what it parked is due now, and so
/// is what a dead worker left claimed. Nothing happens while it is enabled
/// already. A call in flight keeps its claim: its row is due only once the
/// lease lapses, so that no second worker makes the same call meanwhile;
/// and a row waiting out a retry's wait keeps it.
pub async fn resume_endpoint(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH resumed AS ( \
             UPDATE webhook_deliveries \
             SET next_attempt_at = GREATEST(now(), COALESCE(leased_until, now())) \
             WHERE endpoint_id = $1 AND status = 'pending' \
               AND (next_attempt_at = 'infinity' OR leased_until < now()) \
               AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = $1 AND NOT e.enabled) \
             RETURNING 1 \
         ) \
         SELECT pg_notify($2, '') FROM (SELECT 1) AS one WHERE EXISTS (SELECT 1 FROM resumed)",
    )
    .bind(id)
    .bind(CHANNEL)
    .fetch_optional(conn)
    .await?;
    Ok(())
}

/// Deliveries not yet settled, for the metrics: (pending and free,
/// claimed by a worker now). Reads the pending rows alone (the partial
/// index `webhook_deliveries_due_idx`).
pub async fn depth(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE leased_until IS NULL OR leased_until < now()), \
                count(*) FILTER (WHERE leased_until >= now()) \
         FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_one(conn)
    .await
}

/// One delivery as the endpoint's page shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// `None` while the endpoint is disabled: parked, due at no moment.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The endpoint's latest `limit` deliveries, newest first.
pub async fn recent(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, event_type, status, attempts, last_code, last_error, created_at, \
                last_attempt_at, NULLIF(next_attempt_at, 'infinity') AS next_attempt_at, \
                delivered_at \
         FROM webhook_deliveries WHERE endpoint_id = $1 \
         ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(endpoint_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Retention: delivered and failed deliveries whose last attempt was
/// before `cutoff`, up to `limit` of them, oldest first (the partial index
/// `webhook_deliveries_finished_idx`). Returns how many were deleted.
pub async fn delete_finished(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE id IN ( \
             SELECT id FROM webhook_deliveries \
             WHERE status <> 'pending' AND last_attempt_at < $2 \
             ORDER BY last_attempt_at, id LIMIT $1 \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .bind(cutoff)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
