//! Issue drafts: an issue's text and choices kept before it is published,
//! the store of `issue_drafts`. A draft is not an issue: nothing sends,
//! archives or counts it. Publishing one ([`super::publishing::publish_draft`])
//! turns it into an issue with the draft's id and deletes it in the same
//! transaction, so a draft is published at most once, and its id leads to
//! the issue afterwards.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::newsletters::Draft;

/// A draft as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredDraft {
    pub id: Uuid,
    pub title: String,
    pub content: String,
    /// The lists asked for, by id; empty for none named.
    pub list_ids: Vec<Uuid>,
    /// A saved segment's id, narrowing the lists' readers.
    pub segment_id: Option<Uuid>,
    /// When it goes out once published; `None`: at once.
    pub send_at: Option<DateTime<Utc>>,
    /// Whether it goes in the public archive as it is published.
    pub public: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl StoredDraft {
    /// The text as written, parsed again: a stored draft was parsed when it
    /// was saved, so this fails only if the limits were lowered since.
    pub fn text(&self) -> Result<Draft, crate::newsletters::DraftError> {
        Draft::parse(&self.title, &self.content)
    }

    /// Whether the draft already holds `fields`: a save that would change
    /// nothing need not be written, nor put on record.
    pub fn holds(&self, fields: &DraftFields<'_>) -> bool {
        self.title == fields.text.title()
            && self.content == fields.text.content()
            && self.list_ids == fields.list_ids
            && self.segment_id == fields.segment_id
            && self.send_at == fields.send_at
            && self.public == fields.public
    }

    /// How the audit log names a draft: by title and by id.
    pub fn audited(&self) -> String {
        format!("draft “{}” ({})", self.title, self.id)
    }
}

/// What a draft holds: its text, parsed, and its choices, checked against
/// the lists and segments of the moment it is saved.
pub struct DraftFields<'a> {
    pub text: &'a Draft,
    pub list_ids: &'a [Uuid],
    pub segment_id: Option<Uuid>,
    pub send_at: Option<DateTime<Utc>>,
    pub public: bool,
}

/// Who saved a draft first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    Admin(Uuid),
    Token(Uuid),
}

const COLUMNS: &str =
    "id, title, content, list_ids, segment_id, send_at, public, created_at, updated_at";

pub async fn create(
    conn: &mut PgConnection,
    fields: &DraftFields<'_>,
    author: Author,
) -> Result<StoredDraft, sqlx::Error> {
    let (admin, token) = match author {
        Author::Admin(id) => (Some(id), None),
        Author::Token(id) => (None, Some(id)),
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO issue_drafts \
             (id, title, content, list_ids, segment_id, send_at, public, created_by, token_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         RETURNING {COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(fields.text.title())
    .bind(fields.text.content())
    .bind(fields.list_ids)
    .bind(fields.segment_id)
    .bind(fields.send_at)
    .bind(fields.public)
    .bind(admin)
    .bind(token)
    .fetch_one(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<StoredDraft>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM issue_drafts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The draft, locked until the caller's transaction ends: what a change or
/// a publish reads first, so that two of them at once take turns and the
/// second sees what the first did (a publish, a deletion).
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<Option<StoredDraft>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM issue_drafts WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Where a page of drafts ends: the last draft's creation and id, which
/// the next page starts after. It carries its own position, rather than
/// naming a draft to look up, so that a draft published or deleted while a
/// client walks the pages does not end the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    pub fn after(draft: &StoredDraft) -> Self {
        Self {
            created_at: draft.created_at,
            id: draft.id,
        }
    }

    /// What [`Cursor::to_string`] wrote; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        let (micros, id) = raw.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        let id = Uuid::try_parse(id).ok()?;
        Some(Self { created_at, id })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at.timestamp_micros(), self.id)
    }
}

/// Up to `limit` drafts, newest first, after `after`: a keyset page, as
/// for issues.
pub async fn page(
    conn: &mut PgConnection,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredDraft>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM issue_drafts \
         WHERE $1::timestamptz IS NULL OR (created_at, id) < ($1, $2) \
         ORDER BY created_at DESC, id DESC LIMIT $3"
    )))
    .bind(after.map(|c| c.created_at))
    .bind(after.map(|c| c.id))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Replaces what the draft holds; `None` when no draft has the id.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    fields: &DraftFields<'_>,
) -> Result<Option<StoredDraft>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE issue_drafts \
         SET title = $2, content = $3, list_ids = $4, segment_id = $5, send_at = $6, \
             public = $7, updated_at = now() \
         WHERE id = $1 \
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(fields.text.title())
    .bind(fields.text.content())
    .bind(fields.list_ids)
    .bind(fields.segment_id)
    .bind(fields.send_at)
    .bind(fields.public)
    .fetch_optional(conn)
    .await
}

/// Deletes the draft: on its deletion, and once it is published. Whether
/// there was one.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM issue_drafts WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_wrote_and_nothing_else() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_768_726_800_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        for raw in [
            "",
            "12",
            "x.y",
            &format!("1.{}x", cursor.id),
            &cursor.id.to_string(),
        ] {
            assert_eq!(Cursor::parse(raw), None, "{raw}");
        }
    }
}
