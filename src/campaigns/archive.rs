//! The public archive's statements on `newsletter_issues`: making an issue
//! public or private, and what the archive's pages and its feed read of
//! the public ones. The ledger ([`super::ledger`]) holds the table's other
//! statements; both live under `campaigns`, the table's one owner.
//!
//! An issue's slug is given the first time it is made public and never
//! changes after: a link once shared keeps pointing at the same issue,
//! through a private spell too. Slugs are chosen under a transaction-wide
//! advisory lock, so two admins making two issues of the same title public
//! at once get `title` and `title-2` rather than one of them a unique
//! violation.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Slug;

/// What making an issue public or private did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publicity {
    /// No issue has this id.
    Missing,
    /// It already was as asked: nothing changed.
    Unchanged,
    /// It changed; the slug is its address in the archive.
    Changed(Slug),
}

/// Puts the issue in the public archive, giving it a slug made from its
/// title if it has none yet. Call it in the transaction that publishes the
/// issue or records the admin's action.
pub async fn make_public(conn: &mut PgConnection, id: Uuid) -> Result<Publicity, sqlx::Error> {
    let row: Option<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT title, slug, public_at IS NOT NULL FROM newsletter_issues \
         WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((title, slug, public)) = row else {
        return Ok(Publicity::Missing);
    };
    let slug = match slug.as_deref().map(Slug::parse) {
        Some(Ok(slug)) => slug,
        // Only this module writes slugs, through `Slug`; one that does not
        // parse was written by hand, and a fresh one replaces it.
        Some(Err(_)) | None => free_slug(conn, &Slug::from_title(&title)).await?,
    };
    if public {
        return Ok(Publicity::Unchanged);
    }
    sqlx::query(
        "UPDATE newsletter_issues \
         SET slug = $2, public_at = now(), publicity_changed_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(slug.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(Publicity::Changed(slug))
}

/// `wanted`, or the first of `wanted-2`, `wanted-3`, … that no issue holds.
/// Holds the slugs' advisory lock until the transaction ends, so that no
/// one else takes the slug between this choice and the caller's update.
async fn free_slug(conn: &mut PgConnection, wanted: &Slug) -> Result<Slug, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('newsletter_issues.slug', 0))")
        .execute(&mut *conn)
        .await?;
    // `-` and the letters and digits of a slug mean nothing to LIKE.
    let taken: HashSet<String> = sqlx::query_scalar(
        "SELECT slug FROM newsletter_issues WHERE slug = $1 OR slug LIKE $1 || '-%'",
    )
    .bind(wanted.as_str())
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    if !taken.contains(wanted.as_str()) {
        return Ok(wanted.clone());
    }
    // Among `taken.len() + 1` suffixes one is free.
    let free = (2..)
        .map(|n| wanted.with_suffix(n))
        .find(|slug| !taken.contains(slug.as_str()))
        .expect("an unbounded range of suffixes holds a free one");
    Ok(free)
}

/// Takes the issue out of the public archive; it keeps its slug for when
/// it is made public again.
pub async fn make_private(conn: &mut PgConnection, id: Uuid) -> Result<Publicity, sqlx::Error> {
    let row: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT slug, public_at IS NOT NULL FROM newsletter_issues WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((slug, public)) = row else {
        return Ok(Publicity::Missing);
    };
    let slug = slug.as_deref().map(Slug::parse).and_then(Result::ok);
    let (Some(slug), true) = (slug, public) else {
        return Ok(Publicity::Unchanged);
    };
    sqlx::query(
        "UPDATE newsletter_issues SET public_at = NULL, publicity_changed_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(Publicity::Changed(slug))
}

/// Whether the issue is public, and its slug if it ever was: for the
/// issue's admin page.
pub async fn publicity_of(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(bool, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT public_at IS NOT NULL, slug FROM newsletter_issues WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Whether an issue's emails go out: its send time has come and it is
/// sending or sent, or it sent some before it was paused or cancelled. An
/// issue cancelled, or paused, before its first email never went out.
/// A macro so that [`VISIBLE`] can be built from it at compile time.
macro_rules! going_out {
    () => {
        "send_at <= now() AND (state IN ('sending', 'done') OR sent > 0)"
    };
}
const GOING_OUT: &str = going_out!();

/// What the archive shows: public issues whose emails go out. Every
/// statement below that reads the archive reads through it, so that the
/// list, an issue's page, the feed, their Last-Modified and the list's
/// cursor all agree: an issue scheduled for later, or cancelled before it
/// was sent, is nowhere, not even as a cursor that answers otherwise than
/// an unknown slug.
const VISIBLE: &str = concat!("public_at IS NOT NULL AND ", going_out!());

/// A public issue as the archive lists it (see [`VISIBLE`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub id: Uuid,
    pub slug: String,
    pub title: String,
    pub send_at: DateTime<Utc>,
    pub public_at: DateTime<Utc>,
}

/// A public issue whole: what its web version and its feed entry show.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PublicIssue {
    #[sqlx(flatten)]
    pub entry: Entry,
    /// The Markdown as written, for a short description.
    pub content: String,
    /// The email's HTML as stored, with its placeholders.
    pub html_body: String,
}

const ENTRY_COLUMNS: &str = "id, slug, title, send_at, public_at";

/// Where a page of the archive starts: after the issue of this slug, in
/// the archive's order (newest `send_at` first). `None` when no issue in
/// the archive has the slug: a private or embargoed issue answers as an
/// unknown one, so that a cursor cannot confirm a guessed title.
pub async fn position_of(
    conn: &mut PgConnection,
    slug: &Slug,
) -> Result<Option<(DateTime<Utc>, Uuid)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT send_at, id FROM newsletter_issues WHERE slug = $1 AND {VISIBLE}"
    )))
    .bind(slug.as_str())
    .fetch_optional(conn)
    .await
}

/// Up to `limit` public issues, newest first, after `before` if given.
/// Keyset paging on `(send_at, id)`, the order of the partial index of
/// public issues: a page costs the same however deep it is.
pub async fn entries(
    conn: &mut PgConnection,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let (at, id) = before.unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM newsletter_issues \
         WHERE {VISIBLE} \
           AND ($1::timestamptz IS NULL OR (send_at, id) < ($1, $2)) \
         ORDER BY send_at DESC, id DESC LIMIT $3"
    )))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The latest `limit` public issues with their bodies, for the feed.
pub async fn latest(conn: &mut PgConnection, limit: i64) -> Result<Vec<PublicIssue>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS}, content, html_body FROM newsletter_issues \
         WHERE {VISIBLE} \
         ORDER BY send_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The public issue of this slug; `None` for an unknown or private one.
pub async fn public_issue(
    conn: &mut PgConnection,
    slug: &Slug,
) -> Result<Option<PublicIssue>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS}, content, html_body FROM newsletter_issues \
         WHERE slug = $1 AND {VISIBLE}"
    )))
    .bind(slug.as_str())
    .fetch_optional(conn)
    .await
}

/// The last time the archive changed: an issue in it went in (made
/// public, or its send time came) or an issue that would be in it went out
/// (made private). An embargoed or cancelled issue's changes do not count:
/// the archive did not change. `None` while no issue ever was in it. What
/// the archive's and the feed's Last-Modified say.
pub async fn last_change(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT greatest(max(greatest(publicity_changed_at, send_at)) FILTER (WHERE {VISIBLE}), \
                         max(publicity_changed_at) \
                             FILTER (WHERE public_at IS NULL AND {GOING_OUT})) \
         FROM newsletter_issues"
    )))
    .fetch_one(conn)
    .await
}
