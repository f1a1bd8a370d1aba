//! The admin's view of the list: a page of subscribers, searched and
//! filtered, newest first, and the same selection read a chunk at a time
//! for the CSV export.
//!
//! Pages are keyset-paginated on (subscribed_at, id): the next page starts
//! after the last row shown, so a page costs the same however deep it is,
//! and sign-ups arriving meanwhile do not shift rows between pages.
//!
//! Each shape of the filter (a list or not, a search or not, a status or
//! not, a first page or a later one) is a statement of its own, built from
//! fixed parts.
//! One statement with `($1 IS NULL OR …)` guards would serve them all, but
//! once Postgres switches a pooled connection's prepared statement to its
//! generic plan, that plan cannot use the index range for the keyset, and
//! every page scans from the top: a 1M-row export went from seconds to a
//! minute depending on what the connection had run before.
//!
//! With a list chosen, the statement joins the memberships of that list,
//! and the status is the reader's status on it (`pending_confirmation`
//! standing for the list's `pending`, so that the filter and the rows say
//! it one way). The walk stays on the subscribers' (subscribed_at, id)
//! index, each row probing the memberships' primary key: cheap for a list
//! most readers are on, a longer walk for a list few are on.

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
    /// As the filtered column stores it: the subscriber's status, or with
    /// a list, the membership's.
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
        let list = match list.trim() {
            "" => None,
            raw => Some(Uuid::try_parse(raw).map_err(|_| format!("`{raw}` is not a list's id."))?),
        };
        // A membership says `pending` where a subscriber says
        // `pending_confirmation`.
        let status = match (status, list) {
            (Some("pending_confirmation"), Some(_)) => Some("pending"),
            (status, _) => status,
        };
        let pattern = (!query.is_empty()).then(|| {
            let escaped = query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
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
    let (from, status) = if selection.list.is_some() {
        conditions.push(format!("m.list_id = ${}", parameter()));
        (
            "subscriptions s JOIN memberships m ON m.subscriber_id = s.id",
            "m.status",
        )
    } else {
        ("subscriptions s", "s.status")
    };
    if selection.pattern.is_some() {
        let n = parameter();
        conditions.push(format!("(s.email ILIKE ${n} OR s.name ILIKE ${n})"));
    }
    if selection.status.is_some() {
        conditions.push(format!("{status} = ${}", parameter()));
    }
    if cursor {
        let (at, id) = (parameter(), parameter());
        conditions.push(format!("(s.subscribed_at, s.id) < (${at}, ${id})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", conditions.join(" AND "))
    };
    let shown_status = if selection.list.is_some() {
        "CASE m.status WHEN 'pending' THEN 'pending_confirmation' ELSE m.status END"
    } else {
        "s.status"
    };
    format!(
        "SELECT s.id, s.email, s.name, {shown_status} AS status, s.subscribed_at, \
         s.confirmed_at, s.attributes FROM {from} \
         {filter}ORDER BY s.subscribed_at DESC, s.id DESC LIMIT ${}",
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
    query.bind(limit).fetch_all(connection).await
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
    fn with_a_list_the_status_is_the_one_on_that_list() {
        let list = Uuid::new_v4();
        let on_list = Selection::parse("", "pending_confirmation", &list.to_string()).unwrap();
        assert_eq!(on_list.status, Some("pending"));
        assert_eq!(on_list.list(), Some(list));
        let statement = page_statement(&on_list, true);
        assert!(statement.contains("JOIN memberships m"), "{statement}");
        assert!(statement.contains("m.status = $2"), "{statement}");
        assert!(statement.contains("LIMIT $5"), "{statement}");
        assert!(!statement.contains("IS NULL"), "{statement}");
        assert_eq!(
            on_list.audited(),
            format!("list {list}, status pending, no search")
        );
    }

    #[test]
    fn without_a_list_no_membership_is_read() {
        let whole = Selection::parse("ada", "pending_confirmation", "").unwrap();
        assert_eq!(whole.status, Some("pending_confirmation"));
        let statement = page_statement(&whole, false);
        assert!(!statement.contains("memberships"), "{statement}");
        assert!(statement.contains("s.status = $2"), "{statement}");
    }
}
