//! The admin's view of the list: a page of subscribers, searched and
//! filtered, newest first, and the same selection read a chunk at a time
//! for the CSV export.
//!
//! Pages are keyset-paginated on (subscribed_at, id): the next page starts
//! after the last row shown, so a page costs the same however deep it is,
//! and sign-ups arriving meanwhile do not shift rows between pages.
//!
//! Each shape of the filter (a search or not, a status or not, a first
//! page or a later one) is a statement of its own, built from fixed parts,
//! with its row limit written in. One statement with `($1 IS NULL OR …)`
//! guards would serve them all, but once Postgres switches a pooled
//! connection's prepared statement to its generic plan, that plan cannot
//! use the index range for the keyset, and every page scans from the top: a
//! 1M-row export went from seconds to a minute depending on what the
//! connection had run before. A limit left as a parameter does the same
//! more quietly: a generic plan guesses it at a tenth of the table.
//!
//! With a list chosen, the rows come from the subscribers joined to their
//! memberships of that list, under the table's own name and columns, so
//! every shape above works on it unchanged; the status is the reader's
//! status on that list (`pending_confirmation` standing for the list's
//! `pending`, so that the filter and the rows say it one way). The walk
//! stays on the subscribers' (subscribed_at, id) index, each row probing
//! the memberships' primary key: cheap for a list most readers are on, a
//! longer walk for a list few are on.
//!
//! A search (any part of the address or the name, `ILIKE '%…%'`) has two
//! ways to a page, and neither is fast for every search. Walking the time
//! index newest first and testing each row finds a common term ("example")
//! at once and a rare one only after reading the whole table; the trigram
//! indexes find a rare term at once and a common one by reading every row
//! that has it, then sorting them. The planner cannot choose between them
//! from a generic plan, which knows nothing of the term: at a million
//! subscribers it walks, and a search for an address that is not there
//! takes 3 s. So a page of a search first tests the [`SEARCH_WINDOW`]
//! newest rows after the cursor (a few milliseconds); when they hold a
//! page, that is the page. When they do not, the term is rarer than one row
//! in a hundred there, and the page comes from the trigram indexes, which
//! then have few rows to read. The export walks instead, a window at a
//! time, so that every chunk costs the same whatever the term.

