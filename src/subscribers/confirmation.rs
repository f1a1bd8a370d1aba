//! A confirmation link's token: looking it up by its hash, and using it to
//! confirm its subscriber.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::SubscriptionToken;
use crate::subscribers::memberships;

/// A confirmation token as stored, with its subscriber's status.
pub struct TokenRecord {
    pub subscriber_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub subscriber_status: String,
}

#[tracing::instrument(name = "Look up the confirmation token", level = "debug", skip_all)]
pub async fn find_token(
    connection: &mut PgConnection,
    token: &SubscriptionToken,
) -> Result<Option<TokenRecord>, sqlx::Error> {
    sqlx::query_as!(
        TokenRecord,
        r#"
        SELECT t.subscriber_id, t.expires_at, t.used_at, s.status AS subscriber_status
        FROM confirmation_tokens t
        JOIN subscriptions s ON s.id = t.subscriber_id
        WHERE t.token_hash = $1
        "#,
        token.hash()
    )
    .fetch_optional(connection)
    .await
}

/// Marks the subscriber confirmed and the token used. The confirmation
/// time is consent evidence: it is set by the first confirmation and kept
/// when a second link of the same sign-up is opened, while someone who had
/// unsubscribed and comes back gives consent anew, so theirs is now, and
/// they are no longer unsubscribed. `false` when the token was used or
/// deleted since it was read: nothing is changed then.
#[tracing::instrument(name = "Mark the subscriber as confirmed", level = "debug", skip_all)]
pub async fn mark_confirmed(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    token: &SubscriptionToken,
) -> Result<bool, sqlx::Error> {
    // The token first, and only if it is still unused: it is locked from
    // here to the commit, and an unsubscribe, which deletes the tokens
    // before it changes the subscriber, takes the locks in the same order.
    // Whichever commits first, the later action stands.
    let used = sqlx::query(
        "UPDATE confirmation_tokens SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL",
    )
    .bind(token.hash())
    .execute(&mut *connection)
    .await?;
    if used.rows_affected() == 0 {
        return Ok(false);
    }
    // Every list the reader chose with this sign-up (or is still pending
    // on from an earlier one): one confirmation confirms them all.
    memberships::confirm_pending(&mut *connection, subscriber_id).await?;
    sqlx::query(
        "UPDATE subscriptions \
         SET status = 'confirmed', \
             confirmed_at = CASE WHEN status = 'unsubscribed' THEN now() \
                                 ELSE COALESCE(confirmed_at, now()) END, \
             unsubscribed_at = NULL \
         WHERE id = $1",
    )
    .bind(subscriber_id)
    .execute(connection)
    .await?;
    Ok(true)
}
