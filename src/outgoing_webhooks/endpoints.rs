//! The endpoints an admin registered: the one owner of `webhook_endpoints`.
//! An endpoint is enabled until an admin disables it, or until it kept
//! failing for longer than `outgoing_webhooks.disable_after_hours`
//! ([`super::deliveries`] decides that, as it records each failure).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::events::EventType;
use crate::domain::UnwantedCharacter;

/// An endpoint as stored. Its secret is read only to sign calls
/// ([`super::deliveries::claim_due`]), never for a page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, description, events, enabled, disabled_at, disabled_reason, \
                       failing_since, created_by, created_at";

/// What a new endpoint is made of, every field parsed already.
pub struct NewEndpoint<'a> {
    pub url: &'a str,
    pub description: &'a str,
    pub events: &'a [EventType],
    /// The secret as its owner will be shown it (`whsec_…`).
    pub secret: &'a str,
    pub created_by: &'a str,
}

fn names(events: &[EventType]) -> Vec<&'static str> {
    events.iter().map(|e| e.as_str()).collect()
}

pub async fn create(
    conn: &mut PgConnection,
    endpoint: &NewEndpoint<'_>,
) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints (id, url, description, events, secret, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(endpoint.url)
    .bind(endpoint.description)
    .bind(names(endpoint.events))
    .bind(endpoint.secret)
    .bind(endpoint.created_by)
    .fetch_one(conn)
    .await
}

/// Every endpoint, newest first: an admin registers a handful.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at DESC, id"
    )))
    .fetch_all(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What a change to an endpoint sets, every field parsed already; `None`
/// keeps the field as it is.
#[derive(Default)]
pub struct EndpointChange<'a> {
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub events: Option<&'a [EventType]>,
}

impl EndpointChange<'_> {
    pub fn is_empty(&self) -> bool {
        self.url.is_none() && self.description.is_none() && self.events.is_none()
    }

    /// How the change is written in the audit log: the endpoint by id and
    /// URL (as it is now), and what was set, a URL as "old -> new" so that
    /// the log still tells where calls went before; never its secret.
    pub fn audit_detail(&self, updated: &Updated) -> String {
        let endpoint = &updated.endpoint;
        let mut set = Vec::new();
        if self.url.is_some() {
            set.push(format!("url {} -> {}", updated.previous_url, endpoint.url));
        }
        if let Some(events) = self.events {
            set.push(format!("events {}", names(events).join(", ")));
        }
        if self.description.is_some() {
            set.push("description".to_owned());
        }
        format!(
            "endpoint {} ({}): set {}",
            endpoint.id,
            endpoint.url,
            set.join("; ")
        )
    }
}

/// An endpoint as a change left it, with the URL it had before, for the
/// audit log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Updated {
    #[sqlx(flatten)]
    pub endpoint: Endpoint,
    pub previous_url: String,
}

/// Changes the endpoint from now on; `None` when it does not exist.
/// Deliveries queued already keep their payload, and go to the URL the
/// endpoint has when they are claimed; the secret stays.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    change: &EndpointChange<'_>,
) -> Result<Option<Updated>, sqlx::Error> {
    // The row is locked as it is read, so the URL before is the one this
    // change replaced, whatever else changes it at the same time.
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH previous AS ( \
             SELECT id AS previous_id, url AS previous_url FROM webhook_endpoints \
             WHERE id = $1 FOR UPDATE \
         ) \
         UPDATE webhook_endpoints \
         SET url = COALESCE($2, url), description = COALESCE($3, description), \
             events = COALESCE($4, events) \
         FROM previous WHERE id = previous_id RETURNING {COLUMNS}, previous_url"
    )))
    .bind(id)
    .bind(change.url)
    .bind(change.description)
    .bind(change.events.map(names))
    .fetch_optional(conn)
    .await
}

/// An endpoint's description, as the admin's form and the API take it:
/// up to 200 characters, for the admin's own use, with no control or
/// format characters.
pub fn parse_description(raw: &str) -> Result<&str, String> {
    if raw.chars().count() > 200 {
        return Err("The description is longer than 200 characters.".into());
    }
    if let Some(unwanted) = UnwantedCharacter::find_in(raw) {
        return Err(format!("The description holds {unwanted}: remove it."));
    }
    Ok(raw)
}

/// Enables the endpoint again, its failures forgotten. Returns whether it
/// was disabled: enabling an enabled endpoint changes nothing, as
/// disabling a disabled one. The caller makes what it still has pending
/// due ([`super::deliveries::resume_endpoint`]).
pub async fn enable(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints \
         SET enabled = true, disabled_at = NULL, disabled_reason = NULL, failing_since = NULL \
         WHERE id = $1 AND NOT enabled",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An admin disables the endpoint. Returns whether it was enabled; the
/// caller then puts what it has pending out of the workers' way until it
/// is enabled again ([`super::deliveries::park_endpoint`]).
pub async fn disable(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints \
         SET enabled = false, disabled_at = now(), failing_since = NULL, \
             disabled_reason = 'Disabled by an admin.' \
         WHERE id = $1 AND enabled",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the endpoint and its deliveries. Returns whether it existed.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The endpoints the service disabled because they kept failing, for the
/// dashboard's notice. An admin's own disabling is not news to them.
pub async fn disabled_for_failing(conn: &mut PgConnection) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints \
         WHERE NOT enabled AND failing_since IS NOT NULL ORDER BY disabled_at DESC"
    )))
    .fetch_all(conn)
    .await
}

/// The endpoint answered: its run of failures, if any, is over.
pub async fn note_success(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_endpoints SET failing_since = NULL \
         WHERE id = $1 AND failing_since IS NOT NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The endpoint failed a delivery: its run of failures starts now unless
/// it started earlier, and once it is older than `disable_after` the
/// endpoint is disabled, with the reason. Returns whether this failure
/// disabled it (its pending deliveries are then the caller's to park).
pub async fn note_failure(
    conn: &mut PgConnection,
    id: Uuid,
    disable_after: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let hours = disable_after.as_secs_f64() / 3600.0;
    let reason = format!(
        "Every delivery failed for {} hours, so the service disabled it.",
        (hours * 10.0).round() / 10.0
    );
    let disabled: Option<bool> = sqlx::query_scalar(
        "UPDATE webhook_endpoints \
         SET failing_since = CASE WHEN enabled THEN COALESCE(failing_since, now()) \
                                  ELSE failing_since END, \
             enabled = enabled \
                 AND COALESCE(failing_since, now()) > now() - make_interval(secs => $2), \
             disabled_at = CASE \
                 WHEN enabled AND COALESCE(failing_since, now()) <= now() - make_interval(secs => $2) \
                 THEN now() ELSE disabled_at END, \
             disabled_reason = CASE \
                 WHEN enabled AND COALESCE(failing_since, now()) <= now() - make_interval(secs => $2) \
                 THEN $3 ELSE disabled_reason END \
         WHERE id = $1 \
         RETURNING disabled_at = now() AND NOT enabled",
    )
    .bind(id)
    .bind(disable_after.as_secs_f64())
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(disabled == Some(true))
}