use chrono::{DateTime, Datelike, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::segments::{Filter, Walk, push_filter};

/// The longest search the form sends.
const QUERY_LIMIT: usize = 256;

/// The shortest search. The trigram indexes know nothing of a term shorter
/// than a trigram: one or two characters could only be searched for by
/// reading the table, which is what a search must not cost. Such a term
/// matches most of a large list anyway. (A longer term with no three
/// letters or digits in a row, such as `a.b`, has no trigram either: when
/// the newest rows do not hold a page of it, Postgres reads the whole of
/// both indexes, about 0.25 s at a million subscribers. Such searches are
/// rare enough to leave them that.)
pub const QUERY_MINIMUM: usize = 3;

/// Rows a page of a search tests, newest first, before it asks the trigram
/// indexes instead (see the module's documentation). Reading them costs
/// about 8 ms at a million subscribers on two cores; if they hold fewer
/// than a page of matches, the term is in fewer than one row in a hundred,
/// and the indexes' way reads at most about that many rows.
const SEARCH_WINDOW: i64 = 5000;

/// Rows an export chunk of a search tests.
const EXPORT_SEARCH_WINDOW: i64 = 10_000;

/// The columns a row of the list has, as [`Row`] reads them.
const COLUMNS: &str = "id, email, name, status, subscribed_at, confirmed_at, attributes";

/// The subscribers of one list (its id the statement's `$1`), under the
/// name and columns of the table, with the status on that list.
const ONE_LIST: &str = "(SELECT s.id, s.email, s.name, \
     CASE m.status WHEN 'pending' THEN 'pending_confirmation' ELSE m.status END AS status, \
     s.subscribed_at, s.confirmed_at, s.attributes \
     FROM subscriptions s JOIN memberships m ON m.subscriber_id = s.id AND m.list_id = $1) \
     AS subscriptions";

/// The newest-first order of the list, which the keyset follows.
const NEWEST_FIRST: &str = "ORDER BY subscribed_at DESC, id DESC";

/// Which subscribers a page or an export is about.
#[derive(Clone)]
pub struct Selection {
    /// A LIKE pattern, `%` around the search with its wildcards escaped.
    pattern: Option<String>,
    /// With a list, the status on that list.
    status: Option<&'static str>,
    /// Only the readers on this list (whatever their status on it, unless
    /// `status` says).
    list: Option<Uuid>,
}

impl Selection {
    /// The selection as the audit log says it: the status, and whether a
    /// search narrowed it, never the search itself. What an admin types
    /// there is an address or a name more often than not, and the log
    /// outlives the subscriber it would name.
    pub fn audited(&self) -> String {
        let status = self.status.unwrap_or("any");
        let list = match self.list {
            Some(list) => format!("list {list}, "),
            None => String::new(),
        };
        match &self.pattern {
            Some(_) => format!("{list}status {status}, narrowed by a search"),
            None => format!("{list}status {status}, no search"),
        }
    }

    /// The list chosen, if one was: the page checks that it exists.
    pub fn list(&self) -> Option<Uuid> {
        self.list
    }

    /// `list` is a list's id or empty; with one, `status` is the status on
    /// that list.
    pub fn parse(query: &str, status: &str, list: &str) -> Result<Self, String> {
        let query = query.trim();
        if query.chars().count() > QUERY_LIMIT {
            return Err(format!(
                "The search is longer than {QUERY_LIMIT} characters."
            ));
        }
        if !query.is_empty() && query.chars().count() < QUERY_MINIMUM {
            return Err(format!(
                "Type at least {QUERY_MINIMUM} characters to search: part of an address or a name."
            ));
        }
        // No address or name holds one (sign-up refuses them), and Postgres
        // refuses a NUL in a pattern outright.
        if let Some(c) = query.chars().find(|c| c.is_control()) {
            return Err(format!(
                "The search contains the control character U+{:04X}.",
                u32::from(c)
            ));
        }
        let status = match status {
            "" => None,
            "confirmed" => Some("confirmed"),
            "pending_confirmation" => Some("pending_confirmation"),
            "unsubscribed" => Some("unsubscribed"),
            other => {
                return Err(format!(
                    "`{other}` is not a status: use confirmed, pending_confirmation or \
                     unsubscribed."
                ));
            }
        };
        let pattern = (!query.is_empty()).then(|| {
            let escaped = query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let list = match list.trim() {
            "" => None,
            raw => Some(Uuid::try_parse(raw).map_err(|_| format!("`{raw}` is not a list's id."))?),
        };
        Ok(Self {
            pattern,
            status,
            list,
        })
    }
}

/// Where a page starts: just after this row in the newest-first order.
#[derive(Clone, Copy)]
pub struct Cursor {
    subscribed_at: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    /// `{microseconds since the epoch}_{id}`, as `encode` writes it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let malformed = || "The page address is malformed.".to_owned();
        let (micros, id) = raw.split_once('_').ok_or_else(malformed)?;
        let micros: i64 = micros.parse().map_err(|_| malformed())?;
        // Cursors come from rows, all signed up after 1970 and before the
        // year 10000; anything else was made up, and could be outside what
        // Postgres stores.
        let subscribed_at = DateTime::from_timestamp_micros(micros)
            .filter(|at| micros >= 0 && at.year() < 10_000)
            .ok_or_else(malformed)?;
        Ok(Self {
            subscribed_at,
            id: Uuid::parse_str(id).map_err(|_| malformed())?,
        })
    }

    pub fn encode(&self) -> String {
        format!("{}_{}", self.subscribed_at.timestamp_micros(), self.id)
    }
}

/// A subscriber as a row of the list.
#[derive(sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub status: String,
    pub subscribed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// Their custom attributes' values, for the export's columns.
    pub attributes: sqlx::types::Json<super::attributes::Values>,
}

impl Row {
    /// Where the page after this row starts.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            subscribed_at: self.subscribed_at,
            id: self.id,
        }
    }
}

