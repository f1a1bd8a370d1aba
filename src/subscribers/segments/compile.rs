//! A checked [`Filter`] as an SQL predicate over `subscriptions s`, pushed
//! onto a [`QueryBuilder`]: the statement's text comes from fixed pieces
//! here, and every value, attribute names included, goes in as a bound
//! parameter. A filter's shape (which conditions, how grouped) makes its
//! statement; two filters of one shape share one, and Postgres plans it
//! the same way with or without the values (`plan_cache_mode =
//! force_generic_plan` is tested).
//!
//! An attribute's value is read from `s.attributes`, a JSON object whose
//! values the application checks against the definitions when it writes
//! them. A comparison still never trusts that: each one first asks
//! `jsonb_typeof` whether the value is of its kind, inside a `CASE` (whose
//! order Postgres keeps, unlike an `AND`'s), so a stray value makes the
//! condition false instead of making a cast fail the whole statement.
//!
//! A condition on a list reads another table, and which way is fast
//! depends on how many subscribers the statement reads ([`Walk`]): a
//! recorder reading a chunk of ids looks each one up, a count over
//! everyone hashes the list's members once.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::filter::{AttributeTest, Condition, DateOp, DayBound, Filter, NumberOp, TextOp};

/// How the statement a filter goes into reads `subscriptions s`, which
/// decides how a condition on a list reads `memberships`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// A range of ids at a time (recording an audience chunk by chunk): a
    /// list's condition looks each subscriber up in the memberships'
    /// primary key, a few microseconds per row read.
    ById,
    /// Every subscriber at once (a count): a list's condition is a set of
    /// members, which Postgres hashes once. Looked up row by row instead,
    /// inside an `OR` that it cannot turn into a join, a million
    /// subscribers took 25 s where the hashed set took 3 on a loaded
    /// machine. The caller gives the statement the `work_mem` the hash
    /// needs ([`super::store::count`]): without it, Postgres would scan the
    /// set for each row.
    Whole,
}

/// Pushes `filter` as one parenthesised predicate over `subscriptions s`,
/// for a statement that reads it as `walk` says.
pub fn push_filter(query: &mut QueryBuilder<Postgres>, filter: &Filter, walk: Walk) {
    match filter {
        Filter::All(filters) if filters.is_empty() => {
            query.push("TRUE");
        }
        // Parsing refuses an empty `any`; were one here, it matches nobody.
        Filter::Any(filters) if filters.is_empty() => {
            query.push("FALSE");
        }
        Filter::All(filters) => push_group(query, filters, " AND ", walk),
        Filter::Any(filters) => push_group(query, filters, " OR ", walk),
        Filter::Condition(condition) => push_condition(query, condition, walk),
    }
}

fn push_group(query: &mut QueryBuilder<Postgres>, filters: &[Filter], joiner: &str, walk: Walk) {
    query.push("(");
    for (i, filter) in filters.iter().enumerate() {
        if i > 0 {
            query.push(joiner);
        }
        push_filter(query, filter, walk);
    }
    query.push(")");
}

/// Who is in the audience of `lists` narrowed by `filter`: confirmed
/// subscribers with a confirmed membership of at least one of `lists`,
/// who match `filter`. One row per subscriber however many of the lists
/// they are on: the lists are a condition on the row, not a join.
///
/// The suppression list is the caller's to apply: [`super::count`] leaves
/// the suppressed out, and recording an issue's audience keeps them in to
/// mark their deliveries skipped. For a statement that reads every
/// subscriber at once ([`Walk::Whole`]): the lists, too, are a set.
pub fn push_audience(query: &mut QueryBuilder<Postgres>, filter: &Filter, lists: &[Uuid]) {
    query.push(
        "(s.status = 'confirmed' AND s.id IN (SELECT m.subscriber_id FROM memberships m \
         WHERE m.status = 'confirmed' AND m.list_id = ANY(",
    );
    query.push_bind(lists.to_vec());
    query.push(")) AND ");
    push_filter(query, filter, Walk::Whole);
    query.push(")");
}

