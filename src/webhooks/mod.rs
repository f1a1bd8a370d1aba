//! What the email provider tells the service after an email has left:
//! bounces, spam complaints, changes to its own suppression list, and
//! deliveries. [`postmark`] parses Postmark's records; [`apply`] acts on
//! one, in the caller's transaction:
//!
//! | record                                   | effect                                          |
//! |------------------------------------------|-------------------------------------------------|
//! | hard bounce (or any with `Inactive`)     | suppress (hard bounce); the delivery `bounced`  |
//! | unsubscribe reply (`Unsubscribe` bounce) | suppress (unsubscribed at the provider)         |
//! | soft bounce                              | one more in a row; suppress at the limit        |
//! | other bounce (auto-reply, challenge...)  | nothing                                         |
//! | spam complaint                           | suppress; the delivery `complained`; the guard  |
//! | subscription change, suppressed          | suppress, with Postmark's reason (an unknown    |
//! |                                          | one as unsubscribed at the provider)            |
//! | subscription change, reactivated         | lift, if the suppression is older               |
//! | delivery                                 | the soft bounces in a row start again           |
//!
//! Postmark delivers at least once and in no particular order, so each
//! record is remembered by its id in `webhook_records`, in the same
//! transaction as its effects: a repeat changes nothing. Suppressions
//! compare the provider's own time of the change, so a late record never
//! undoes a newer one.
//!
//! The complaint guard: an issue that is sending pauses itself, in the
//! complaint's transaction, once its complaints pass
//! `campaigns.complaint_limit_percent` of what it sent, counted from
//! `campaigns.complaint_min_sent` sent on. Complaints at that rate put the
//! sending domain's reputation at risk; an admin decides whether to go on.
//! Resuming is that decision: the guard then judges only what is sent and
//! complained about after it, on a new sample of the same size.

pub mod postmark;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::campaigns::ledger::{self, Report, Reported};
use crate::campaigns::{DeliveryId, IssueState};
use crate::configuration::{CampaignSettings, WebhookSettings};
use crate::keys::Keys;
use crate::metrics::WebhookRecord;
use crate::outgoing_webhooks::events::{self as outgoing, Event as HookEvent};
use crate::subscribers::record;
use crate::subscribers::suppression::{self, Reason};
use postmark::{Bounce, BounceKind, Complaint, Delivered, Event, Record, SubscriptionChange};

/// `webhook_records.source` for Postmark's records.
pub const POSTMARK: &str = "postmark";

/// The limits records are judged by.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Soft bounces in a row that suppress an address.
    pub soft_bounce_limit: i32,
    /// The complaint guard's rate, in percent of the messages sent...
    pub complaint_limit_percent: f64,
    /// ...from this many messages sent on.
    pub complaint_min_sent: i64,
}

impl Policy {
    pub fn new(webhooks: &WebhookSettings, campaigns: &CampaignSettings) -> Self {
        Self {
            soft_bounce_limit: webhooks.soft_bounce_limit,
            complaint_limit_percent: campaigns.complaint_limit_percent,
            complaint_min_sent: campaigns.complaint_min_sent,
        }
    }

    /// Why an issue must pause, if it must, given what it sent and had
    /// complaints about since the guard last started counting (see
    /// [`Reported`]).
    pub fn complaint_guard(&self, sent: i64, complained: i64) -> Option<String> {
        let rate = complained as f64 * 100.0 / sent.max(1) as f64;
        (sent >= self.complaint_min_sent && rate > self.complaint_limit_percent).then(|| {
            format!(
                "Paused by the complaint guard: {complained} spam complaints for {sent} emails \
                 sent ({rate:.2}%) since sending began or was last resumed after the guard, \
                 above the limit of {}% (judged from {} sent on). Resume only once you know \
                 why readers complain: the guard then counts afresh, and pauses again if the \
                 complaints over the next {} sent pass the limit.",
                self.complaint_limit_percent, self.complaint_min_sent, self.complaint_min_sent
            )
        })
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The first time this record arrived: its effects are in the
    /// transaction.
    Applied,
    /// Handled before: nothing changed.
    Repeat,
}

/// Remembers `record` and applies its effects, in the caller's
/// transaction; a record seen before changes nothing.
#[tracing::instrument(
    name = "Apply a webhook record",
    skip_all,
    fields(record_type = record.event.record_type(), record_id = %record.id)
)]
pub async fn apply(
    conn: &mut PgConnection,
    keys: &Keys,
    policy: &Policy,
    record: &Record,
) -> Result<Applied, sqlx::Error> {
    if !remember(conn, record).await? {
        return Ok(Applied::Repeat);
    }
    match &record.event {
        Event::Bounce(bounce) => bounced(conn, keys, policy, bounce).await?,
        Event::SpamComplaint(complaint) => complained(conn, keys, policy, complaint).await?,
        Event::SubscriptionChange(change) => subscription_changed(conn, keys, change).await?,
        Event::Delivery(delivered) => delivered_to(conn, keys, delivered).await?,
    }
    Ok(Applied::Applied)
}