/// Where a statement's parameters come from. They are always numbered in
/// this order, the ones a shape lacks left out: the list, the search's
/// pattern, the status, then the cursor's two keys. [`bind`] binds them so.
struct Parameters {
    next: usize,
}

impl Parameters {
    /// The numbers of a statement about `selection`: `$1` is the list's,
    /// when there is one ([`ONE_LIST`]).
    fn new(selection: &Selection) -> Self {
        Self {
            next: if selection.list.is_some() { 2 } else { 1 },
        }
    }

    fn take(&mut self) -> usize {
        let n = self.next;
        self.next += 1;
        n
    }
}

/// `(email ILIKE $n OR name ILIKE $n)`, taking the pattern's number.
fn search_condition(parameters: &mut Parameters) -> String {
    let n = parameters.take();
    format!("(email ILIKE ${n} OR name ILIKE ${n})")
}

/// The status and keyset conditions of a shape, taking their numbers.
fn narrowing_conditions(
    selection: &Selection,
    cursor: bool,
    parameters: &mut Parameters,
) -> Vec<String> {
    let mut conditions = Vec::new();
    if selection.status.is_some() {
        conditions.push(format!("status = ${}", parameters.take()));
    }
    if cursor {
        let (at, id) = (parameters.take(), parameters.take());
        conditions.push(format!("(subscribed_at, id) < (${at}, ${id})"));
    }
    conditions
}

/// Where the rows come from: the table, or the readers of one list.
fn source(selection: &Selection) -> &'static str {
    if selection.list.is_some() {
        ONE_LIST
    } else {
        "subscriptions"
    }
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", conditions.join(" AND "))
    }
}

/// The next `limit` rows of the selection's status after the cursor,
/// through the index on (subscribed_at, id), or on (status, subscribed_at,
/// id) when there is a status. Without a search, this is a page; with one,
/// the window the search tests.
fn keyset_statement(
    selection: &Selection,
    cursor: bool,
    limit: i64,
    parameters: &mut Parameters,
) -> String {
    let conditions = narrowing_conditions(selection, cursor, parameters);
    format!(
        "SELECT {COLUMNS} FROM {} {}{NEWEST_FIRST} LIMIT {limit}",
        source(selection),
        where_clause(&conditions)
    )
}

/// A page of a search from the [`SEARCH_WINDOW`] rows after the cursor:
/// the window is a subquery with a limit, which Postgres plans on its own
/// (a walk of the time index) and does not push the search into.
fn search_walk_statement(selection: &Selection, cursor: bool, limit: i64) -> String {
    let mut parameters = Parameters::new(selection);
    let search = search_condition(&mut parameters);
    let window = keyset_statement(selection, cursor, SEARCH_WINDOW, &mut parameters);
    format!(
        "SELECT {COLUMNS} FROM ({window}) AS recent WHERE {search} {NEWEST_FIRST} LIMIT {limit}"
    )
}

/// A page of a search from the trigram indexes: every match, then the
/// newest `limit` of them after the cursor. `OFFSET 0` keeps Postgres from
/// merging the subquery into the outer query, where the order and the limit
/// would tempt it into walking the time index and testing each row (the
/// slow way for a rare term, which is what this statement is for). The
/// status and the cursor stay outside too: inside, a generic plan would
/// intersect the matches with the range of the status index, reading a
/// third of that index to narrow down a handful of rows (43 ms instead of
/// 4 at a million subscribers).
fn search_index_statement(selection: &Selection, cursor: bool, limit: i64) -> String {
    let mut parameters = Parameters::new(selection);
    let search = search_condition(&mut parameters);
    let conditions = narrowing_conditions(selection, cursor, &mut parameters);
    format!(
        "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM {} WHERE {search} OFFSET 0) \
         AS matches {}{NEWEST_FIRST} LIMIT {limit}",
        source(selection),
        where_clause(&conditions)
    )
}

