//! The imports' own tables: `imports` (one per file and list, its state and
//! counts) and `import_refusals` (the rows not imported, and why), and the
//! session's staging table that COPY fills.
//!
//! The staging table is a temporary one, on the import's own connection:
//! it needs no WAL, no other session sees it, and a process killed midway
//! takes it along. The import's row, left `reading` or `merging`, is what a
//! second run finds and finishes, from the file.

use sqlx::{PgConnection, postgres::PgCopyIn};
use uuid::Uuid;

use crate::subscribers::imports::{MERGED, Merged, STAGING};

/// The most refused rows an import keeps, with their lines and reasons;
/// the count of refusals stays exact past it.
pub const MAX_REFUSALS_KEPT: i64 = 10_000;

/// An import as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ImportRecord {
    pub id: Uuid,
    pub list_id: Uuid,
    pub list_name: String,
    pub file_name: String,
    pub consent_source: Option<String>,
    pub welcome: bool,
    pub state: String,
    pub failure: Option<String>,
    pub rows_read: i64,
    pub rows_staged: i64,
    pub subscribers_added: i64,
    pub memberships_added: i64,
    pub already_on_list: i64,
    pub confirmations_queued: i64,
    pub welcomes_queued: i64,
    pub refused: i64,
    pub started_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ImportRecord {
    /// Where it stands as its page and the API say it: `reading`,
    /// `merging`, `done`, `failed`, or `interrupted` (left reading or
    /// merging with no process running it). `running`: whether a process
    /// holds the import's lock now ([`is_running`]).
    pub fn state_seen(&self, running: bool) -> &'static str {
        match self.state.as_str() {
            "done" => "done",
            "failed" => "failed",
            "merging" if running => "merging",
            "reading" if running => "reading",
            _ => "interrupted",
        }
    }
}

/// What a run asks for.
pub struct NewImport<'a> {
    pub sha256: &'a [u8],
    pub list_id: Uuid,
    pub file_name: &'a str,
    pub consent_source: Option<&'a str>,
    pub welcome: bool,
    pub started_by: &'a str,
}

/// Where a run starts.
pub enum Begun {
    /// A new import, or one a killed run left unfinished, started over.
    Run(Uuid),
    /// This file was imported onto this list already.
    Done(Uuid),
}

/// Holds the import's lock for the session, so that a second run of the
/// same file onto the same list (two clicks, the CLI beside the page) waits
/// its turn and then finds it done. A session lock: a killed process's
/// connection closes and lets go of it.
pub async fn lock(
    connection: &mut PgConnection,
    sha256: &[u8],
    list_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_lock(hashtextextended(encode($1, 'hex') || $2::text, 0))")
        .bind(sha256)
        .bind(list_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// [`lock`] without waiting: `false` when another session holds it, that
/// is, when the same file is being imported onto the same list right now.
pub async fn try_lock(
    connection: &mut PgConnection,
    sha256: &[u8],
    list_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_try_advisory_lock(hashtextextended(encode($1, 'hex') || $2::text, 0))",
    )
    .bind(sha256)
    .bind(list_id)
    .fetch_one(connection)
    .await
}

/// The import of this file onto this list, if there is one.
pub async fn find_by_file(
    connection: &mut PgConnection,
    sha256: &[u8],
    list_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM imports WHERE file_sha256 = $1 AND list_id = $2")
        .bind(sha256)
        .bind(list_id)
        .fetch_optional(connection)
        .await
}

/// Creates the import, or takes up the unfinished one of the same file and
/// list: its refusals and counts so far are cleared, and this run's
/// choices (consent, welcome) replace the earlier ones.
pub async fn begin(
    connection: &mut PgConnection,
    import: &NewImport<'_>,
) -> Result<Begun, sqlx::Error> {
    let (id, state): (Uuid, String) = sqlx::query_as(
        "INSERT INTO imports (id, file_sha256, list_id, file_name, consent_source, welcome, started_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (file_sha256, list_id) DO UPDATE SET file_sha256 = imports.file_sha256 \
         RETURNING id, state",
    )
    .bind(Uuid::new_v4())
    .bind(import.sha256)
    .bind(import.list_id)
    .bind(import.file_name)
    .bind(import.consent_source)
    .bind(import.welcome)
    .bind(import.started_by)
    .fetch_one(&mut *connection)
    .await?;
    if state == "done" {
        return Ok(Begun::Done(id));
    }
    sqlx::query("DELETE FROM import_refusals WHERE import_id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "UPDATE imports SET state = 'reading', failure = NULL, rows_read = 0, rows_staged = 0, \
             refused = 0, file_name = $2, consent_source = $3, welcome = $4, started_by = $5 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(import.file_name)
    .bind(import.consent_source)
    .bind(import.welcome)
    .bind(import.started_by)
    .execute(connection)
    .await?;
    Ok(Begun::Run(id))
}

/// An empty staging table on the import's connection.
pub async fn create_staging(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {STAGING}"
    )))
    .execute(&mut *connection)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE {STAGING} ( \
             line bigint NOT NULL, \
             email text NOT NULL, \
             email_lower text NOT NULL, \
             name text NOT NULL, \
             subscribed_at timestamptz, \
             confirmed_at timestamptz, \
             attributes jsonb NOT NULL, \
             address_hash bytea NOT NULL, \
             mailbox_hash bytea NOT NULL, \
             token text \
         )"
    )))
    .execute(connection)
    .await?;
    Ok(())
}

