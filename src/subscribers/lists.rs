//! The lists a reader can be on: the newsletters of one installation. One
//! list is the default, where a sign-up that names no list goes; a public
//! list is offered on the form, a private one is filled by the admin only;
//! an archived list takes no new readers and leaves the form.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::newsletters::Welcome;

/// A list as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct List {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub public: bool,
    pub double_opt_in: bool,
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
    /// Its welcome email's subject and Markdown body, both or neither
    /// ([`crate::newsletters::Welcome`] when written).
    pub welcome_subject: Option<String>,
    pub welcome_body: Option<String>,
}

const COLUMNS: &str = "id, name, description, public, double_opt_in, is_default, created_at, \
                       archived_at, welcome_subject, welcome_body";

/// Every list, the live ones first (the default list leading), then by name.
pub async fn all(connection: &mut PgConnection) -> Result<Vec<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM lists \
         ORDER BY archived_at IS NOT NULL, is_default DESC, lower(name), id"
    )))
    .fetch_all(connection)
    .await
}

/// The lists the public form offers: public and not archived, the default
/// list first.
pub async fn offered(connection: &mut PgConnection) -> Result<Vec<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM lists WHERE public AND archived_at IS NULL \
         ORDER BY is_default DESC, lower(name), id"
    )))
    .fetch_all(connection)
    .await
}

/// Of these ids, the ones the public form may sign someone up to.
pub async fn offered_among(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM lists WHERE id = ANY($1) AND public AND archived_at IS NULL")
        .bind(ids)
        .fetch_all(connection)
        .await
}

/// Of these ids, the lists that take readers (not archived), public or
/// not: what an admin may put a reader on.
pub async fn live_among(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM lists WHERE id = ANY($1) AND archived_at IS NULL")
        .bind(ids)
        .fetch_all(connection)
        .await
}

/// The names of these lists, by name.
pub async fn names(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM lists WHERE id = ANY($1) ORDER BY lower(name), id")
        .bind(ids)
        .fetch_all(connection)
        .await
}

pub async fn find(connection: &mut PgConnection, id: Uuid) -> Result<Option<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM lists WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// Like [`find`], and holds the row until the transaction ends: a change
/// made from what it read is not lost to another made meanwhile.
pub async fn find_for_update(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM lists WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// The list of this name, in any letter case (names are unique so).
pub async fn find_by_name(
    connection: &mut PgConnection,
    name: &str,
) -> Result<Option<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM lists WHERE lower(name) = lower($1)"
    )))
    .bind(name)
    .fetch_optional(connection)
    .await
}

/// What an admin sets on a list. The admin pages build it from a parsed
/// [`crate::domain::ListName`] and [`crate::domain::ListDescription`], so
/// that what reaches the table fits its checks.
#[derive(Debug, Clone)]
pub struct ListFields {
    pub name: String,
    pub description: String,
    pub public: bool,
    pub double_opt_in: bool,
}

/// Why a list could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("Another list is already called that.")]
    NameTaken,
    #[error("The default list cannot be archived: sign-ups that name no list go to it.")]
    DefaultStaysOpen,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn name_taken(error: sqlx::Error) -> ListError {
    match &error {
        sqlx::Error::Database(e) if e.constraint() == Some("lists_name_key") => {
            ListError::NameTaken
        }
        _ => ListError::Database(error),
    }
}

pub async fn create(connection: &mut PgConnection, fields: &ListFields) -> Result<List, ListError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO lists (name, description, public, double_opt_in) \
         VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(&fields.name)
    .bind(&fields.description)
    .bind(fields.public)
    .bind(fields.double_opt_in)
    .fetch_one(connection)
    .await
    .map_err(name_taken)
}

/// `None` when no list has the id.
pub async fn update(
    connection: &mut PgConnection,
    id: Uuid,
    fields: &ListFields,
) -> Result<Option<List>, ListError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE lists SET name = $2, description = $3, public = $4, double_opt_in = $5 \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(&fields.name)
    .bind(&fields.description)
    .bind(fields.public)
    .bind(fields.double_opt_in)
    .fetch_optional(connection)
    .await
    .map_err(name_taken)
}

/// Archives the list (or brings it back): its readers stay on it, it takes
/// no one new. `None` when no list has the id.
pub async fn set_archived(
    connection: &mut PgConnection,
    id: Uuid,
    archived: bool,
) -> Result<Option<List>, ListError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE lists SET archived_at = CASE WHEN $2 THEN COALESCE(archived_at, now()) END \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(archived)
    .fetch_optional(connection)
    .await
    .map_err(|error| match &error {
        sqlx::Error::Database(e) if e.constraint() == Some("lists_default_is_live") => {
            ListError::DefaultStaysOpen
        }
        _ => ListError::Database(error),
    })
}

/// What [`archive`] did.
#[derive(Debug)]
pub enum Archived {
    /// Archived, or brought back: the list as it is now.
    Changed(List),
    /// It already was: nothing changed, nothing to record.
    Unchanged(List),
    /// No list has the id.
    Missing,
}

/// Archives the list or brings it back, as `archived` says, unless it
/// already is so: the admin's page and the API both change a list's state
/// through this, and record only a change.
pub async fn archive(
    connection: &mut PgConnection,
    id: Uuid,
    archived: bool,
) -> Result<Archived, ListError> {
    let Some(list) = find(&mut *connection, id).await? else {
        return Ok(Archived::Missing);
    };
    if list.archived_at.is_some() == archived {
        return Ok(Archived::Unchanged(list));
    }
    Ok(match set_archived(connection, id, archived).await? {
        Some(list) => Archived::Changed(list),
        None => Archived::Missing,
    })
}

/// Sets the list's welcome email, or removes it (`None`). `None` when no
/// list has the id.
pub async fn set_welcome(
    connection: &mut PgConnection,
    id: Uuid,
    welcome: Option<&Welcome>,
) -> Result<Option<List>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE lists SET welcome_subject = $2, welcome_body = $3 \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(welcome.map(Welcome::subject))
    .bind(welcome.map(Welcome::body))
    .fetch_optional(connection)
    .await
}