/// The matches of a search among the next `window` rows after the cursor,
/// and the last of those rows whether it matches or not (`last`), where the
/// next window starts. `lead` over the window's own order costs no sort.
fn search_window_statement(selection: &Selection, cursor: bool, window: i64) -> String {
    let mut parameters = Parameters::new(selection);
    let search = search_condition(&mut parameters);
    let rows = keyset_statement(selection, cursor, window, &mut parameters);
    format!(
        "SELECT {COLUMNS}, wanted, last FROM ( \
             SELECT {COLUMNS}, {search} AS wanted, \
                    lead(id) OVER ({NEWEST_FIRST}) IS NULL AS last \
             FROM ({rows}) AS recent \
         ) AS marked WHERE wanted OR last {NEWEST_FIRST}"
    )
}

/// Binds a selection's parameters in the order [`Parameters`] numbers them.
fn bind<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    selection: &'q Selection,
    cursor: Option<Cursor>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    if let Some(list) = selection.list {
        query = query.bind(list);
    }
    if let Some(pattern) = &selection.pattern {
        query = query.bind(pattern);
    }
    if let Some(status) = selection.status {
        query = query.bind(status);
    }
    if let Some(cursor) = cursor {
        query = query.bind(cursor.subscribed_at).bind(cursor.id);
    }
    query
}

async fn fetch(
    connection: &mut PgConnection,
    statement: String,
    selection: &Selection,
    cursor: Option<Cursor>,
) -> Result<Vec<Row>, sqlx::Error> {
    bind(
        sqlx::query_as(sqlx::AssertSqlSafe(statement)),
        selection,
        cursor,
    )
    .fetch_all(connection)
    .await
}

/// Up to `limit` subscribers of the selection, after `cursor`: a page of
/// the list.
pub async fn page(
    connection: &mut PgConnection,
    selection: &Selection,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let with_cursor = cursor.is_some();
    if selection.pattern.is_none() {
        let statement = keyset_statement(
            selection,
            with_cursor,
            limit,
            &mut Parameters::new(selection),
        );
        return fetch(connection, statement, selection, cursor).await;
    }
    let recent = fetch(
        &mut *connection,
        search_walk_statement(selection, with_cursor, limit),
        selection,
        cursor,
    )
    .await?;
    if recent.len() as i64 >= limit {
        return Ok(recent);
    }
    fetch(
        connection,
        search_index_statement(selection, with_cursor, limit),
        selection,
        cursor,
    )
    .await
}

/// Up to `limit` subscribers of the selection who match a segment's
/// `filter`, after `cursor`, newest first: a page of the API's list
/// narrowed by a segment. A filter has as many statements as shapes, so
/// this one is built around it ([`push_filter`]), every value bound; it
/// walks the time index and tests each row (the filter's conditions on
/// lists look each reader up, [`Walk::ById`]), which is the search's slow
/// way for a filter that few match: a client narrowing a large list by a
/// rare segment pays for it in time, bounded by the work timeout.
pub async fn page_matching(
    connection: &mut PgConnection,
    selection: &Selection,
    filter: &Filter,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM "));
    match selection.list {
        None => {
            query.push("subscriptions s");
        }
        // One list's readers under the table's columns, as [`ONE_LIST`],
        // named `s` as the filter's predicate reads it.
        Some(list) => {
            query.push(
                "(SELECT s.id, s.email, s.name, \
                 CASE m.status WHEN 'pending' THEN 'pending_confirmation' ELSE m.status END \
                 AS status, s.subscribed_at, s.confirmed_at, s.attributes \
                 FROM subscriptions s JOIN memberships m \
                 ON m.subscriber_id = s.id AND m.list_id = ",
            );
            query.push_bind(list);
            query.push(") AS s");
        }
    }
    query.push(" WHERE ");
    push_filter(&mut query, filter, Walk::ById);
    if let Some(pattern) = &selection.pattern {
        query.push(" AND (email ILIKE ");
        query.push_bind(pattern.clone());
        query.push(" OR name ILIKE ");
        query.push_bind(pattern.clone());
        query.push(")");
    }
    if let Some(status) = selection.status {
        query.push(" AND status = ");
        query.push_bind(status);
    }
    if let Some(cursor) = cursor {
        query.push(" AND (subscribed_at, id) < (");
        query.push_bind(cursor.subscribed_at);
        query.push(", ");
        query.push_bind(cursor.id);
        query.push(")");
    }
    query.push(format_args!(" {NEWEST_FIRST} LIMIT {limit}"));
    query.build_query_as().fetch_all(connection).await
}

