//! The counts the dashboard shows: subscribers by status, and sign-ups and
//! confirmations per day.

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
        "SELECT status, count(*) FROM subscriptions GROUP BY status ORDER BY status",
    )
    .fetch_all(&mut *connection)
    .await?;
    let first_day = Utc::now().date_naive() - Duration::days(days - 1);
    // Days in UTC. Both counts read through the indexes on
    // subscribed_at and confirmed_at, whatever the size of the list.
    let per_day: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "WITH days AS ( \
             SELECT generate_series($1::date, (now() AT TIME ZONE 'UTC')::date, '1 day')::date AS day \
         ), sign_ups AS ( \
             SELECT (subscribed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n \
             FROM subscriptions WHERE subscribed_at >= $1::date::timestamp AT TIME ZONE 'UTC' \
             GROUP BY 1 \
         ), confirmations AS ( \
             SELECT (confirmed_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n \
             FROM subscriptions WHERE confirmed_at >= $1::date::timestamp AT TIME ZONE 'UTC' \
             GROUP BY 1 \
         ) \
         SELECT days.day, coalesce(sign_ups.n, 0), coalesce(confirmations.n, 0) \
         FROM days \
         LEFT JOIN sign_ups USING (day) \
         LEFT JOIN confirmations USING (day) \
         ORDER BY days.day",
    )
    .bind(first_day)
    .fetch_all(&mut *connection)
    .await?;
    let (recent_sign_ups, recent_confirmed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'confirmed') \
         FROM subscriptions WHERE subscribed_at >= $1::date::timestamp AT TIME ZONE 'UTC'",
    )
    .bind(first_day)
    .fetch_one(&mut *connection)
    .await?;
    Ok(Figures {
        by_status,
        days: per_day
            .into_iter()
            .map(|(day, sign_ups, confirmations)| DayCounts {
                day,
                sign_ups,
                confirmations,
            })
            .collect(),
        recent_sign_ups,
        recent_confirmed,
    })
}