/// Starts the COPY into the staging table; rows go in as
/// [`super::staging::Encoder`] writes them.
pub async fn copy_in(
    connection: &mut PgConnection,
) -> Result<PgCopyIn<&mut PgConnection>, sqlx::Error> {
    connection
        .copy_in_raw(&format!(
            "COPY {STAGING} (line, email, email_lower, name, subscribed_at, confirmed_at, \
             attributes, address_hash, mailbox_hash, token) FROM STDIN"
        ))
        .await
}

/// Drops the staging table (the merge's commit already dropped its own).
pub async fn drop_staging(connection: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {STAGING}"
    )))
    .execute(connection)
    .await?;
    Ok(())
}

/// Progress while reading: rows read and staged, and refused so far.
pub async fn record_reading(
    connection: &mut PgConnection,
    id: Uuid,
    rows_read: u64,
    rows_staged: u64,
    refused: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE imports SET rows_read = $2, rows_staged = $3, refused = $4 WHERE id = $1")
        .bind(id)
        .bind(i64::try_from(rows_read).unwrap_or(i64::MAX))
        .bind(i64::try_from(rows_staged).unwrap_or(i64::MAX))
        .bind(i64::try_from(refused).unwrap_or(i64::MAX))
        .execute(connection)
        .await?;
    Ok(())
}

/// Keeps refused rows found while reading, up to [`MAX_REFUSALS_KEPT`].
pub async fn keep_refusals(
    connection: &mut PgConnection,
    id: Uuid,
    refusals: &[super::Refusal],
) -> Result<(), sqlx::Error> {
    if refusals.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = refusals
        .iter()
        .map(|r| i64::try_from(r.line).unwrap_or(i64::MAX))
        .collect();
    let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO import_refusals (import_id, line, reason) \
         SELECT $1, line, reason FROM UNNEST($2::bigint[], $3::text[]) AS r (line, reason) \
         LIMIT GREATEST(0, $4 - (SELECT count(*) FROM import_refusals WHERE import_id = $1)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(&lines)
    .bind(&reasons)
    .bind(MAX_REFUSALS_KEPT)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn mark_merging(connection: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE imports SET state = 'merging' WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

/// In the merge's transaction: keeps the merge's refusals (within the
/// bound) and records the import as done, with its counts.
pub async fn finish(
    connection: &mut PgConnection,
    id: Uuid,
    merged: &Merged,
    confirmations_queued: u64,
    welcomes_queued: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO import_refusals (import_id, line, reason) \
         SELECT $1, line, reason FROM {MERGED} WHERE reason IS NOT NULL ORDER BY line \
         LIMIT GREATEST(0, $2 - (SELECT count(*) FROM import_refusals WHERE import_id = $1)) \
         ON CONFLICT DO NOTHING"
    )))
    .bind(id)
    .bind(MAX_REFUSALS_KEPT)
    .execute(&mut *connection)
    .await?;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    sqlx::query(
        "UPDATE imports SET state = 'done', finished_at = now(), \
             subscribers_added = $2, memberships_added = $3, already_on_list = $4, \
             confirmations_queued = $5, refused = refused + $6, welcomes_queued = $7 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(count(merged.subscribers_added))
    .bind(count(merged.memberships_added))
    .bind(count(merged.already_on_list))
    .bind(count(confirmations_queued))
    .bind(count(merged.refused))
    .bind(count(welcomes_queued))
    .execute(connection)
    .await?;
    Ok(())
}

/// Records why an import stopped; a later run of the same file takes it up.
pub async fn mark_failed(
    connection: &mut PgConnection,
    id: Uuid,
    failure: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE imports SET state = 'failed', failure = $2 WHERE id = $1 AND state <> 'done'",
    )
    .bind(id)
    .bind(failure)
    .execute(connection)
    .await?;
    Ok(())
}