fn push_condition(query: &mut QueryBuilder<Postgres>, condition: &Condition, walk: Walk) {
    match condition {
        Condition::OnList { list_id, status } => {
            query.push(match walk {
                Walk::ById => {
                    "EXISTS (SELECT 1 FROM memberships m \
                     WHERE m.subscriber_id = s.id AND m.list_id = "
                }
                Walk::Whole => {
                    "s.id IN (SELECT m.subscriber_id FROM memberships m WHERE m.list_id = "
                }
            });
            query.push_bind(*list_id);
            query.push(" AND m.status = ");
            query.push_bind(status.as_str());
            query.push(")");
        }
        Condition::FromImport(import_id) => {
            // The same two shapes as a list's: per id, a look-up in the
            // memberships' subscriber index; for everyone, the import's
            // memberships are one set to hash.
            query.push(match walk {
                Walk::ById => {
                    "EXISTS (SELECT 1 FROM memberships m \
                     WHERE m.subscriber_id = s.id AND m.import_id = "
                }
                Walk::Whole => {
                    "s.id IN (SELECT m.subscriber_id FROM memberships m WHERE m.import_id = "
                }
            });
            query.push_bind(*import_id);
            query.push(")");
        }
        Condition::SignedUp(bound) => push_day_bound(query, "s.subscribed_at", *bound),
        Condition::Confirmed(bound) => push_day_bound(query, "s.confirmed_at", *bound),
        Condition::Attribute { name, test } => push_attribute(query, name, test),
    }
}

/// The first moment of `day`, UTC.
fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// `column` is one of ours, never input.
fn push_day_bound(query: &mut QueryBuilder<Postgres>, column: &'static str, bound: DayBound) {
    match bound {
        DayBound::Before(day) => {
            query.push(format_args!("{column} < "));
            query.push_bind(start_of(day));
        }
        DayBound::After(day) => {
            // Parsing keeps years within 9999: there is a next day.
            let next = day.succ_opt().unwrap_or(day);
            query.push(format_args!("{column} >= "));
            query.push_bind(start_of(next));
        }
    }
}

/// `s.attributes -> $n`: the value as JSON.
fn push_json(query: &mut QueryBuilder<Postgres>, name: &str) {
    query.push("(s.attributes -> ");
    query.push_bind(name.to_owned());
    query.push(")");
}

/// `s.attributes ->> $n`: the value as text.
fn push_text(query: &mut QueryBuilder<Postgres>, name: &str) {
    query.push("(s.attributes ->> ");
    query.push_bind(name.to_owned());
    query.push(")");
}

/// `CASE WHEN jsonb_typeof(value) = '<json_type>' THEN <then> END`: NULL,
/// which a WHERE takes as false, unless the value is of that type.
fn push_guarded(
    query: &mut QueryBuilder<Postgres>,
    name: &str,
    json_type: &'static str,
    then: impl FnOnce(&mut QueryBuilder<Postgres>),
) {
    query.push("(CASE WHEN jsonb_typeof");
    push_json(query, name);
    query.push(format_args!(" = '{json_type}' THEN "));
    then(query);
    query.push(" END)");
}

fn push_attribute(query: &mut QueryBuilder<Postgres>, name: &str, test: &AttributeTest) {
    match test {
        AttributeTest::HasValue | AttributeTest::HasNoValue => {
            // A key that is missing and a JSON null both mean no value.
            query.push("(COALESCE(jsonb_typeof");
            push_json(query, name);
            let op = if matches!(test, AttributeTest::HasValue) {
                "<>"
            } else {
                "="
            };
            query.push(format_args!(", 'null') {op} 'null')"));
        }
        AttributeTest::Boolean(value) => {
            query.push("(");
            push_json(query, name);
            query.push(" = to_jsonb(");
            query.push_bind(*value);
            query.push("::boolean))");
        }
        AttributeTest::Text(TextOp::NotEquals, value) => {
            query.push("NOT COALESCE(");
            push_text_test(query, name, TextOp::Equals, value);
            query.push(", FALSE)");
        }
        AttributeTest::Text(op, value) => push_text_test(query, name, *op, value),
        AttributeTest::Number(NumberOp::NotEquals, value) => {
            query.push("NOT COALESCE(");
            push_number_test(query, name, NumberOp::Equals, *value);
            query.push(", FALSE)");
        }
        AttributeTest::Number(op, value) => push_number_test(query, name, *op, *value),
        AttributeTest::Date(op, day) => push_date_test(query, name, *op, *day),
    }
}