/// A piece of an export.
pub struct Chunk {
    pub rows: Vec<Row>,
    /// Where the next chunk starts; `None` once the selection is read.
    pub next: Option<Cursor>,
}

#[derive(sqlx::FromRow)]
struct WindowRow {
    #[sqlx(flatten)]
    row: Row,
    wanted: bool,
    last: bool,
}

/// The next chunk of the selection after `cursor`, for the export: up to
/// `limit` rows without a search. With one, the matches among the next
/// [`EXPORT_SEARCH_WINDOW`] rows, however few: each chunk then reads as
/// much as the one before, where going on until `limit` matches would read
/// the whole table for a term that has fewer.
pub async fn chunk(
    connection: &mut PgConnection,
    selection: &Selection,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Chunk, sqlx::Error> {
    let with_cursor = cursor.is_some();
    if selection.pattern.is_none() {
        let statement = keyset_statement(
            selection,
            with_cursor,
            limit,
            &mut Parameters::new(selection),
        );
        let rows = fetch(connection, statement, selection, cursor).await?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(Row::cursor))
            .flatten();
        return Ok(Chunk { rows, next });
    }
    let statement = search_window_statement(selection, with_cursor, EXPORT_SEARCH_WINDOW);
    let window: Vec<WindowRow> = bind(
        sqlx::query_as(sqlx::AssertSqlSafe(statement)),
        selection,
        cursor,
    )
    .fetch_all(connection)
    .await?;
    let next = window
        .iter()
        .find(|marked| marked.last)
        .map(|marked| marked.row.cursor());
    let rows = window
        .into_iter()
        .filter(|marked| marked.wanted)
        .map(|marked| marked.row)
        .collect();
    Ok(Chunk { rows, next })
}

