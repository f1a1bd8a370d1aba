//! Who is on which list, with a status per list: pending until the reader
//! confirms, confirmed, or unsubscribed from that list.
//!
//! A subscriber's own status (`subscriptions.status`) stays what it was
//! before lists: whether the address is confirmed, and whether its owner
//! left everything. The memberships follow it (see the migration that made
//! them): one confirmation confirms every list the reader chose, and
//! leaving everything leaves every list.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A reader asking to be on a list.
#[derive(Debug, Clone, Copy)]
pub struct Join {
    pub subscriber_id: Uuid,
    /// `None`: the default list.
    pub list_id: Option<Uuid>,
    /// Whether the reader's address is confirmed already: then a list
    /// without double opt-in takes them at once.
    pub address_confirmed: bool,
}

/// Puts readers on lists. A membership that is confirmed stays as it is;
/// one that is new or pending becomes pending, or confirmed when the
/// address is confirmed and the list does not ask for a second
/// confirmation. One they left becomes pending whatever the list asks:
/// anyone can type an address into the form, and coming back to a list is
/// a new consent, given by the link. Archived lists take no one. Returns
/// what changed: the memberships left pending, which need a confirmation
/// email naming them, and those confirmed at once, which are owed their
/// list's welcome.
pub async fn join(connection: &mut PgConnection, joins: &[Join]) -> Result<Joined, sqlx::Error> {
    // One row per (reader, list): an upsert may not touch a row twice, and
    // one batch can hold the same address twice.
    let mut wanted: HashMap<(Uuid, Option<Uuid>), bool> = HashMap::new();
    for join in joins {
        wanted
            .entry((join.subscriber_id, join.list_id))
            .and_modify(|confirmed| *confirmed &= join.address_confirmed)
            .or_insert(join.address_confirmed);
    }
    let mut rows: Vec<_> = wanted.into_iter().collect();
    // In one order, so that two batches wait for each other instead of
    // deadlocking.
    rows.sort_by_key(|((subscriber, list), _)| (*subscriber, *list));
    let subscribers: Vec<Uuid> = rows.iter().map(|((s, _), _)| *s).collect();
    let lists: Vec<Option<Uuid>> = rows.iter().map(|((_, l), _)| *l).collect();
    let confirmed: Vec<bool> = rows.iter().map(|(_, c)| *c).collect();
    let changed: Vec<(Uuid, Uuid, bool, bool)> = sqlx::query_as(
        "WITH wanted AS ( \
             SELECT DISTINCT ON (w.subscriber_id, l.id) \
                    w.subscriber_id, l.id AS list_id, \
                    w.confirmed AND NOT l.double_opt_in AS at_once \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::bool[]) \
                  AS w (subscriber_id, list_id, confirmed) \
             JOIN lists l ON l.id = w.list_id OR (w.list_id IS NULL AND l.is_default) \
             WHERE l.archived_at IS NULL \
             ORDER BY w.subscriber_id, l.id, w.confirmed \
         ) \
         INSERT INTO memberships AS m (list_id, subscriber_id, status, confirmed_at) \
         SELECT list_id, subscriber_id, \
                CASE WHEN at_once THEN 'confirmed' ELSE 'pending' END, \
                CASE WHEN at_once THEN now() END \
         FROM wanted ORDER BY subscriber_id, list_id \
         ON CONFLICT (list_id, subscriber_id) DO UPDATE \
         SET status = CASE WHEN m.status = 'unsubscribed' THEN 'pending' \
                           ELSE EXCLUDED.status END, \
             confirmed_at = CASE WHEN m.status = 'unsubscribed' THEN m.confirmed_at \
                                 ELSE COALESCE(EXCLUDED.confirmed_at, m.confirmed_at) END, \
             unsubscribed_at = NULL \
         WHERE m.status <> 'confirmed' \
         RETURNING m.subscriber_id, m.list_id, m.status = 'confirmed', \
                   m.list_id = (SELECT id FROM lists WHERE is_default)",
    )
    .bind(&subscribers)
    .bind(&lists)
    .bind(&confirmed)
    .fetch_all(connection)
    .await?;
    let mut joined = Joined::default();
    for (subscriber_id, list_id, confirmed, is_default) in changed {
        if confirmed {
            joined.confirmed.push((subscriber_id, list_id));
        } else {
            joined.pending.push(Pending {
                subscriber_id,
                list_id,
                is_default,
            });
        }
    }
    Ok(joined)
}