/// Both sides in lower case: text comparisons ignore letter case.
/// `strpos` and `starts_with` take the value as it is, with no wildcard to
/// escape.
fn push_text_test(query: &mut QueryBuilder<Postgres>, name: &str, op: TextOp, value: &str) {
    push_guarded(query, name, "string", |query| {
        let (before, between, after) = match op {
            TextOp::Equals | TextOp::NotEquals => ("lower", ") = lower(", ")"),
            TextOp::Contains => ("strpos(lower", "), lower(", ")) > 0"),
            TextOp::StartsWith => ("starts_with(lower", "), lower(", "))"),
        };
        query.push(format_args!("{before}("));
        push_text(query, name);
        query.push(between);
        query.push_bind(value.to_owned());
        query.push(after);
    });
}

fn push_number_test(query: &mut QueryBuilder<Postgres>, name: &str, op: NumberOp, value: f64) {
    let op = match op {
        NumberOp::Equals | NumberOp::NotEquals => "=",
        NumberOp::Less => "<",
        NumberOp::LessOrEqual => "<=",
        NumberOp::Greater => ">",
        NumberOp::GreaterOrEqual => ">=",
    };
    push_guarded(query, name, "number", |query| {
        // Any JSON number is a numeric, however large: the cast cannot fail.
        push_text(query, name);
        query.push(format_args!("::numeric {op} "));
        query.push_bind(value);
        query.push("::numeric");
    });
}

/// A date attribute is text `YYYY-MM-DD`, which sorts as the days do
/// byte by byte, and is compared as text (in the C collation, which sorts
/// bytes). A value of another shape matches no date condition; one of the
/// shape but no real day (`2026-02-30`) compares as its text, where a cast
/// to `date` would fail the whole statement.
fn push_date_test(query: &mut QueryBuilder<Postgres>, name: &str, op: DateOp, day: NaiveDate) {
    let op = match op {
        DateOp::Before => "<",
        DateOp::After => ">",
        DateOp::On => "=",
    };
    push_guarded(query, name, "string", |query| {
        query.push("CASE WHEN ");
        push_text(query, name);
        query.push(" ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' THEN ");
        push_text(query, name);
        query.push(format_args!(" COLLATE \"C\" {op} "));
        query.push_bind(day.format("%Y-%m-%d").to_string());
        query.push(" END");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscribers::segments::filter::MembershipStatus;

    fn sql(filter: &Filter) -> String {
        let mut query = QueryBuilder::new("");
        push_filter(&mut query, filter, Walk::ById);
        query.into_string()
    }

    #[test]
    fn no_value_reaches_the_statements_text() {
        let hostile = "'; DROP TABLE subscriptions; --";
        let filter = Filter::Any(vec![
            Filter::Condition(Condition::Attribute {
                name: "city".into(),
                test: AttributeTest::Text(TextOp::Contains, hostile.into()),
            }),
            Filter::Condition(Condition::Attribute {
                name: "age".into(),
                test: AttributeTest::Number(NumberOp::Greater, 123_456.0),
            }),
            Filter::Condition(Condition::OnList {
                list_id: Uuid::from_u128(7),
                status: MembershipStatus::Pending,
            }),
        ]);
        let text = sql(&filter);
        for value in [hostile, "city", "age", "123456", "pending", "00000007"] {
            assert!(!text.contains(value), "{value} is in {text}");
        }
        assert!(text.contains(" OR "), "{text}");
    }

    #[test]
    fn empty_groups_are_constants() {
        assert_eq!(sql(&Filter::All(vec![])), "TRUE");
        assert_eq!(sql(&Filter::Any(vec![])), "FALSE");
    }
}
