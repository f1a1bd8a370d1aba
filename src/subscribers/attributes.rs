//! The subscribers' custom attributes: the definitions an admin edits (a
//! name and a [`Kind`]), and each subscriber's values, one JSON object per
//! subscriber (`subscriptions.attributes`) keyed by definition name.
//!
//! The schema checks names and kinds; what a value may be is checked here,
//! once, when it is parsed into a [`Value`] from what an admin typed. A
//! stored value is therefore always one its definition's kind allows: a
//! definition's kind changes only while no subscriber holds a value for it,
//! and deleting a definition removes its key from every subscriber.
//!
//! Values are personal data (a birthday, a company, a town): they go into
//! the subscriber's page, their export and the list's CSV file, and nowhere
//! else. Nothing here logs them, and the audit log names attributes, never
//! what they hold.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::UnwantedCharacter;

/// The most definitions an installation may have: every one is a field of
/// the subscriber's form and a column of the CSV file.
pub const MAX_DEFINITIONS: i64 = 100;

/// The longest text value, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// The largest magnitude of a number value. Beyond it a double no longer
/// holds every integer, and no count, amount or score needs more.
pub const MAX_NUMBER: f64 = 1e15;

/// What an attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Number,
    /// A calendar date, `YYYY-MM-DD`, without a time or zone.
    Date,
    Boolean,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Text, Kind::Number, Kind::Date, Kind::Boolean];

    /// As stored in `attribute_definitions.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Number => "number",
            Kind::Date => "date",
            Kind::Boolean => "boolean",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == raw)
    }

    /// How the pages say it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Text => "Text",
            Kind::Number => "Number",
            Kind::Date => "Date",
            Kind::Boolean => "Yes or no",
        }
    }
}

/// A definition's name: a key of the JSON object and a column of the CSV
/// file. Lower-case ASCII letters, digits and underscores, starting with a
/// letter, at most 63 characters (the schema checks the same).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttributeName(String);

impl AttributeName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("Give the attribute a name.".into());
        }
        if raw.chars().count() > 63 {
            return Err("A name has at most 63 characters.".into());
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err("A name starts with a lower-case letter, a to z.".into());
        }
        let fits = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if !raw.chars().all(fits) {
            return Err(
                "A name holds only lower-case letters a to z, digits and underscores (`_`).".into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AttributeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attribute as defined.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub kind: Kind,
    pub created_at: DateTime<Utc>,
}

type DefinitionRow = (String, String, DateTime<Utc>);

fn definition((name, kind, created_at): DefinitionRow) -> Result<Definition, sqlx::Error> {
    // The schema allows no other kind: one would be a newer release's.
    let kind = Kind::parse(&kind).ok_or_else(|| {
        sqlx::Error::Decode(format!("attribute {name} has the unknown kind {kind}").into())
    })?;
    Ok(Definition {
        name,
        kind,
        created_at,
    })
}

/// Every definition, in name order (the order of the form's fields and of
/// the CSV file's columns).
pub async fn definitions(connection: &mut PgConnection) -> Result<Vec<Definition>, sqlx::Error> {
    let rows: Vec<DefinitionRow> =
        sqlx::query_as("SELECT name, kind, created_at FROM attribute_definitions ORDER BY name")
            .fetch_all(connection)
            .await?;
    rows.into_iter().map(definition).collect()
}

/// Like [`definitions`], and keeps them from being deleted or changed until
/// the transaction ends: values written meanwhile are checked against
/// definitions that still hold when they commit. (A definition deleted
/// first is simply not returned.)
async fn definitions_held(connection: &mut PgConnection) -> Result<Vec<Definition>, sqlx::Error> {
    let rows: Vec<DefinitionRow> = sqlx::query_as(
        "SELECT name, kind, created_at FROM attribute_definitions ORDER BY name FOR SHARE",
    )
    .fetch_all(connection)
    .await?;
    rows.into_iter().map(definition).collect()
}

/// Why a definition could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("An attribute is already called that.")]
    NameTaken,
    #[error("There are {MAX_DEFINITIONS} attributes already: delete one first.")]
    TooMany,
    #[error(
        "{0} subscribers hold a value for this attribute: its kind cannot change while any \
         does. Delete the attribute (and its values) and define it again instead."
    )]
    ValuesHeld(i64),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create(
    connection: &mut PgConnection,
    name: &AttributeName,
    kind: Kind,
) -> Result<Definition, DefinitionError> {
    // A count, not a lock: two admins adding the 100th at the same moment
    // make 101, which harms nobody.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM attribute_definitions")
        .fetch_one(&mut *connection)
        .await?;
    if count >= MAX_DEFINITIONS {
        return Err(DefinitionError::TooMany);
    }
    let row: Option<DefinitionRow> = sqlx::query_as(
        "INSERT INTO attribute_definitions (name, kind) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING name, kind, created_at",
    )
    .bind(name.as_str())
    .bind(kind.as_str())
    .fetch_optional(connection)
    .await?;
    Ok(definition(row.ok_or(DefinitionError::NameTaken)?)?)
}

