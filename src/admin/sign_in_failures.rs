//! Failed sign-ins, counted: one row per fixed window and account (the
//! admin's username, or one bucket for every username that names no
//! account), upserted on each failure. A flood of guesses, or of random
//! usernames, grows a counter; the audit log gets one row per window and
//! bucket, the first, so it stays readable; the dashboard shows the counts.
//!
//! What was typed as an unknown username is never kept: it may be anyone's
//! address, and this is admin data.

use std::net::IpAddr;

use sqlx::PgConnection;

/// The length of a counting window, in seconds.
pub const WINDOW_SECONDS: i64 = 15 * 60;

/// How long counts are kept.
const KEPT_DAYS: i64 = 90;

/// The bucket of every username that names no account.
const UNKNOWN: &str = "";

/// Counts one failed sign-in on `account` (None: a username that names no
/// account) from `ip`. Returns whether it is the first of its window and
/// bucket, which the caller records in the audit log.
pub async fn count(
    conn: &mut PgConnection,
    account: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<bool, sqlx::Error> {
    // `xmax = 0` holds for a row this statement inserted, not for one it
    // updated: one statement both counts and says whether it was the first.
    let first: bool = sqlx::query_scalar(
        "INSERT INTO sign_in_failures (window_start, account, failures, last_at, last_client_ip) \
         VALUES (to_timestamp(floor(extract(epoch FROM now()) / $1) * $1), $2, 1, now(), $3::inet) \
         ON CONFLICT (window_start, account) DO UPDATE \
         SET failures = sign_in_failures.failures + 1, last_at = now(), \
             last_client_ip = EXCLUDED.last_client_ip \
         RETURNING xmax = 0",
    )
    .bind(WINDOW_SECONDS as f64)
    .bind(account.unwrap_or(UNKNOWN))
    .bind(ip.map(|ip| ip.to_string()))
    .fetch_one(&mut *conn)
    .await?;
    if first {
        // A new window starts rarely (once per bucket per window): a good
        // moment to forget old ones, without a job of its own.
        sqlx::query(
            "DELETE FROM sign_in_failures WHERE window_start < now() - make_interval(days => $1)",
        )
        .bind(KEPT_DAYS as i32)
        .execute(&mut *conn)
        .await?;
    }
    Ok(first)
}

/// One bucket's failures over the last day, as the dashboard shows them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recent {
    /// The admin's username; None for usernames that name no account.
    pub account: Option<String>,
    pub failures: i64,
    pub last_at: chrono::DateTime<chrono::Utc>,
    /// The address of the latest failure (`host(last_client_ip)`).
    pub last_client_ip: Option<String>,
}

/// Failures of the last 24 hours per bucket, the most first; with each,
/// when and from where the latest came.
pub async fn last_day(conn: &mut PgConnection) -> Result<Vec<Recent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT NULLIF(account, '') AS account, failures, last_at, \
                host(last_client_ip) AS last_client_ip \
         FROM ( \
             SELECT DISTINCT ON (account) account, \
                    sum(failures) OVER (PARTITION BY account)::bigint AS failures, \
                    last_at, last_client_ip \
             FROM sign_in_failures \
             WHERE window_start > now() - interval '1 day' \
             ORDER BY account, last_at DESC \
         ) AS latest \
         ORDER BY failures DESC, account",
    )
    .fetch_all(conn)
    .await
}