const SELECT_IMPORT: &str = "SELECT i.id, i.list_id, l.name AS list_name, i.file_name, \
     i.consent_source, i.welcome, i.state, i.failure, i.rows_read, i.rows_staged, \
     i.subscribers_added, i.memberships_added, i.already_on_list, i.confirmations_queued, \
     i.welcomes_queued, i.refused, i.started_by, i.created_at, i.finished_at \
     FROM imports i JOIN lists l ON l.id = i.list_id";

pub async fn find(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ImportRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_IMPORT} WHERE i.id = $1"
    )))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// Every import, oldest first, with what names it to an admin: its file,
/// its list and the day it began. Segments name imports by id and read
/// them here; imports are never deleted, so an id once known stays known.
pub async fn known(connection: &mut PgConnection) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let rows: Vec<(Uuid, String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT i.id, i.file_name, l.name, i.created_at \
         FROM imports i JOIN lists l ON l.id = i.list_id ORDER BY i.created_at, i.id",
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, file, list, created_at)| {
            let day = created_at.format("%Y-%m-%d");
            (id, format!("{file} onto {list}, {day}"))
        })
        .collect())
}

/// The latest imports, newest first.
pub async fn latest(
    connection: &mut PgConnection,
    limit: i64,
) -> Result<Vec<ImportRecord>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_IMPORT} ORDER BY i.created_at DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// The first `limit` refused rows kept, by line.
pub async fn refusals(
    connection: &mut PgConnection,
    id: Uuid,
    limit: i64,
) -> Result<Vec<super::Refusal>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT line, reason FROM import_refusals WHERE import_id = $1 ORDER BY line LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(line, reason)| super::Refusal {
            line: u64::try_from(line).unwrap_or_default(),
            reason,
        })
        .collect())
}

/// Refused rows kept, by line, after `after_line`: a page of the report's
/// download.
pub async fn refusals_after(
    connection: &mut PgConnection,
    id: Uuid,
    after_line: i64,
    limit: i64,
) -> Result<Vec<super::Refusal>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT line, reason FROM import_refusals WHERE import_id = $1 AND line > $2 \
         ORDER BY line LIMIT $3",
    )
    .bind(id)
    .bind(after_line)
    .bind(limit)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(line, reason)| super::Refusal {
            line: u64::try_from(line).unwrap_or_default(),
            reason,
        })
        .collect())
}

/// Whether a process holds the import's lock (see [`lock`]) now: a run of
/// it is going on. An import left `reading` or `merging` whose lock is
/// free was interrupted (its process was killed). Read from `pg_locks`
/// rather than by trying the lock, which would make a run starting at that
/// moment wait on a page's look.
pub async fn is_running(connection: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    // An advisory lock on a bigint key shows as its high and low halves.
    sqlx::query_scalar(
        "WITH import AS ( \
             SELECT hashtextextended(encode(file_sha256, 'hex') || list_id::text, 0) AS key \
             FROM imports WHERE id = $1 \
         ) \
         SELECT EXISTS ( \
             SELECT 1 FROM pg_locks, import \
             WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND classid = ((key >> 32) & 4294967295)::oid \
               AND objid = (key & 4294967295)::oid \
         )",
    )
    .bind(id)
    .fetch_one(connection)
    .await
}
