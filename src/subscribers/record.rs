//! One subscriber: their row of `subscriptions` and their confirmation
//! tokens, as the public pages (their address, unsubscribing) and the
//! admin's pages (their record, its export, their erasure) need them. Reads
//! about their address take the address as stored, and compare it in lower
//! case, as sign-up does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::outgoing_webhooks::events::{self as outgoing, Event, Subject};

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
/// transaction, with `history::remember_departure`: they go
/// together.
pub async fn unsubscribe(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("DELETE FROM confirmation_tokens WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .execute(&mut *connection)
        .await?;
    // Every list too: the trigger that does the same is there for the
    // release before lists, and goes with it.
    sqlx::query(
        "UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = now() \
         WHERE subscriber_id = $1 AND status <> 'unsubscribed'",
    )
    .bind(subscriber_id)
    .execute(&mut *connection)
    .await?;
    let left: Option<(String, bool)> = sqlx::query_as(
        "WITH before AS (SELECT status FROM subscriptions WHERE id = $1 FOR UPDATE) \
         UPDATE subscriptions s \
         SET status = 'unsubscribed', \
             unsubscribed_at = CASE WHEN s.status = 'unsubscribed' \
                                    THEN COALESCE(s.unsubscribed_at, now()) ELSE now() END \
         FROM before \
         WHERE s.id = $1 \
         RETURNING s.email, before.status <> 'unsubscribed'",
    )
    .bind(subscriber_id)
    .fetch_optional(&mut *connection)
    .await?;
    // Once per departure: the one-click link pressed again, or a replayed
    // request, changes nothing and tells the endpoints nothing.
    if let Some((_, true)) = left {
        let events = [Event::subscriber_unsubscribed(subscriber_id)];
        outgoing::emit(connection, &events, event_data).await?;
    }
    Ok(left.map(|(address, _)| address))
}

/// The subscriber's own row.
#[derive(Debug, sqlx::FromRow)]
pub struct Subscriber {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub status: String,
    pub subscribed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

impl Subscriber {
    /// When they unsubscribed, if they are unsubscribed now (an older
    /// release did not record the time: now, then).
    pub fn left_at(&self) -> Option<DateTime<Utc>> {
        (self.status == "unsubscribed").then(|| self.unsubscribed_at.unwrap_or_else(Utc::now))
    }
}

const SUBSCRIBER_COLUMNS: &str =
    "id, email, name, status, subscribed_at, confirmed_at, unsubscribed_at";

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Subscriber>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBSCRIBER_COLUMNS} FROM subscriptions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Like [`find`], and holds the row until the transaction ends: a sign-up
/// again, a confirmation or an unsubscribe for this subscriber waits, so
/// what is decided from the row stays true until it is gone.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<Subscriber>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBSCRIBER_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// When a confirmation link was made, until when it worked, and when it was
/// used. The token's hash stays out: it is a credential, not data about the
/// person.
#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct TokenTimes {
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

pub async fn confirmation_tokens(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Vec<TokenTimes>, sqlx::Error> {
    sqlx::query_as(
        "SELECT created_at, expires_at, used_at FROM confirmation_tokens \
         WHERE subscriber_id = $1 ORDER BY created_at",
    )
    .bind(subscriber_id)
    .fetch_all(conn)
    .await
}

/// Locks the subscriber's confirmation tokens until the transaction ends.
/// Whatever changes both takes the tokens before the subscriber: a
/// confirmation locks its token, then the subscriber, and two transactions
/// must take their locks in one order or they deadlock.
pub async fn lock_tokens(conn: &mut PgConnection, subscriber_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1 FROM confirmation_tokens WHERE subscriber_id = $1 FOR UPDATE")
        .bind(subscriber_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the subscriber's row and their confirmation tokens (which refer
/// to it), for their erasure.
pub async fn delete(conn: &mut PgConnection, subscriber_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM confirmation_tokens WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(subscriber_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The subscribers with these ids or these (lower-case) addresses, as an
/// outgoing webhook's data: id, address, name, status, and their lists.
/// Read only when an endpoint asked for the event. Each row is share-locked
/// so that an erasure under way (which locks the row for update) is waited
/// for, and its subscriber then not found, rather than their address
/// written into a payload after the erasure cleared the others.
pub async fn event_data(
    conn: &mut PgConnection,
    ids: &[Uuid],
    addresses: &[String],
) -> Result<Vec<Subject>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.id, lower(s.email) AS address, \
                jsonb_build_object( \
                    'id', s.id, 'email', s.email, 'name', s.name, 'status', s.status, \
                    'lists', COALESCE(( \
                        SELECT jsonb_agg(jsonb_build_object( \
                                   'id', l.id, 'name', l.name, 'status', m.status) \
                               ORDER BY l.name) \
                        FROM memberships m JOIN lists l ON l.id = m.list_id \
                        WHERE m.subscriber_id = s.id), '[]'::jsonb)) AS data \
         FROM subscriptions s \
         WHERE s.id = ANY($1) OR lower(s.email) = ANY($2) \
         FOR KEY SHARE OF s",
    )
    .bind(ids)
    .bind(addresses)
    .fetch_all(conn)
    .await
}