/// Puts a reader whose consent an admin attests on `lists` (none: the
/// default list), confirmed whatever the lists ask, as an attested import
/// does; archived lists take no one, and a list they are on already keeps
/// them as they are. Returns the lists they joined, which owe them their
/// welcome.
pub async fn add_attested(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    lists: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO memberships (list_id, subscriber_id, status, confirmed_at) \
         SELECT l.id, $1, 'confirmed', now() FROM lists l \
         WHERE l.archived_at IS NULL \
           AND (l.id = ANY($2) OR (cardinality($2) = 0 AND l.is_default)) \
         ORDER BY l.id \
         ON CONFLICT (list_id, subscriber_id) DO NOTHING \
         RETURNING list_id",
    )
    .bind(subscriber_id)
    .bind(lists)
    .fetch_all(connection)
    .await
}

/// What [`join`] changed.
#[derive(Debug, Default)]
pub struct Joined {
    /// Memberships now pending: each waits for a confirmation link.
    pub pending: Vec<Pending>,
    /// (subscriber, list) confirmed at once: a confirmed address joining
    /// a list without double opt-in.
    pub confirmed: Vec<(Uuid, Uuid)>,
}

/// A membership left pending by [`join`].
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    pub subscriber_id: Uuid,
    pub list_id: Uuid,
    /// Whether it is the default list: where a sign-up naming no list went.
    pub is_default: bool,
}

impl Joined {
    /// The readers left with a pending membership: they need a
    /// confirmation email.
    pub fn pending_readers(&self) -> HashSet<Uuid> {
        self.pending.iter().map(|p| p.subscriber_id).collect()
    }

    /// The lists `subscriber_id` is now pending on among those a sign-up
    /// chose (`chosen`; empty means the default list): what its
    /// confirmation link is for.
    pub fn pending_lists(&self, subscriber_id: Uuid, chosen: &[Uuid]) -> Vec<Uuid> {
        self.pending
            .iter()
            .filter(|p| p.subscriber_id == subscriber_id)
            .filter(|p| {
                if chosen.is_empty() {
                    p.is_default
                } else {
                    chosen.contains(&p.list_id)
                }
            })
            .map(|p| p.list_id)
            .collect()
    }
}

/// Confirms the lists a confirmation link was issued for, where the reader
/// is still pending on them; `None` (a link from the release before links
/// named their lists) confirms every list they are pending on. Returns the
/// lists it confirmed, which are owed their welcome.
pub async fn confirm_pending(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    lists: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE memberships SET status = 'confirmed', confirmed_at = now() \
         WHERE subscriber_id = $1 AND status = 'pending' \
           AND ($2::uuid[] IS NULL OR list_id = ANY($2)) \
         RETURNING list_id",
    )
    .bind(subscriber_id)
    .bind(lists)
    .fetch_all(connection)
    .await
}

/// A reader's place on one list, with the list's name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Membership {
    pub list_id: Uuid,
    pub list_name: String,
    pub status: String,
    pub joined_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// The lists a reader is on or was on, by list name.
pub async fn of_subscriber(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Vec<Membership>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.list_id, l.name AS list_name, m.status, m.joined_at, m.confirmed_at, \
                m.unsubscribed_at \
         FROM memberships m JOIN lists l ON l.id = m.list_id \
         WHERE m.subscriber_id = $1 \
         ORDER BY lower(l.name), l.id",
    )
    .bind(subscriber_id)
    .fetch_all(connection)
    .await
}

/// A list as the reader's own page of lists shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Choice {
    pub list_id: Uuid,
    pub name: String,
    pub description: String,
    /// Their status on it, if they were ever on it.
    pub status: Option<String>,
    /// Whether they may join it from the page: public and not archived. A
    /// private or archived list they are on, they may only leave.
    pub open: bool,
}

impl Choice {
    /// Whether the reader receives what this list sends.
    pub fn is_on(&self) -> bool {
        matches!(self.status.as_deref(), Some("pending" | "confirmed"))
    }
}