/// Changes the kind of a definition, refused while any subscriber holds a
/// value for it (a stored value always fits its kind). `None` when no
/// definition has the name.
pub async fn change_kind(
    connection: &mut PgConnection,
    name: &AttributeName,
    kind: Kind,
) -> Result<Option<Definition>, DefinitionError> {
    // The row lock first: a subscriber's values being written now hold the
    // definition (`FOR SHARE`) until they commit, and are counted below.
    let held: Option<DefinitionRow> = sqlx::query_as(
        "SELECT name, kind, created_at FROM attribute_definitions WHERE name = $1 FOR UPDATE",
    )
    .bind(name.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(current) = held.map(definition).transpose()? else {
        return Ok(None);
    };
    if current.kind == kind {
        return Ok(Some(current));
    }
    let holding: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE attributes ? $1")
            .bind(name.as_str())
            .fetch_one(&mut *connection)
            .await?;
    if holding > 0 {
        return Err(DefinitionError::ValuesHeld(holding));
    }
    let row: DefinitionRow = sqlx::query_as(
        "UPDATE attribute_definitions SET kind = $2 WHERE name = $1 \
         RETURNING name, kind, created_at",
    )
    .bind(name.as_str())
    .bind(kind.as_str())
    .fetch_one(connection)
    .await?;
    Ok(Some(definition(row)?))
}

/// Deletes the definition and every subscriber's value for it. Returns how
/// many subscribers held one, or `None` when no definition has the name.
pub async fn delete(
    connection: &mut PgConnection,
    name: &AttributeName,
) -> Result<Option<u64>, sqlx::Error> {
    // The definition first: its row lock makes values being written for it
    // now commit before the update below reads the table (it then sees and
    // clears them), and values written after find no definition.
    let deleted = sqlx::query("DELETE FROM attribute_definitions WHERE name = $1")
        .bind(name.as_str())
        .execute(&mut *connection)
        .await?;
    if deleted.rows_affected() == 0 {
        return Ok(None);
    }
    // One statement for every holder. It rewrites each row that holds the
    // key (a new version of the row, as any UPDATE of Postgres writes, and
    // a row lock until commit), and only those: the `?` filter leaves the
    // rest untouched. It reads the whole table to find them, since no
    // index covers the attributes.
    let cleared = sqlx::query(
        "UPDATE subscriptions SET attributes = attributes - $1::text WHERE attributes ? $1",
    )
    .bind(name.as_str())
    .execute(connection)
    .await?;
    Ok(Some(cleared.rows_affected()))
}

/// A value, of one of the kinds, as parsed from what an admin typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    /// Finite, within ±[`MAX_NUMBER`].
    Number(f64),
    /// In the years 1 to 9999.
    Date(NaiveDate),
    Boolean(bool),
}

