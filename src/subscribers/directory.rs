//! The admin's view of the list: a page of subscribers, searched and
//! filtered, newest first, and the same selection read a chunk at a time
//! for the CSV export.
//!
//! Pages are keyset-paginated on (subscribed_at, id): the next page starts
//! after the last row shown, so a page costs the same however deep it is,
//! and sign-ups arriving meanwhile do not shift rows between pages.
//!
//! Each shape of the filter (a search or not, a status or not, a first
//! page or a later one) is a statement of its own, built from fixed parts.
//! One statement with `($1 IS NULL OR …)` guards would serve them all, but
//! once Postgres switches a pooled connection's prepared statement to its
//! generic plan, that plan cannot use the index range for the keyset, and
//! every page scans from the top: a 1M-row export went from seconds to a
//! minute depending on what the connection had run before.

use chrono::{DateTime, Datelike, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// The longest search the form sends.
const QUERY_LIMIT: usize = 256;

/// Which subscribers a page or an export is about.
#[derive(Clone)]
pub struct Selection {
    /// A LIKE pattern, `%` around the search with its wildcards escaped.
    pattern: Option<String>,
    status: Option<&'static str>,
}

impl Selection {
    /// The selection as the audit log says it: the status, and whether a
    /// search narrowed it, never the search itself. What an admin types
    /// there is an address or a name more often than not, and the log
    /// outlives the subscriber it would name.
    pub fn audited(&self) -> String {
        let status = self.status.unwrap_or("any");
        match &self.pattern {
            Some(_) => format!("status {status}, narrowed by a search"),
            None => format!("status {status}, no search"),
        }
    }

    pub fn parse(query: &str, status: &str) -> Result<Self, String> {
        let query = query.trim();
        if query.chars().count() > QUERY_LIMIT {
            return Err(format!(
                "The search is longer than {QUERY_LIMIT} characters."
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
        Ok(Self { pattern, status })
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

/// The statement for one shape of the filter: only the conditions it has,
/// with their parameters numbered in the order [`page`] binds them.
fn page_statement(selection: &Selection, cursor: bool) -> String {
    let mut conditions = Vec::new();
    let mut next = 1;
    let mut parameter = || {
        let n = next;
        next += 1;
        n
    };
    if selection.pattern.is_some() {
        let n = parameter();
        conditions.push(format!("(email ILIKE ${n} OR name ILIKE ${n})"));
    }
    if selection.status.is_some() {
        conditions.push(format!("status = ${}", parameter()));
    }
    if cursor {
        let (at, id) = (parameter(), parameter());
        conditions.push(format!("(subscribed_at, id) < (${at}, ${id})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", conditions.join(" AND "))
    };
    format!(
        "SELECT id, email, name, status, subscribed_at, confirmed_at, attributes \
         FROM subscriptions \
         {filter}ORDER BY subscribed_at DESC, id DESC LIMIT ${}",
        parameter()
    )
}

/// Up to `limit` subscribers of the selection, after `cursor`.
pub async fn page(
    connection: &mut PgConnection,
    selection: &Selection,
    cursor: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let statement = page_statement(selection, cursor.is_some());
    let mut query = sqlx::query_as(sqlx::AssertSqlSafe(statement));
    if let Some(pattern) = &selection.pattern {
        query = query.bind(pattern);
    }
    if let Some(status) = selection.status {
        query = query.bind(status);
    }
    if let Some(cursor) = cursor {
        query = query.bind(cursor.subscribed_at).bind(cursor.id);
    }
    query.bind(limit).fetch_all(connection).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_matches_its_wildcards_literally() {
        let selection = Selection::parse("50%_off\\", "").unwrap();
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
        let searched = Selection::parse(" Ada.Lovelace+news@Example.com ", "confirmed").unwrap();
        assert_eq!(searched.audited(), "status confirmed, narrowed by a search");
        let whole = Selection::parse("", "").unwrap();
        assert_eq!(whole.audited(), "status any, no search");
    }

    #[test]
    fn a_search_with_a_control_character_is_refused() {
        assert!(Selection::parse("ada\0", "").is_err());
        assert!(Selection::parse("a\nb", "").is_err());
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
    fn an_unknown_status_is_refused() {
        assert!(Selection::parse("", "deleted").is_err());
        assert!(Selection::parse("", "confirmed").is_ok());
        assert!(Selection::parse("", "unsubscribed").is_ok());
    }
}
