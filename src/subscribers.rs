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

/// Who just left: what the button to come back fills in.
#[derive(Debug, Clone)]
pub struct Leaver {
    pub name: String,
    pub email: String,
}

/// Marks the subscriber unsubscribed (the time only the first time) and
/// deletes their confirmation tokens. `None` when no subscriber has the id:
/// they were erased, and there is nothing left to do. The tokens go first:
/// a confirmation locks its token before the subscriber, so the two take
/// their locks in one order and the later action stands. Call it in a
/// transaction, with `signups::history::remember_departure`: they go
/// together.
pub async fn unsubscribe(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<Leaver>, sqlx::Error> {
    sqlx::query("DELETE FROM confirmation_tokens WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
    let leaver: Option<(String, String)> = sqlx::query_as(
        "UPDATE subscriptions \
         SET status = 'unsubscribed', \
             unsubscribed_at = CASE WHEN status = 'unsubscribed' \
                                    THEN COALESCE(unsubscribed_at, now()) ELSE now() END \
         WHERE id = $1 \
         RETURNING name, email",
    )
    .bind(subscriber_id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(leaver.map(|(name, email)| Leaver { name, email }))
}