impl Value {
    /// Parses the text of a form's field as a value of `kind`; the reason a
    /// person can read when it is not one. Surrounding spaces do not count;
    /// an empty field is no value, which the caller decides about.
    pub fn parse(kind: Kind, raw: &str) -> Result<Value, String> {
        let raw = raw.trim();
        match kind {
            Kind::Text => parse_text(raw),
            Kind::Number => parse_number(raw),
            Kind::Date => parse_date(raw),
            Kind::Boolean => match raw {
                "true" | "yes" => Ok(Value::Boolean(true)),
                "false" | "no" => Ok(Value::Boolean(false)),
                _ => Err("Choose yes or no.".into()),
            },
        }
    }

    /// As stored in the subscriber's JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Text(text) => serde_json::Value::String(text.clone()),
            Value::Number(number) => serde_json::Number::from_f64(*number)
                .map(serde_json::Value::Number)
                // Unreachable: parsing kept only finite numbers.
                .unwrap_or(serde_json::Value::Null),
            Value::Date(date) => serde_json::Value::String(date.format("%Y-%m-%d").to_string()),
            Value::Boolean(yes) => serde_json::Value::Bool(*yes),
        }
    }
}

fn parse_text(raw: &str) -> Result<Value, String> {
    // Browsers send a text area's line breaks as CR LF.
    let text = raw.replace("\r\n", "\n");
    let count = text.chars().count();
    if count > MAX_TEXT_CHARS {
        return Err(format!(
            "At most {MAX_TEXT_CHARS} characters: this is {count}."
        ));
    }
    // Tabs and line breaks have a reason to be there (an address, a note);
    // no other control or invisible character has.
    if let Some(unwanted) = text
        .split(['\t', '\n'])
        .find_map(UnwantedCharacter::find_in)
    {
        return Err(format!("The text must not contain {unwanted}."));
    }
    Ok(Value::Text(text))
}

fn parse_number(raw: &str) -> Result<Value, String> {
    // Rust's parser also reads "inf", "NaN" and "infinity": none is a
    // number a person means here, and JSON has none of them.
    let looks_numeric = !raw.is_empty()
        && raw
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'));
    let number: f64 = looks_numeric
        .then(|| raw.parse().ok())
        .flatten()
        .ok_or_else(|| "Type a number, such as 42 or -3.5.".to_owned())?;
    if !number.is_finite() || number.abs() > MAX_NUMBER {
        return Err("A number between -1000000000000000 and 1000000000000000 (10¹⁵).".into());
    }
    // -0 prints as "-0": the same number as 0, stored as 0.
    Ok(Value::Number(if number == 0.0 { 0.0 } else { number }))
}

fn parse_date(raw: &str) -> Result<Value, String> {
    let malformed = || "A date as YYYY-MM-DD, such as 2024-02-29.".to_owned();
    let bytes = raw.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return Err(malformed());
    }
    let field = |range: std::ops::Range<usize>| raw[range].parse::<u32>().map_err(|_| malformed());
    let (year, month, day) = (field(0..4)?, field(5..7)?, field(8..10)?);
    if year == 0 {
        return Err("The year is 1 or later.".into());
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| format!("{raw} is not a day of the calendar."))?;
    debug_assert!((1..=9999).contains(&date.year()));
    Ok(Value::Date(date))
}

