//! What is stored about one subscriber, read for their page and for their
//! export (the types the export serialises as they are: their field names
//! are what the person receives). Each read takes the subscriber's id; those about their address
//! take the address as stored, and compare it in lower case, as sign-up
//! does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// A subscriber id from an address. Anything that is not one names nobody.
pub fn parse_subscriber_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

/// Where a subscriber's page is.
pub fn subscriber_path(id: Uuid) -> String {
    format!("/admin/subscribers/{id}")
}

/// Where an issue's page is.
pub fn issue_path(id: Uuid) -> String {
    format!("/admin/newsletters/{id}")
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

/// One issue's delivery to the subscriber, from the ledger.
#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub issue_id: Uuid,
    /// None if the issue itself is gone (the ledger has no foreign key).
    #[serde(rename = "issue_title")]
    pub title: Option<String>,
    pub status: String,
    pub attempts: i16,
    pub message_id: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// The subscriber's deliveries, latest issue first, at most `limit`.
///
/// The ledger gains a row per recipient per issue and is found here by
/// subscriber, which `deliveries_subscriber_id_idx` makes a lookup rather
/// than a scan of every issue's audience.
pub async fn deliveries(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.issue_id, i.title, d.status, d.attempts, d.message_id, d.last_error, \
                d.updated_at \
         FROM deliveries d LEFT JOIN newsletter_issues i ON i.id = d.issue_id \
         WHERE d.subscriber_id = $1 \
         ORDER BY i.send_at DESC NULLS LAST, d.issue_id \
         LIMIT $2",
    )
    .bind(subscriber_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn delivery_count(
    conn: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE subscriber_id = $1")
        .bind(subscriber_id)
        .fetch_one(conn)
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

/// An email in the outbox addressed to the subscriber, without its bodies:
/// until it is sent they hold a live confirmation link.
#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct OutboxEmail {
    pub id: Uuid,
    pub subject: Option<String>,
    pub message_stream: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// The outbox has no index on the recipient: this reads it whole. It holds
/// one-off emails (confirmations, notices) until retention removes them,
/// and is read so for one subscriber at an admin's request, rarely.
pub async fn outbox_emails(
    conn: &mut PgConnection,
    address: &str,
) -> Result<Vec<OutboxEmail>, sqlx::Error> {
    sqlx::query_as(
        "SELECT o.id, COALESCE(o.subject, c.subject) AS subject, o.message_stream, o.status, \
                o.attempts, o.last_error, o.enqueued_at, o.sent_at, o.failed_at \
         FROM email_outbox o LEFT JOIN email_contents c ON c.id = o.content_id \
         WHERE lower(o.recipient) = lower($1) \
         ORDER BY o.enqueued_at",
    )
    .bind(address)
    .fetch_all(conn)
    .await
}