/// Every statement a selection's pages and export can run, named, as they
/// are sent: for checking the plans Postgres makes of them (a generic plan,
/// especially, which knows nothing of the values bound). Parameters are
/// numbered in the order the pattern, the status and the cursor's time and
/// id come in; the limits are the list's page and the export's chunk.
pub fn statements(
    selection: &Selection,
    cursor: bool,
    page_limit: i64,
    chunk_limit: i64,
) -> Vec<(&'static str, String)> {
    if selection.pattern.is_none() {
        return vec![
            (
                "page",
                keyset_statement(
                    selection,
                    cursor,
                    page_limit,
                    &mut Parameters::new(selection),
                ),
            ),
            (
                "export chunk",
                keyset_statement(
                    selection,
                    cursor,
                    chunk_limit,
                    &mut Parameters::new(selection),
                ),
            ),
        ];
    }
    vec![
        (
            "page of a search, recent rows",
            search_walk_statement(selection, cursor, page_limit),
        ),
        (
            "page of a search, trigram indexes",
            search_index_statement(selection, cursor, page_limit),
        ),
        (
            "export chunk of a search",
            search_window_statement(selection, cursor, EXPORT_SEARCH_WINDOW),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_matches_its_wildcards_literally() {
        let selection = Selection::parse("50%_off\\", "", "").unwrap();
        assert_eq!(selection.pattern.as_deref(), Some("%50\\%\\_off\\\\%"));
    }

    #[test]
    fn a_cursor_survives_its_round_trip_and_a_forged_one_is_refused() {
        let cursor = Cursor {
            subscribed_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        let back = Cursor::parse(&cursor.encode()).unwrap();
        assert_eq!(
            (back.subscribed_at, back.id),
            (cursor.subscribed_at, cursor.id)
        );
        for forged in [
            "",
            "1_2",
            "x_00000000-0000-0000-0000-000000000000",
            "99999999999999999999_x",
        ] {
            assert!(Cursor::parse(forged).is_err(), "{forged} was accepted");
        }
    }

    #[test]
    fn the_audit_log_hears_of_a_search_but_not_what_was_searched_for() {
        let searched =
            Selection::parse(" Ada.Lovelace+news@Example.com ", "confirmed", "").unwrap();
        assert_eq!(searched.audited(), "status confirmed, narrowed by a search");
        let whole = Selection::parse("", "", "").unwrap();
        assert_eq!(whole.audited(), "status any, no search");
    }

    #[test]
    fn a_search_with_a_control_character_is_refused() {
        assert!(Selection::parse("ada\0", "", "").is_err());
        assert!(Selection::parse("a\nb", "", "").is_err());
    }

    #[test]
    fn a_cursor_outside_the_years_rows_have_is_refused() {
        let id = Uuid::nil();
        assert!(Cursor::parse(&format!("-7000000000000000000_{id}")).is_err());
        assert!(Cursor::parse(&format!("-1_{id}")).is_err());
        assert!(Cursor::parse(&format!("300000000000000000_{id}")).is_err());
        assert!(Cursor::parse(&format!("1700000000000000_{id}")).is_ok());
    }

    #[test]
    fn a_search_shorter_than_a_trigram_is_refused_but_an_empty_one_lists_everyone() {
        for short in ["a", "ab", "  ab  ", "é"] {
            let refused = Selection::parse(short, "", "").err().unwrap_or_default();
            assert!(
                refused.contains("at least 3 characters"),
                "{short:?}: {refused}"
            );
        }
        assert!(Selection::parse("abc", "", "").is_ok());
        assert!(Selection::parse("   ", "", "").unwrap().pattern.is_none());
    }

    #[test]
    fn an_unknown_status_is_refused() {
        assert!(Selection::parse("", "deleted", "").is_err());
        assert!(Selection::parse("", "confirmed", "").is_ok());
        assert!(Selection::parse("", "unsubscribed", "").is_ok());
    }

    #[test]
    fn a_malformed_list_id_is_refused() {
        let refused = Selection::parse("", "", "not-a-list").err().unwrap();
        assert!(refused.contains("not-a-list"), "{refused}");
    }

    #[test]
    fn with_a_list_the_rows_come_from_its_readers_and_the_list_is_the_first_parameter() {
        let list = Uuid::new_v4();
        let on_list = Selection::parse("ada", "pending_confirmation", &list.to_string()).unwrap();
        assert_eq!(on_list.list(), Some(list));
        for (name, statement) in statements(&on_list, true, 51, 1000) {
            assert!(
                statement.contains("JOIN memberships m"),
                "{name}: {statement}"
            );
            assert!(statement.contains("m.list_id = $1"), "{name}: {statement}");
            assert!(statement.contains("ILIKE $2"), "{name}: {statement}");
            // No guard on a parameter that may be NULL: each shape is its own.
            assert!(!statement.contains("$1 IS NULL"), "{name}: {statement}");
        }
        assert_eq!(
            on_list.audited(),
            format!("list {list}, status pending_confirmation, narrowed by a search")
        );
        let whole = Selection::parse("ada", "pending_confirmation", "").unwrap();
        for (name, statement) in statements(&whole, false, 51, 1000) {
            assert!(!statement.contains("memberships"), "{name}: {statement}");
        }
    }
}