/// A stored value as text, for the subscriber's form and the CSV file:
/// what typing it into the form again stores unchanged.
pub fn display(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Bool(yes) => yes.to_string(),
        // Shown as Rust prints a double: never with an exponent, which
        // `MAX_NUMBER` keeps short.
        serde_json::Value::Number(number) => match number.as_f64() {
            Some(number) => number.to_string(),
            None => number.to_string(),
        },
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A subscriber's values, keyed by attribute name.
pub type Values = BTreeMap<String, serde_json::Value>;

/// The subscriber's values; `None` when no subscriber has the id.
pub async fn of_subscriber(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
) -> Result<Option<Values>, sqlx::Error> {
    let values: Option<sqlx::types::Json<Values>> =
        sqlx::query_scalar("SELECT attributes FROM subscriptions WHERE id = $1")
            .bind(subscriber_id)
            .fetch_optional(connection)
            .await?;
    Ok(values.map(|json| json.0))
}

/// What an admin's form asks to change about a subscriber's values: each
/// attribute it names set to a value or removed. Attributes it does not
/// name keep theirs.
#[derive(Debug, Default)]
pub struct Changes {
    set: BTreeMap<AttributeName, Value>,
    removed: Vec<AttributeName>,
}

impl Changes {
    /// The names of the attributes set and removed (for the audit log:
    /// never the values).
    pub fn summary(&self) -> String {
        let names = |names: Vec<&str>| names.join(", ");
        let set = names(self.set.keys().map(AttributeName::as_str).collect());
        let removed = names(self.removed.iter().map(AttributeName::as_str).collect());
        match (set.is_empty(), removed.is_empty()) {
            (true, true) => "nothing changed".into(),
            (false, true) => format!("set {set}"),
            (true, false) => format!("removed {removed}"),
            (false, false) => format!("set {set}; removed {removed}"),
        }
    }
}

/// Why a field of the form was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The attribute's name, as the form sent it.
    pub name: String,
    pub reason: String,
}

