//! The `segments` table, what a filter may name (the [`Catalogue`]), and
//! counting an audience.

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, QueryBuilder};
use uuid::Uuid;

use super::compile::push_audience;
use super::filter::{AttributeKind, Catalogue, Filter, FilterSpec};
use crate::domain::UnwantedCharacter;
use crate::subscribers::{attributes, lists};

/// How long Postgres may count an audience: an admin waits for the page
/// it is shown on, and a count over a large list with many conditions can
/// take longer than that is worth.
const COUNT_TIMEOUT: &str = "1s";

/// The memory a count may hash the lists' members in: a million members
/// take about 50 MB.
const COUNT_WORK_MEM: &str = "64MB";

/// A segment as stored. Its filter is as it was saved: check it against
/// the catalogue of now ([`Filter::parse`]) before using it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: Uuid,
    pub name: String,
    pub filter: FilterSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A segment's name: 1 to 100 characters, none of them unwanted, no
/// spaces around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName(String);

impl SegmentName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("Give the segment a name.".into());
        }
        if let Some(character) = UnwantedCharacter::find_in(name) {
            return Err(format!("The name contains {character}."));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "The name is longer than {} characters.",
                Self::MAX_CHARS
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a segment could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("Another segment is already called that.")]
    NameTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn name_taken(error: sqlx::Error) -> SegmentError {
    match &error {
        sqlx::Error::Database(e) if e.constraint() == Some("segments_name_key") => {
            SegmentError::NameTaken
        }
        _ => SegmentError::Database(error),
    }
}

type Row = (Uuid, String, String, DateTime<Utc>, DateTime<Utc>);

const COLUMNS: &str = "id, name, filter::text, created_at, updated_at";

fn segment((id, name, filter, created_at, updated_at): Row) -> Result<Segment, sqlx::Error> {
    let filter = FilterSpec::from_json(&filter).map_err(|e| {
        sqlx::Error::Decode(format!("segment {id} holds a filter that cannot be read: {e}").into())
    })?;
    Ok(Segment {
        id,
        name,
        filter,
        created_at,
        updated_at,
    })
}

/// Every segment, by name.
pub async fn all(connection: &mut PgConnection) -> Result<Vec<Segment>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segments ORDER BY lower(name), id"
    )))
    .fetch_all(connection)
    .await?;
    rows.into_iter().map(segment).collect()
}

pub async fn find(connection: &mut PgConnection, id: Uuid) -> Result<Option<Segment>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM segments WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(connection)
    .await?;
    row.map(segment).transpose()
}

/// Stores a checked filter, in its canonical form.
pub async fn create(
    connection: &mut PgConnection,
    name: &SegmentName,
    filter: &Filter,
) -> Result<Segment, SegmentError> {
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO segments (name, filter) VALUES ($1, $2::jsonb) RETURNING {COLUMNS}"
    )))
    .bind(name.as_str())
    .bind(filter.to_spec().to_json())
    .fetch_one(connection)
    .await
    .map_err(name_taken)?;
    Ok(segment(row)?)
}

/// `None` when no segment has the id.
pub async fn update(
    connection: &mut PgConnection,
    id: Uuid,
    name: &SegmentName,
    filter: &Filter,
) -> Result<Option<Segment>, SegmentError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE segments SET name = $2, filter = $3::jsonb, updated_at = now() \
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(name.as_str())
    .bind(filter.to_spec().to_json())
    .fetch_optional(connection)
    .await
    .map_err(name_taken)?;
    Ok(row.map(segment).transpose()?)
}

/// Whether a segment had the id.
pub async fn delete(connection: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM segments WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// The lists and attribute definitions a filter may name, as they are now,
/// with `imports`, which the caller reads from the imports' own store
/// (`crate::imports::store::known`): that module builds on this one.
pub async fn catalogue(
    connection: &mut PgConnection,
    imports: Vec<(Uuid, String)>,
) -> Result<Catalogue, sqlx::Error> {
    let lists = lists::all(&mut *connection)
        .await?
        .into_iter()
        .map(|list| (list.id, list.name))
        .collect();
    let attributes = attributes::definitions(connection)
        .await?
        .into_iter()
        .map(|definition| {
            let kind = AttributeKind::parse(definition.kind.as_str()).ok_or_else(|| {
                sqlx::Error::Decode(
                    format!("`{}` is not an attribute kind", definition.kind.as_str()).into(),
                )
            })?;
            Ok((definition.name, kind))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Catalogue {
        lists,
        attributes,
        imports,
    })
}

/// How many an audience holds, if Postgres counted it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Counted(i64),
    /// The count ran past its limit (or waited past it for a lock): the
    /// page shows no number rather than make the admin wait.
    Unavailable,
}

/// The confirmed readers of any of `lists` who match `filter` and are not
/// suppressed; each once, however many of the lists they are on.
///
/// Runs within a savepoint whose `statement_timeout` is
/// [`COUNT_TIMEOUT`]; the savepoint is rolled back either way, so the
/// caller's transaction stays usable after a count that timed out, and
/// keeps its own settings. The count reads every subscriber and hashes the
/// lists' members ([`Walk::Whole`](super::Walk::Whole)): it gets the
/// memory for those hashes ([`COUNT_WORK_MEM`]), and no JIT compilation,
/// which took 0.7 s of a count at a million subscribers before the count
/// itself began.
pub async fn count(
    connection: &mut PgConnection,
    filter: &Filter,
    lists: &[Uuid],
) -> Result<Count, sqlx::Error> {
    let mut savepoint = connection.begin().await?;
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), set_config('work_mem', $2, true), \
                set_config('jit', 'off', true)",
    )
    .bind(COUNT_TIMEOUT)
    .bind(COUNT_WORK_MEM)
    .execute(&mut *savepoint)
    .await?;
    let mut query = QueryBuilder::new("SELECT count(*) FROM subscriptions s WHERE ");
    push_audience(&mut query, filter, lists);
    query.push(" AND NOT EXISTS (SELECT 1 FROM suppressions sup WHERE sup.email = lower(s.email))");
    let counted = query
        .build_query_scalar::<i64>()
        .fetch_one(&mut *savepoint)
        .await;
    savepoint.rollback().await?;
    match counted {
        Ok(n) => Ok(Count::Counted(n)),
        Err(error) if ran_out_of_time(&error) => Ok(Count::Unavailable),
        Err(error) => Err(error),
    }
}

/// `statement_timeout` (57014) or `lock_timeout` (55P03) ended it.
fn ran_out_of_time(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "57014" || code == "55P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_name_is_trimmed_and_refuses_what_no_name_holds() {
        assert_eq!(
            SegmentName::parse("  Readers in Paris ").unwrap().as_str(),
            "Readers in Paris"
        );
        assert!(SegmentName::parse("   ").is_err());
        assert!(SegmentName::parse("a\0b").is_err());
        assert!(SegmentName::parse("right\u{202E}left").is_err());
        assert!(SegmentName::parse(&"x".repeat(101)).is_err());
        assert!(SegmentName::parse(&"é".repeat(100)).is_ok());
    }
}
