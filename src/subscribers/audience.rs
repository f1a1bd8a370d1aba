//! Who a campaign reaches, as SQL for the campaign ledger's statements.
//!
//! The ledger records an issue's audience as one `deliveries` row per
//! recipient, a million of them in statements of their own that must join
//! the subscribers and the suppression list as they run: asking here for
//! the rows and handing them back would be a round trip per chunk and lose
//! the plans the fan-out is benchmarked on. So this module owns the
//! definition of who is in an audience, who may still be mailed and who is
//! suppressed, each as a fixed subquery whose columns are documented here,
//! and the ledger composes it into its own statement. Postgres flattens
//! each subquery into the statement around it: the plans are those of the
//! joins written out in place.
//!
//! Every piece is fixed text (no input reaches it), so the statements built
//! from it are safe to run as they are.

use super::suppression;

/// Who an issue goes to. Built with [`Audience::confirmed_by`], so that a
/// narrower audience (lists, a segment) can come as further conditions
/// without changing the columns of [`Audience::sql`] or the statements that
/// select from it.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    confirmed_by: &'a str,
    /// An SQL expression of a `uuid[]` (a parameter of the caller's), when
    /// the issue goes to lists rather than to every confirmed subscriber.
    lists: Option<&'a str>,
    /// An SQL expression of the id the rows start after, for a caller that
    /// walks the audience in id order (recording it a chunk at a time).
    after: Option<&'a str>,
    /// A further condition on `subscriptions s`, SQL of the caller's.
    narrowed_by: Option<&'a str>,
}

impl<'a> Audience<'a> {
    /// Every confirmed subscriber who confirmed by `moment`: an SQL
    /// expression of the caller's own (the send time as a
    /// parameter, or `now()`), never input.
    pub fn confirmed_by(moment: &'a str) -> Self {
        Self {
            confirmed_by: moment,
            lists: None,
            after: None,
            narrowed_by: None,
        }
    }

    /// Narrowed to the confirmed readers of the lists `lists` holds (an
    /// SQL expression of a `uuid[]`, a parameter of the caller's, never
    /// input): a reader on several of them is in it once, since the lists
    /// are a condition on the subscriber, not a join. A statement of its
    /// own, not a guard on a NULL parameter: a cached generic plan of one
    /// statement for both shapes would plan both the same.
    pub fn on_lists(self, lists: &'a str) -> Self {
        Self {
            lists: Some(lists),
            ..self
        }
    }

    /// Narrowed further by `condition` on `subscriptions s`: SQL of the
    /// caller's (a segment's filter, compiled with its values bound), or a
    /// marker where the caller puts it.
    pub fn narrowed_by(self, condition: &'a str) -> Self {
        Self {
            narrowed_by: Some(condition),
            ..self
        }
    }

    /// Says that the caller reads only subscribers after the id `after`
    /// (an SQL expression of the caller's): the lists' condition starts
    /// there too. Without it, Postgres may join the memberships from their
    /// first subscriber on every chunk of a recording, which grows with
    /// each chunk (375 ms a chunk half way through a million).
    pub fn after(self, after: &'a str) -> Self {
        Self {
            after: Some(after),
            ..self
        }
    }

    /// The audience as a subquery of `(id, suppressed, suppressed_email)`
    /// rows: `id` the subscriber's, `suppressed` the reason their address
    /// is on the suppression list and `suppressed_email` the listed
    /// address, both NULL when it is not listed. The suppressed are in it:
    /// recording marks their deliveries skipped, with the reason; a count
    /// of who would be mailed leaves them out (on `suppressed_email`, the
    /// join's own column, which Postgres reads as an anti-join).
    ///
    /// Recording an audience and counting it select from this one text, so
    /// that the number the publish button asks about cannot drift from the
    /// audience recorded. Subscribers who confirmed before `confirmed_at`
    /// existed have none, and are in it. Postgres flattens the subquery
    /// into each statement, so the recorder still walks the primary key in
    /// id order and stops at its chunk's end. The suppression list is
    /// joined on the address in lower case, which its unique index on
    /// `email` answers one lookup per subscriber.
    pub fn sql(&self) -> String {
        format!(
            "SELECT s.id, sup.reason AS suppressed, sup.email AS suppressed_email \
             FROM subscriptions s \
             {listed} \
             WHERE s.status = 'confirmed' \
               AND (s.confirmed_at IS NULL OR s.confirmed_at <= {confirmed_by}){on_lists}{narrowed}",
            listed = suppression::entry_join_sql("s.email"),
            confirmed_by = self.confirmed_by,
            narrowed = self
                .narrowed_by
                .map_or_else(String::new, |condition| format!(" AND {condition}")),
            on_lists = self.lists.map_or_else(String::new, |lists| format!(
                " AND EXISTS (SELECT 1 FROM memberships m \
                              WHERE m.list_id = ANY({lists}) AND m.subscriber_id = s.id \
                                AND m.status = 'confirmed'{after})",
                after = self.after.map_or_else(String::new, |after| format!(
                    " AND m.subscriber_id > {after}"
                )),
            )),
        )
    }
}