/// Reads a form's `(attribute name, text)` pairs against the definitions:
/// an empty field removes the value; any other is parsed for its
/// attribute's kind. Every refused field is reported, with its reason.
pub fn parse_changes(
    definitions: &[Definition],
    fields: &[(String, String)],
) -> Result<Changes, Vec<FieldError>> {
    let mut changes = Changes::default();
    let mut errors = Vec::new();
    for (name, raw) in fields {
        let refuse = |reason: String| FieldError {
            name: name.clone(),
            reason,
        };
        let Some(definition) = definitions.iter().find(|d| &d.name == name) else {
            errors.push(refuse(
                "There is no such attribute (it may have been deleted meanwhile).".into(),
            ));
            continue;
        };
        let name = AttributeName(definition.name.clone());
        if changes.set.contains_key(&name) || changes.removed.contains(&name) {
            errors.push(refuse("The form holds this attribute twice.".into()));
            continue;
        }
        if raw.trim().is_empty() {
            changes.removed.push(name);
            continue;
        }
        match Value::parse(definition.kind, raw) {
            Ok(value) => {
                changes.set.insert(name, value);
            }
            Err(reason) => errors.push(refuse(reason)),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// How writing a subscriber's values went.
#[derive(Debug)]
pub enum Written {
    /// Written; what changed.
    Done(Changes),
    /// The form no longer fits the definitions (one was deleted or changed
    /// since the page was read): nothing was written.
    Refused(Vec<FieldError>),
    /// No subscriber has the id.
    Missing,
}

/// Checks the form's fields against the definitions as they are now, and
/// writes the subscriber's values, in the caller's transaction. The
/// definitions stay as read until it ends ([`definitions_held`]).
pub async fn set(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    fields: &[(String, String)],
) -> Result<Written, sqlx::Error> {
    let definitions = definitions_held(&mut *connection).await?;
    let changes = match parse_changes(&definitions, fields) {
        Ok(changes) => changes,
        Err(errors) => return Ok(Written::Refused(errors)),
    };
    let set: serde_json::Map<String, serde_json::Value> = changes
        .set
        .iter()
        .map(|(name, value)| (name.0.clone(), value.to_json()))
        .collect();
    let removed: Vec<&str> = changes.removed.iter().map(AttributeName::as_str).collect();
    let updated = sqlx::query(
        "UPDATE subscriptions SET attributes = (attributes - $2::text[]) || $3::jsonb \
         WHERE id = $1",
    )
    .bind(subscriber_id)
    .bind(&removed)
    .bind(serde_json::Value::Object(set).to_string())
    .execute(connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(Written::Missing);
    }
    Ok(Written::Done(changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_letters_digits_and_underscores_starting_with_a_letter() {
        for good in ["a", "city", "plan_2024", &"a".repeat(63)] {
            assert!(AttributeName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "City",
            "2nd",
            "_x",
            "first name",
            "naïve",
            "a-b",
            "a\0",
            "x'; DROP TABLE subscriptions; --",
            &"a".repeat(64),
        ] {
            assert!(AttributeName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_finite_and_within_ten_to_the_fifteen() {
        assert_eq!(Value::parse(Kind::Number, " 42 "), Ok(Value::Number(42.0)));
        assert_eq!(Value::parse(Kind::Number, "-3.5"), Ok(Value::Number(-3.5)));
        assert_eq!(Value::parse(Kind::Number, "1e15"), Ok(Value::Number(1e15)));
        assert_eq!(Value::parse(Kind::Number, "-0"), Ok(Value::Number(0.0)));
        for bad in [
            "",
            "1e400",
            "-1e400",
            "NaN",
            "nan",
            "inf",
            "-infinity",
            "1e16",
            "12abc",
            "1,5",
            "0x10",
            "١٢",
        ] {
            assert!(Value::parse(Kind::Number, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_days_of_the_calendar_in_years_1_to_9999() {
        let day = |y, m, d| Ok(Value::Date(NaiveDate::from_ymd_opt(y, m, d).unwrap()));
        assert_eq!(Value::parse(Kind::Date, "2024-02-29"), day(2024, 2, 29));
        assert_eq!(Value::parse(Kind::Date, "0001-01-01"), day(1, 1, 1));
        assert_eq!(Value::parse(Kind::Date, "9999-12-31"), day(9999, 12, 31));
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "0000-01-01",
            "10000-01-01",
            "2024-1-5",
            "2024/01/05",
            "+2024-01-05",
            "2024-13-01",
            "",
        ] {
            assert!(Value::parse(Kind::Date, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_keeps_tabs_and_line_breaks_and_refuses_other_control_characters() {
        assert_eq!(
            Value::parse(Kind::Text, "a\tb\r\nc"),
            Ok(Value::Text("a\tb\nc".into()))
        );
        for bad in ["a\0b", "a\rb", "a\u{1B}b", "a\u{202E}b"] {
            assert!(Value::parse(Kind::Text, bad).is_err(), "{bad:?}");
        }
        assert!(Value::parse(Kind::Text, &"é".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(Value::parse(Kind::Text, &"é".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }

    #[test]
    fn a_stored_value_displays_as_the_text_that_stores_it_again() {
        for (kind, typed) in [
            (Kind::Number, "42"),
            (Kind::Number, "-3.5"),
            (Kind::Number, "1000000000000000"),
            (Kind::Date, "2024-02-29"),
            (Kind::Boolean, "true"),
            (Kind::Text, "Ada \"Countess\" Lovelace"),
        ] {
            let value = Value::parse(kind, typed).unwrap();
            // Through JSON text, as Postgres hands it back.
            let stored: serde_json::Value =
                serde_json::from_str(&value.to_json().to_string()).unwrap();
            assert_eq!(display(&stored), typed, "{kind:?}");
        }
    }

    #[test]
    fn a_form_with_unknown_attributes_or_bad_values_is_refused_field_by_field() {
        let definitions = [
            Definition {
                name: "age".into(),
                kind: Kind::Number,
                created_at: Utc::now(),
            },
            Definition {
                name: "city".into(),
                kind: Kind::Text,
                created_at: Utc::now(),
            },
        ];
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let changes =
            parse_changes(&definitions, &fields(&[("age", "42"), ("city", " ")])).expect("valid");
        assert_eq!(changes.summary(), "set age; removed city");
        let errors =
            parse_changes(&definitions, &fields(&[("age", "NaN"), ("shoe", "44")])).unwrap_err();
        let names: Vec<&str> = errors.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["age", "shoe"]);
    }
}
