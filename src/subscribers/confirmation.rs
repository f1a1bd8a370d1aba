//! A confirmation link's token: looking it up by its hash, and using it to
//! confirm its subscriber.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::SubscriptionToken;
use crate::outgoing_webhooks::events::{self as outgoing, Event};
use crate::subscribers::{memberships, record};

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

/// Marks the subscriber confirmed and the token used, and confirms the
/// lists the token was issued for. The confirmation time is consent
/// evidence: it is set by the first confirmation and kept when a second
/// link of the same sign-up is opened, while someone who had unsubscribed
/// and comes back gives consent anew, so theirs is now, and they are no
/// longer unsubscribed. Returns the lists it confirmed, or `None` when the
/// token was used or deleted since it was read: nothing is changed then.
#[tracing::instrument(name = "Mark the subscriber as confirmed", level = "debug", skip_all)]
pub async fn mark_confirmed(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    token: &SubscriptionToken,
) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
    // The token first, and only if it is still unused: it is locked from
    // here to the commit, and an unsubscribe, which deletes the tokens
    // before it changes the subscriber, takes the locks in the same order.
    // Whichever commits first, the later action stands.
    let used: Option<Option<Vec<Uuid>>> = sqlx::query_scalar(
        "UPDATE confirmation_tokens SET used_at = now() \
         WHERE token_hash = $1 AND used_at IS NULL \
         RETURNING list_ids",
    )
    .bind(token.hash())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(list_ids) = used else {
        return Ok(None);
    };
    // The lists the link was sent for, and no other: a list someone added
    // later under the same address waits for its own link. A link from the
    // release before links named their lists (`NULL`) confirms every list
    // the reader is pending on, as it promised when it was sent.
    let confirmed =
        memberships::confirm_pending(&mut *connection, subscriber_id, list_ids.as_deref()).await?;
    // The trigger kept for the release without lists would confirm every
    // pending list as the status turns to confirmed: told that this
    // transaction confirms its lists itself, it leaves them alone (see the
    // migration that ties confirmations to lists).
    sqlx::query("SELECT set_config('newsletter.lists_confirmed_by_app', 'on', true)")
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE subscriptions \
         SET status = 'confirmed', \
             confirmed_at = CASE WHEN status = 'unsubscribed' THEN now() \
                                 ELSE COALESCE(confirmed_at, now()) END, \
             unsubscribed_at = NULL \
         WHERE id = $1",
    )
    .bind(subscriber_id)
    .execute(&mut *connection)
    .await?;
    outgoing::emit(
        connection,
        &[Event::subscriber_confirmed(subscriber_id, &confirmed)],
        record::event_data,
    )
    .await?;
    Ok(Some(confirmed))
}
