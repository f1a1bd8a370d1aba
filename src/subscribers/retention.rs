//! What the retention job forgets of the subscriber tables: confirmation
//! tokens past their expiry, and sign-ups never confirmed. The job
//! ([`crate::retention`]) decides when and how far; each function here is
//! one of its batches, in the shape every batch has: `scanned` reads the
//! next `limit` keys of an index after the cursor without locking anything,
//! `picked` locks those still to be acted on and skips any a live
//! transaction holds, and the last step acts. Each answers as the
//! statement does: how many rows it acted on, how many keys it read, and
//! the last key read (both parts NULL when it read none).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;
/// Confirmation tokens that expired before `cutoff`, in the order they
/// expired, after the key `(at, key)`.
pub async fn expired_tokens(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Vec<u8>),
) -> Result<(i64, i64, Option<DateTime<Utc>>, Option<Vec<u8>>), sqlx::Error> {
    sqlx::query_as(
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
    .await
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
pub async fn unconfirmed_signups(
    conn: &mut PgConnection,
    limit: i64,
    cutoff: DateTime<Utc>,
    (at, key): (DateTime<Utc>, Uuid),
) -> Result<(i64, i64, Option<DateTime<Utc>>, Option<Uuid>), sqlx::Error> {
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
    Ok((deleted, scanned, last_at, last_id))
}
