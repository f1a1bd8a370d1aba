//! The subscriber store: statements on one subscriber's row of
//! `subscriptions` that the public pages need, so that their handlers hold
//! no SQL. Sign-ups write through `signups`, a campaign's audience is
//! recorded by `campaigns::ledger`, and the admin pages read the list
//! through `routes::admin::subscribers`; what several of them would
//! otherwise each write again belongs here.

use sqlx::PgConnection;
use uuid::Uuid;

/// The address of the subscriber with this id, as stored; `None` once
/// they were erased.
pub async fn address_of(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(subscriber_id)
        .fetch_optional(connection)
        .await
}

/// A subscriber's name and address, as stored.
#[derive(Debug, Clone)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

/// The name and address of the subscriber with this id, whatever their
/// status; `None` once they were erased. What signing up again from the
/// page after unsubscribing starts from: the page itself carries neither.
pub async fn contact_of(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<Contact>, sqlx::Error> {
    let contact: Option<(String, String)> =
        sqlx::query_as("SELECT name, email FROM subscriptions WHERE id = $1")
            .bind(subscriber_id)
            .fetch_optional(connection)
            .await?;
    Ok(contact.map(|(name, email)| Contact { name, email }))
}

/// Marks the subscriber unsubscribed (the time only the first time) and
/// deletes their confirmation tokens, and returns their address (as
/// stored). `None` when no subscriber has the id: they were erased, and
/// there is nothing left to do. The tokens go first:
/// a confirmation locks its token before the subscriber, so the two take
/// their locks in one order and the later action stands. Call it in a
/// transaction, with `signups::history::remember_departure`: they go
/// together.
pub async fn unsubscribe(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("DELETE FROM confirmation_tokens WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query_scalar(
        "UPDATE subscriptions \
         SET status = 'unsubscribed', \
             unsubscribed_at = CASE WHEN status = 'unsubscribed' \
                                    THEN COALESCE(unsubscribed_at, now()) ELSE now() END \
         WHERE id = $1 \
         RETURNING email",
    )
    .bind(subscriber_id)
    .fetch_optional(&mut *connection)
    .await
}