/// Whether `s` is still on the lists `lists` holds (an SQL expression of
/// a `uuid[]` of the caller's, never input; NULL for an issue to every
/// list): a confirmed membership of at least one of them. A reader who
/// left an issue's lists while it was sending is no longer in its audience,
/// though still confirmed on others.
fn on_lists_sql(lists: &str) -> String {
    format!(
        "({lists} IS NULL OR EXISTS (SELECT 1 FROM memberships m \
             WHERE m.subscriber_id = s.id AND m.status = 'confirmed' \
               AND m.list_id = ANY({lists})))"
    )
}

/// The subscribers a recorded delivery may still be sent to, as a subquery
/// of `(id, email, name)`: confirmed now (not unsubscribed or erased since
/// the audience was recorded), still on one of the issue's `lists` (see
/// [`on_lists_sql`]), and whose address is not on the suppression list.
/// Joined to the deliveries by `id`, a delivery whose subscriber is not in
/// it drops out.
pub fn reachable_sql(lists: &str) -> String {
    format!(
        "SELECT s.id, s.email, s.name FROM subscriptions s \
         WHERE s.status = 'confirmed' AND {on_lists} AND {not_listed}",
        on_lists = on_lists_sql(lists),
        not_listed = suppression::not_listed_sql("s.email"),
    )
}

/// Every subscriber as a recorded delivery may need to be told apart, as a
/// subquery of `(id, confirmed, on_lists, suppressed)`: `confirmed` whether
/// they are confirmed now, `on_lists` whether they are still on one of the
/// issue's `lists` ([`on_lists_sql`]), `suppressed` the reason their
/// address is on the suppression list (NULL when it is not). Left-joined to
/// the deliveries by `id`, a NULL `id` is a subscriber erased since. The
/// statement that skips a batch's deliveries nobody should get tells from
/// it why.
pub fn standing_sql(lists: &str) -> String {
    format!(
        "SELECT s.id, s.status = 'confirmed' AS confirmed, {on_lists} AS on_lists, \
                sup.reason AS suppressed \
         FROM subscriptions s \
         {listed}",
        on_lists = on_lists_sql(lists),
        listed = suppression::entry_join_sql("s.email"),
    )
}

/// Every subscriber's address, as a subquery of `(id, email)`: what names
/// a recorded delivery's recipient. Left-joined by `id`, the address of an
/// erased subscriber is NULL.
pub const ADDRESSES_SQL: &str = "SELECT s.id, s.email FROM subscriptions s";

/// The two parts of [`held_sql`]: `join` goes in the FROM clause, `hold`
/// ends the SELECT.
pub struct Held {
    pub join: String,
    pub hold: &'static str,
}

/// SQL that joins to each row the subscriber whose id is in `subscriber_id`
/// (the caller's own SQL, never input) and holds that subscriber until the
/// statement's transaction ends. A row whose subscriber was erased drops
/// out, and an erasure that comes after waits for the commit: it deletes
/// the row, which a key share lock is enough to make wait, while
/// confirming or unsubscribing, which change no key, do not.
pub fn held_sql(subscriber_id: &str) -> Held {
    Held {
        join: format!("JOIN subscriptions s ON s.id = {subscriber_id}"),
        hold: "FOR KEY SHARE OF s",
    }
}
