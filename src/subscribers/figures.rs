//! The counts the dashboard shows: subscribers by status, and sign-ups and
//! confirmations per day.
//!
//! None of them counts subscribers. Triggers on `subscriptions` keep two
//! ledgers as rows change (migration `count_subscribers_as_they_change`):
//! `subscriber_counts`, how many subscribers have a status and signed up
//! on a day, and `confirmation_counts`, how many confirmed on a day. Each
//! holds about a row per status and day of history, so the dashboard reads
//! the same few thousand rows at ten subscribers or ten million, and a
//! count read after a sign-up, a confirmation, an unsubscribe or an erasure
//! commits already has it: the ledger rows commit with the change.
//!
//! A ledger row is a delta, and a count is their sum. Per-list counts will
//! add a `list_id` to `subscriber_counts` (NULL for the whole list, which is
//! what these statements then read).

use std::collections::HashMap;

use chrono::{Duration, NaiveDate, Utc};
use sqlx::PgConnection;

/// The counts, read in one go so that they agree.
pub struct Figures {
    pub by_status: Vec<(String, i64)>,
    /// Oldest first, today last.
    pub days: Vec<DayCounts>,
    /// People who signed up in those days, and how many of them have
    /// confirmed since.
    pub recent_sign_ups: i64,
    pub recent_confirmed: i64,
}

/// Sign-ups and confirmations of one day (UTC).
pub struct DayCounts {
    pub day: NaiveDate,
    pub sign_ups: i64,
    pub confirmations: i64,
}

/// The figures over the last `days` days, today included.
pub async fn read(connection: &mut PgConnection, days: i64) -> Result<Figures, sqlx::Error> {
    let by_status: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, sum(n)::bigint FROM subscriber_counts \
         GROUP BY status HAVING sum(n) <> 0 ORDER BY status",
    )
    .fetch_all(&mut *connection)
    .await?;
    let today = Utc::now().date_naive();
    let first_day = today - Duration::days(days - 1);
    // Days in UTC, as the triggers record them. Days without a row count 0.
    let sign_ups: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT signed_up_on, sum(n)::bigint, \
                coalesce(sum(n) FILTER (WHERE status = 'confirmed'), 0)::bigint \
         FROM subscriber_counts WHERE signed_up_on >= $1 GROUP BY signed_up_on",
    )
    .bind(first_day)
    .fetch_all(&mut *connection)
    .await?;
    let confirmations: HashMap<NaiveDate, i64> = sqlx::query_as(
        "SELECT confirmed_on, sum(n)::bigint FROM confirmation_counts \
         WHERE confirmed_on >= $1 GROUP BY confirmed_on",
    )
    .bind(first_day)
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .collect();
    let recent_sign_ups = sign_ups.iter().map(|(_, n, _)| n).sum();
    let recent_confirmed = sign_ups.iter().map(|(_, _, confirmed)| confirmed).sum();
    let sign_ups: HashMap<NaiveDate, i64> =
        sign_ups.into_iter().map(|(day, n, _)| (day, n)).collect();
    Ok(Figures {
        by_status,
        days: first_day
            .iter_days()
            .take_while(|day| *day <= today)
            .map(|day| DayCounts {
                day,
                sign_ups: sign_ups.get(&day).copied().unwrap_or(0),
                confirmations: confirmations.get(&day).copied().unwrap_or(0),
            })
            .collect(),
        recent_sign_ups,
        recent_confirmed,
    })
}