/// What a handled record counts as in the metrics.
pub fn counted_as(event: &Event) -> WebhookRecord {
    match event {
        Event::Bounce(bounce) => match bounce.kind {
            BounceKind::Hard => WebhookRecord::hard_bounce,
            BounceKind::Soft => WebhookRecord::soft_bounce,
            BounceKind::Unsubscribe | BounceKind::Other => WebhookRecord::other_bounce,
        },
        Event::SpamComplaint(_) => WebhookRecord::spam_complaint,
        Event::SubscriptionChange(_) => WebhookRecord::subscription_change,
        Event::Delivery(_) => WebhookRecord::delivery,
    }
}

/// Takes the record's id; false when it was taken already. A concurrent
/// call with the same record waits here for the first one's transaction,
/// then finds the id taken.
async fn remember(conn: &mut PgConnection, record: &Record) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "INSERT INTO webhook_records (source, record_id, record_type) VALUES ($1, $2, $3) \
         ON CONFLICT (source, record_id) DO NOTHING",
    )
    .bind(POSTMARK)
    .bind(&record.id)
    .bind(record.event.record_type())
    .execute(conn)
    .await?;
    Ok(taken.rows_affected() == 1)
}

async fn bounced(
    conn: &mut PgConnection,
    keys: &Keys,
    policy: &Policy,
    bounce: &Bounce,
) -> Result<(), sqlx::Error> {
    let address = bounce.address.as_ref();
    let detail = match &bounce.detail {
        Some(detail) => format!("{}: {detail}", bounce.type_name),
        None => bounce.type_name.to_owned(),
    };
    match bounce.kind {
        BounceKind::Hard => {
            suppression::suppress(
                conn,
                keys,
                address,
                Reason::HardBounce,
                Some(&detail),
                bounce.bounced_at,
            )
            .await?;
            // The email did not arrive and never will: the ledger says so.
            // A soft bounce's email may still arrive (Postmark retries), so
            // its delivery stays sent.
            if let Some(delivery) = bounce.delivery {
                let why = format!("hard bounce: {detail}");
                report(conn, policy, delivery, Report::Bounced, &why).await?;
            }
        }
        BounceKind::Unsubscribe => {
            suppression::suppress(
                conn,
                keys,
                address,
                Reason::ProviderUnsubscribe,
                Some(&detail),
                bounce.bounced_at,
            )
            .await?;
        }
        BounceKind::Soft => {
            let in_a_row = soft_bounce(conn, keys, address, bounce.bounced_at).await?;
            if in_a_row >= policy.soft_bounce_limit {
                let detail = format!("{in_a_row} soft bounces in a row, the last: {detail}");
                suppression::suppress(
                    conn,
                    keys,
                    address,
                    Reason::SoftBounce,
                    Some(&detail),
                    bounce.bounced_at,
                )
                .await?;
                // Counting starts again should the address be reactivated.
                forget_soft_bounces(conn, keys, address, None).await?;
            }
        }
        BounceKind::Other => {}
    }
    let kind = match bounce.kind {
        BounceKind::Hard => Some("hard"),
        BounceKind::Soft => Some("soft"),
        BounceKind::Unsubscribe | BounceKind::Other => None,
    };
    if let Some(kind) = kind {
        let events = [HookEvent::subscriber_bounced(address, kind)];
        outgoing::emit(conn, &events, record::event_data).await?;
    }
    Ok(())
}

async fn complained(
    conn: &mut PgConnection,
    keys: &Keys,
    policy: &Policy,
    complaint: &Complaint,
) -> Result<(), sqlx::Error> {
    suppression::suppress(
        conn,
        keys,
        complaint.address.as_ref(),
        Reason::SpamComplaint,
        Some("The recipient marked an email as spam."),
        complaint.complained_at,
    )
    .await?;
    outgoing::emit(
        conn,
        &[HookEvent::subscriber_complained(complaint.address.as_ref())],
        record::event_data,
    )
    .await?;
    if let Some(delivery) = complaint.delivery {
        let why = "the recipient marked it as spam";
        report(conn, policy, delivery, Report::Complained, why).await?;
    }
    Ok(())
}