/// The lists a reader may choose on their page: every public, live list,
/// and every list they are or were on. Default list first, then by name.
pub async fn choices(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Vec<Choice>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.id AS list_id, l.name, l.description, m.status, \
                l.public AND l.archived_at IS NULL AS open \
         FROM lists l \
         LEFT JOIN memberships m ON m.list_id = l.id AND m.subscriber_id = $1 \
         WHERE (l.public AND l.archived_at IS NULL) OR m.subscriber_id IS NOT NULL \
         ORDER BY l.is_default DESC, lower(l.name), l.id",
    )
    .bind(subscriber_id)
    .fetch_all(connection)
    .await
}

/// Makes a confirmed reader's lists what they chose on their page: each
/// open list in `chosen` they are not on, they join, confirmed (the link
/// that opened the page went to their address, which proves it is
/// theirs); each list they are on and did not choose, they leave.
pub async fn choose(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    chosen: &[Uuid],
) -> Result<Chose, sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = now() \
         WHERE subscriber_id = $1 AND status <> 'unsubscribed' AND NOT (list_id = ANY($2))",
    )
    .bind(subscriber_id)
    .bind(chosen)
    .execute(&mut *connection)
    .await?;
    let joined: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO memberships AS m (list_id, subscriber_id, status, confirmed_at) \
         SELECT l.id, $1, 'confirmed', now() FROM lists l \
         WHERE l.id = ANY($2) AND l.public AND l.archived_at IS NULL \
         ORDER BY l.id \
         ON CONFLICT (list_id, subscriber_id) DO UPDATE \
         SET status = 'confirmed', confirmed_at = COALESCE(m.confirmed_at, now()), \
             unsubscribed_at = NULL \
         WHERE m.status <> 'confirmed' \
         RETURNING m.list_id",
    )
    .bind(subscriber_id)
    .bind(chosen)
    .fetch_all(&mut *connection)
    .await?;
    let on: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM memberships \
         WHERE subscriber_id = $1 AND status IN ('pending', 'confirmed')",
    )
    .bind(subscriber_id)
    .fetch_one(connection)
    .await?;
    Ok(Chose { joined, on })
}

/// What [`choose`] changed.
#[derive(Debug)]
pub struct Chose {
    /// The lists they joined, confirmed: owed their welcome.
    pub joined: Vec<Uuid>,
    /// How many lists they are on afterwards.
    pub on: i64,
}

/// Takes the reader off `lists` (an issue's lists: what its one-click link
/// leaves). Returns how many lists they are still on.
pub async fn leave(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    lists: &[Uuid],
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = now() \
         WHERE subscriber_id = $1 AND list_id = ANY($2) AND status <> 'unsubscribed'",
    )
    .bind(subscriber_id)
    .bind(lists)
    .execute(&mut *connection)
    .await?;
    sqlx::query_scalar(
        "SELECT count(*) FROM memberships \
         WHERE subscriber_id = $1 AND status IN ('pending', 'confirmed')",
    )
    .bind(subscriber_id)
    .fetch_one(connection)
    .await
}

/// How many readers a list has, by their status on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListCounts {
    pub confirmed: i64,
    pub pending: i64,
    pub unsubscribed: i64,
}

/// The counts of every list that has a member; a list missing from the map
/// has none.
///
/// THE one place that reads the lists' counts: the lists page, a list's
/// page and anything else that shows them call this. They come from
/// `list_counts`, a ledger of deltas that triggers on `memberships` keep
/// as they change (see its migration), so reading them costs the same at
/// a million readers as at ten.
pub async fn counts_by_list(
    connection: &mut PgConnection,
) -> Result<HashMap<Uuid, ListCounts>, sqlx::Error> {
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT list_id, status, sum(n)::bigint FROM list_counts GROUP BY list_id, status",
    )
    .fetch_all(connection)
    .await?;
    let mut counts: HashMap<Uuid, ListCounts> = HashMap::new();
    for (list_id, status, count) in rows {
        let entry = counts.entry(list_id).or_default();
        match status.as_str() {
            "confirmed" => entry.confirmed = count,
            "pending" => entry.pending = count,
            "unsubscribed" => entry.unsubscribed = count,
            // The schema's check allows no other status.
            _ => {}
        }
    }
    Ok(counts)
}