/// Moves the delivery to what was reported; after a complaint, pauses its
/// issue if the complaint guard says so, in the same transaction, so that
/// no complaint is counted without the guard having looked at it.
async fn report(
    conn: &mut PgConnection,
    policy: &Policy,
    delivery: DeliveryId,
    report: Report,
    why: &str,
) -> Result<(), sqlx::Error> {
    let Some(Reported {
        state,
        sent,
        complained,
    }) = ledger::report_delivery(conn, delivery, report, why).await?
    else {
        // Unknown, failed or skipped, or reported already: the address is
        // suppressed all the same, which is what matters for the next issue.
        tracing::info!(%delivery, ?report, "The reported delivery was not one to move, or was reported already");
        return Ok(());
    };
    if report != Report::Complained || state != IssueState::Sending {
        return Ok(());
    }
    if let Some(reason) = policy.complaint_guard(sent, complained)
        && ledger::pause_with_reason(conn, delivery.issue_id, &reason).await?
    {
        tracing::warn!(issue_id = %delivery.issue_id, sent, complained, "{reason}");
    }
    Ok(())
}

async fn subscription_changed(
    conn: &mut PgConnection,
    keys: &Keys,
    change: &SubscriptionChange,
) -> Result<(), sqlx::Error> {
    let address = change.address.as_ref();
    match change.suppressed {
        Some(reason) => {
            let detail = match &change.origin {
                Some(origin) => format!("Suppressed at Postmark (origin: {origin})."),
                None => "Suppressed at Postmark.".to_owned(),
            };
            suppression::suppress(
                conn,
                keys,
                address,
                reason,
                Some(&detail),
                change.changed_at,
            )
            .await?;
        }
        None => {
            // Only a suppression older than the reactivation is lifted: a
            // reactivation delivered late leaves a newer suppression be.
            if suppression::lift(conn, keys, address, change.changed_at).await? {
                forget_soft_bounces(conn, keys, address, None).await?;
            }
        }
    }
    Ok(())
}

async fn delivered_to(
    conn: &mut PgConnection,
    keys: &Keys,
    delivered: &Delivered,
) -> Result<(), sqlx::Error> {
    forget_soft_bounces(
        conn,
        keys,
        delivered.address.as_ref(),
        Some(delivered.delivered_at),
    )
    .await
}

/// Counts one more soft bounce in a row for `address`; returns how many
/// there are now.
async fn soft_bounce(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
    at: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO soft_bounces (address_hash, in_a_row, last_at) VALUES ($1, 1, $2) \
         ON CONFLICT (address_hash) DO UPDATE \
         SET in_a_row = soft_bounces.in_a_row + 1, \
             last_at = GREATEST(soft_bounces.last_at, EXCLUDED.last_at) \
         RETURNING in_a_row",
    )
    .bind(keys.address_hash(address))
    .bind(at)
    .fetch_one(conn)
    .await
}

/// Forgets the address's soft bounces in a row, for its erasure.
pub async fn erase_soft_bounces(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
) -> Result<(), sqlx::Error> {
    forget_soft_bounces(conn, keys, address, None).await
}

/// Ends the address's soft bounces in a row: all of them, or, for a
/// delivery at `before`, only if none came after it (a delivery reported
/// late does not wipe out the bounces that followed it).
async fn forget_soft_bounces(
    conn: &mut PgConnection,
    keys: &Keys,
    address: &str,
    before: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM soft_bounces \
         WHERE address_hash = $1 AND ($2::timestamptz IS NULL OR last_at <= $2)",
    )
    .bind(keys.address_hash(address))
    .bind(before)
    .execute(conn)
    .await?;
    Ok(())
}

/// Webhook record ids received before `cutoff`: only the provider's
/// retries need them, and those stop within days. The index is on
/// received_at alone, so there is no cursor to resume from; each batch
/// deletes the oldest, at most `limit`: the retention job's batch.
pub async fn forget_records(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
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
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            soft_bounce_limit: 3,
            complaint_limit_percent: 0.1,
            complaint_min_sent: 1000,
        }
    }

    #[test]
    fn the_complaint_guard_waits_for_its_sample_then_trips_above_the_limit() {
        for (sent, complained, trips) in [
            (999, 999, false),
            (1000, 1, false),
            (1000, 2, true),
            (10_000, 10, false),
            (10_000, 11, true),
            (0, 0, false),
        ] {
            assert_eq!(
                policy().complaint_guard(sent, complained).is_some(),
                trips,
                "{complained} complaints for {sent} sent"
            );
        }
    }

    #[test]
    fn the_complaint_guards_reason_gives_the_numbers() {
        let reason = policy().complaint_guard(1000, 2).unwrap();
        assert!(
            reason.contains("2 spam complaints for 1000 emails sent (0.20%)"),
            "{reason}"
        );
        assert!(reason.contains("limit of 0.1%"), "{reason}");
        assert!(reason.contains("over the next 1000 sent"), "{reason}");
    }
}
