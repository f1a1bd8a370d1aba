//! What a segment's filter is: a tree of `all` (AND) and `any` (OR) groups
//! whose leaves are conditions on a subscriber (on a list, signed up or
//! confirmed before or after a day, an attribute compared with a value).
//!
//! It comes in two shapes. [`FilterSpec`] is the filter as JSON: what is
//! stored in `segments.filter`, what an admin may paste, what the form's
//! rows become. It is only shaped, not checked: it may name a list that is
//! gone, or compare a number attribute with a word. [`Filter`] is the
//! filter checked against the [`Catalogue`] of lists and attribute
//! definitions as they are now, with every value parsed by its kind; only
//! a `Filter` can be compiled to SQL, so nothing unchecked reaches a
//! statement. A saved spec is checked again each time it is used: the
//! catalogue may have changed since it was saved.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::UnwantedCharacter;

/// How deep groups may nest: enough for any audience a person can reason
/// about, and a bound on the statement a filter compiles to.
pub const MAX_DEPTH: usize = 5;
/// How many conditions a filter may hold, all groups together; groups are
/// bound by the same number.
pub const MAX_CONDITIONS: usize = 50;
/// The largest number a condition compares with, either side of zero:
/// every whole number up to it is exact as a double.
pub const MAX_NUMBER: f64 = 1e15;
/// The longest text a condition compares with, in characters.
pub const MAX_TEXT_CHARS: usize = 500;

/// A filter as JSON, externally tagged:
/// `{"all": [{"list": {"id": "…", "status": "confirmed"}},
/// {"attribute": {"name": "plan", "op": "eq", "value": "pro"}}]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FilterSpec {
    All(Vec<FilterSpec>),
    Any(Vec<FilterSpec>),
    /// On list `id`, with `status` (`confirmed` when left out).
    List {
        id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// Signed up before or after a day (UTC).
    SignedUp(DaySpec),
    /// Confirmed before or after a day (UTC).
    Confirmed(DaySpec),
    /// Has a membership that import `id` made.
    Import {
        id: Uuid,
    },
    /// Attribute `name` tested with `op`, against `value` when the
    /// operator takes one.
    Attribute {
        name: String,
        op: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<serde_json::Value>,
    },
}

/// `{"before": "2026-01-31"}` or `{"after": "2026-01-31"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DaySpec {
    Before(String),
    After(String),
}

impl FilterSpec {
    /// Reads a filter from JSON, as stored or as pasted.
    pub fn from_json(json: &str) -> Result<Self, FilterError> {
        serde_json::from_str(json).map_err(|e| FilterError::Unreadable(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a filter spec always serialises")
    }

    /// The same, indented for a text box.
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a filter spec always serialises")
    }
}

/// The kinds an attribute definition may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    Text,
    Number,
    Date,
    Boolean,
}

impl AttributeKind {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "text" => AttributeKind::Text,
            "number" => AttributeKind::Number,
            "date" => AttributeKind::Date,
            "boolean" => AttributeKind::Boolean,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttributeKind::Text => "text",
            AttributeKind::Number => "number",
            AttributeKind::Date => "date",
            AttributeKind::Boolean => "boolean",
        }
    }

    /// The operators that apply to an attribute of this kind.
    pub fn operators(self) -> &'static [&'static str] {
        match self {
            AttributeKind::Text => &[
                "eq",
                "ne",
                "contains",
                "starts_with",
                "has_value",
                "has_no_value",
            ],
            AttributeKind::Number => &[
                "eq",
                "ne",
                "lt",
                "le",
                "gt",
                "ge",
                "has_value",
                "has_no_value",
            ],
            AttributeKind::Date => &["before", "after", "on", "has_value", "has_no_value"],
            AttributeKind::Boolean => &["is_true", "is_false", "has_value", "has_no_value"],
        }
    }
}

/// What a filter may name: the lists and the attribute definitions as they
/// are now.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Every list, archived ones too (their readers are still on them), by
    /// id, with its name.
    pub lists: Vec<(Uuid, String)>,
    /// Every attribute definition: its name and kind.
    pub attributes: Vec<(String, AttributeKind)>,
    /// Every import, by id, with what names it (file, list, day). The
    /// imports module reads them and the caller passes them in: imports
    /// build on the subscriber store, not the other way round.
    pub imports: Vec<(Uuid, String)>,
}

impl Catalogue {
    fn has_list(&self, id: Uuid) -> bool {
        self.lists.iter().any(|(list, _)| *list == id)
    }

    fn has_import(&self, id: Uuid) -> bool {
        self.imports.iter().any(|(import, _)| *import == id)
    }

    fn attribute(&self, name: &str) -> Option<AttributeKind> {
        self.attributes
            .iter()
            .find(|(defined, _)| defined == name)
            .map(|(_, kind)| *kind)
    }

    /// The ids of every list.
    pub fn list_ids(&self) -> Vec<Uuid> {
        self.lists.iter().map(|(id, _)| *id).collect()
    }
}

/// A checked filter: every list and attribute it names existed when it was
/// parsed, every value is of its attribute's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every one of them (none: everyone).
    All(Vec<Filter>),
    /// At least one of them; never empty.
    Any(Vec<Filter>),
    Condition(Condition),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    OnList {
        list_id: Uuid,
        status: MembershipStatus,
    },
    SignedUp(DayBound),
    Confirmed(DayBound),
    /// Has a membership the import made (`memberships.import_id`).
    FromImport(Uuid),
    Attribute {
        name: String,
        test: AttributeTest,
    },
}

/// A membership's status, as `memberships.status` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipStatus {
    Pending,
    Confirmed,
    Unsubscribed,
}

impl MembershipStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MembershipStatus::Pending => "pending",
            MembershipStatus::Confirmed => "confirmed",
            MembershipStatus::Unsubscribed => "unsubscribed",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "pending" => MembershipStatus::Pending,
            "confirmed" => MembershipStatus::Confirmed,
            "unsubscribed" => MembershipStatus::Unsubscribed,
            _ => return None,
        })
    }
}

/// Before a day: earlier than its first moment. After a day: from the
/// first moment of the next one. The day itself is in neither (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayBound {
    Before(NaiveDate),
    After(NaiveDate),
}

/// An attribute's test, its value parsed by the attribute's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeTest {
    /// Text comparisons ignore letter case.
    Text(TextOp, String),
    Number(NumberOp, f64),
    Date(DateOp, NaiveDate),
    Boolean(bool),
    HasValue,
    HasNoValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Equals,
    /// Also true of a subscriber without a value.
    NotEquals,
    Contains,
    StartsWith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberOp {
    Equals,
    /// Also true of a subscriber without a value.
    NotEquals,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOp {
    Before,
    After,
    On,
}

/// Why a filter was refused, said so that the admin can fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("The filter could not be read as JSON: {0}")]
    Unreadable(String),
    #[error("Groups nest at most {MAX_DEPTH} deep.")]
    TooDeep,
    #[error("A filter holds at most {MAX_CONDITIONS} conditions and {MAX_CONDITIONS} groups.")]
    TooLarge,
    #[error("An `any` group needs at least one condition: with none it matches nobody.")]
    EmptyAny,
    #[error("No list has the id {0}.")]
    UnknownList(Uuid),
    #[error("No import has the id {0}.")]
    UnknownImport(Uuid),
    #[error("A list's status is confirmed, pending or unsubscribed.")]
    UnknownStatus,
    #[error(
        "An attribute's name is lower-case letters, digits and underscores, starting with a letter."
    )]
    MalformedAttributeName,
    #[error("No attribute is called `{0}`.")]
    UnknownAttribute(String),
    #[error("`{name}` is a {kind} attribute: its operators are {allowed}.", kind = kind.as_str(), allowed = kind.operators().join(", "))]
    WrongOperator { name: String, kind: AttributeKind },
    #[error("{0}")]
    BadValue(String),
    #[error("{what} contains {character}.")]
    Unwanted {
        what: String,
        character: UnwantedCharacter,
    },
}

/// The text of a value in a reason: short, and only once it is known to
/// hold nothing unwanted.
fn shown(text: &str) -> String {
    const SHOWN: usize = 40;
    if text.chars().count() <= SHOWN {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(SHOWN).collect::<String>())
    }
}

fn refuse_unwanted(what: impl FnOnce() -> String, text: &str) -> Result<(), FilterError> {
    match UnwantedCharacter::find_in(text) {
        Some(character) => Err(FilterError::Unwanted {
            what: what(),
            character,
        }),
        None => Ok(()),
    }
}

/// A day written `YYYY-MM-DD`, between the years 1 and 9999.
pub fn parse_day(raw: &str, what: &str) -> Result<NaiveDate, FilterError> {
    refuse_unwanted(|| what.to_owned(), raw)?;
    let raw = raw.trim();
    let bad = || {
        FilterError::BadValue(format!(
            "{what}: `{}` is not a day written YYYY-MM-DD.",
            shown(raw)
        ))
    };
    // Four digits, a dash, two, a dash, two: chrono alone would also take
    // `2026-1-5` or a year of five digits.
    let shaped = raw.len() == 10
        && raw.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !shaped {
        return Err(bad());
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| bad())
}

fn is_attribute_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

impl Filter {
    /// Checks `spec` against `catalogue`, parsing every value by its kind.
    pub fn parse(spec: &FilterSpec, catalogue: &Catalogue) -> Result<Self, FilterError> {
        let mut size = Size::default();
        parse_node(spec, catalogue, 0, &mut size)
    }

    /// The filter as JSON, values in their canonical form: what is stored.
    pub fn to_spec(&self) -> FilterSpec {
        match self {
            Filter::All(filters) => FilterSpec::All(filters.iter().map(Filter::to_spec).collect()),
            Filter::Any(filters) => FilterSpec::Any(filters.iter().map(Filter::to_spec).collect()),
            Filter::Condition(condition) => condition.to_spec(),
        }
    }
}

/// What has been read so far, against the limits.
#[derive(Default)]
struct Size {
    conditions: usize,
    groups: usize,
}

fn parse_node(
    spec: &FilterSpec,
    catalogue: &Catalogue,
    depth: usize,
    size: &mut Size,
) -> Result<Filter, FilterError> {
    let group = |filters: &[FilterSpec], size: &mut Size| {
        if depth + 1 > MAX_DEPTH {
            return Err(FilterError::TooDeep);
        }
        size.groups += 1;
        if size.groups > MAX_CONDITIONS {
            return Err(FilterError::TooLarge);
        }
        filters
            .iter()
            .map(|filter| parse_node(filter, catalogue, depth + 1, size))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match spec {
        FilterSpec::All(filters) => Filter::All(group(filters, size)?),
        FilterSpec::Any(filters) => {
            if filters.is_empty() {
                return Err(FilterError::EmptyAny);
            }
            Filter::Any(group(filters, size)?)
        }
        condition => {
            size.conditions += 1;
            if size.conditions > MAX_CONDITIONS {
                return Err(FilterError::TooLarge);
            }
            Filter::Condition(parse_condition(condition, catalogue)?)
        }
    })
}

fn parse_condition(spec: &FilterSpec, catalogue: &Catalogue) -> Result<Condition, FilterError> {
    Ok(match spec {
        FilterSpec::All(_) | FilterSpec::Any(_) => unreachable!("groups are parsed as groups"),
        FilterSpec::List { id, status } => {
            if !catalogue.has_list(*id) {
                return Err(FilterError::UnknownList(*id));
            }
            let status = match status.as_deref().map(str::trim) {
                None | Some("") => MembershipStatus::Confirmed,
                Some(raw) => MembershipStatus::parse(raw).ok_or(FilterError::UnknownStatus)?,
            };
            Condition::OnList {
                list_id: *id,
                status,
            }
        }
        FilterSpec::Import { id } => {
            if !catalogue.has_import(*id) {
                return Err(FilterError::UnknownImport(*id));
            }
            Condition::FromImport(*id)
        }
        FilterSpec::SignedUp(day) => Condition::SignedUp(parse_bound(day, "Signed up")?),
        FilterSpec::Confirmed(day) => Condition::Confirmed(parse_bound(day, "Confirmed")?),
        FilterSpec::Attribute { name, op, value } => {
            refuse_unwanted(|| "An attribute's name".into(), name)?;
            if !is_attribute_name(name) {
                return Err(FilterError::MalformedAttributeName);
            }
            let kind = catalogue
                .attribute(name)
                .ok_or_else(|| FilterError::UnknownAttribute(name.clone()))?;
            let test = parse_test(name, kind, op, value.as_ref())?;
            Condition::Attribute {
                name: name.clone(),
                test,
            }
        }
    })
}

fn parse_bound(day: &DaySpec, what: &str) -> Result<DayBound, FilterError> {
    Ok(match day {
        DaySpec::Before(raw) => DayBound::Before(parse_day(raw, what)?),
        DaySpec::After(raw) => DayBound::After(parse_day(raw, what)?),
    })
}

/// An empty string is no value: the form sends one for every row.
fn given(value: Option<&serde_json::Value>) -> Option<&serde_json::Value> {
    value.filter(|v| !v.is_null() && v.as_str() != Some(""))
}

fn parse_test(
    name: &str,
    kind: AttributeKind,
    op: &str,
    value: Option<&serde_json::Value>,
) -> Result<AttributeTest, FilterError> {
    let op = op.trim();
    if !kind.operators().contains(&op) {
        return Err(FilterError::WrongOperator {
            name: name.to_owned(),
            kind,
        });
    }
    let value = given(value);
    let needs_value =
        || FilterError::BadValue(format!("`{name}` {op} needs a value to compare with."));
    match op {
        "has_value" | "has_no_value" | "is_true" | "is_false" => {
            if value.is_some() {
                return Err(FilterError::BadValue(format!(
                    "`{name}` {op} takes no value: leave it empty."
                )));
            }
            return Ok(match op {
                "has_value" => AttributeTest::HasValue,
                "has_no_value" => AttributeTest::HasNoValue,
                "is_true" => AttributeTest::Boolean(true),
                _ => AttributeTest::Boolean(false),
            });
        }
        _ => {}
    }
    let value = value.ok_or_else(needs_value)?;
    Ok(match kind {
        AttributeKind::Text => {
            let text = value.as_str().ok_or_else(|| {
                FilterError::BadValue(format!("`{name}` is text: compare it with text."))
            })?;
            refuse_unwanted(|| format!("The value for `{name}`"), text)?;
            if text.chars().count() > MAX_TEXT_CHARS {
                return Err(FilterError::BadValue(format!(
                    "The value for `{name}` is longer than {MAX_TEXT_CHARS} characters."
                )));
            }
            let op = match op {
                "eq" => TextOp::Equals,
                "ne" => TextOp::NotEquals,
                "contains" => TextOp::Contains,
                _ => TextOp::StartsWith,
            };
            AttributeTest::Text(op, text.to_owned())
        }
        AttributeKind::Number => {
            let number = parse_number(name, value)?;
            let op = match op {
                "eq" => NumberOp::Equals,
                "ne" => NumberOp::NotEquals,
                "lt" => NumberOp::Less,
                "le" => NumberOp::LessOrEqual,
                "gt" => NumberOp::Greater,
                _ => NumberOp::GreaterOrEqual,
            };
            AttributeTest::Number(op, number)
        }
        AttributeKind::Date => {
            let raw = value.as_str().ok_or_else(|| {
                FilterError::BadValue(format!("`{name}` is a date: write it as YYYY-MM-DD."))
            })?;
            let day = parse_day(raw, &format!("The value for `{name}`"))?;
            let op = match op {
                "before" => DateOp::Before,
                "after" => DateOp::After,
                _ => DateOp::On,
            };
            AttributeTest::Date(op, day)
        }
        AttributeKind::Boolean => unreachable!("boolean operators take no value"),
    })
}

/// A JSON number, or text holding one (the form's value), finite and
/// within [`MAX_NUMBER`].
fn parse_number(name: &str, value: &serde_json::Value) -> Result<f64, FilterError> {
    let not_a_number =
        || FilterError::BadValue(format!("`{name}` is a number: compare it with one."));
    let number = match value {
        serde_json::Value::Number(number) => number.as_f64().ok_or_else(not_a_number)?,
        serde_json::Value::String(text) => {
            refuse_unwanted(|| format!("The value for `{name}`"), text)?;
            let text = text.trim();
            // Digits, a sign, a point, an exponent: Rust would also read
            // `inf` and `NaN`.
            if !text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
            {
                return Err(not_a_number());
            }
            text.parse::<f64>().map_err(|_| not_a_number())?
        }
        _ => return Err(not_a_number()),
    };
    if !number.is_finite() || number.abs() > MAX_NUMBER {
        return Err(FilterError::BadValue(format!(
            "The value for `{name}` is outside what a condition compares with: at most 1e15 either side of zero."
        )));
    }
    Ok(number)
}

/// A number as JSON: whole numbers without a fraction.
fn number_json(number: f64) -> serde_json::Value {
    if number.fract() == 0.0 {
        // Within MAX_NUMBER, so it fits.
        serde_json::Value::from(number as i64)
    } else {
        serde_json::Number::from_f64(number)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

impl Condition {
    fn to_spec(&self) -> FilterSpec {
        let day_spec = |bound: &DayBound| match bound {
            DayBound::Before(day) => DaySpec::Before(day_text(*day)),
            DayBound::After(day) => DaySpec::After(day_text(*day)),
        };
        match self {
            Condition::OnList { list_id, status } => FilterSpec::List {
                id: *list_id,
                status: Some(status.as_str().to_owned()),
            },
            Condition::SignedUp(bound) => FilterSpec::SignedUp(day_spec(bound)),
            Condition::Confirmed(bound) => FilterSpec::Confirmed(day_spec(bound)),
            Condition::FromImport(id) => FilterSpec::Import { id: *id },
            Condition::Attribute { name, test } => {
                let (op, value) = match test {
                    AttributeTest::Text(op, text) => {
                        let op = match op {
                            TextOp::Equals => "eq",
                            TextOp::NotEquals => "ne",
                            TextOp::Contains => "contains",
                            TextOp::StartsWith => "starts_with",
                        };
                        (op, Some(serde_json::Value::from(text.as_str())))
                    }
                    AttributeTest::Number(op, number) => {
                        let op = match op {
                            NumberOp::Equals => "eq",
                            NumberOp::NotEquals => "ne",
                            NumberOp::Less => "lt",
                            NumberOp::LessOrEqual => "le",
                            NumberOp::Greater => "gt",
                            NumberOp::GreaterOrEqual => "ge",
                        };
                        (op, Some(number_json(*number)))
                    }
                    AttributeTest::Date(op, day) => {
                        let op = match op {
                            DateOp::Before => "before",
                            DateOp::After => "after",
                            DateOp::On => "on",
                        };
                        (op, Some(serde_json::Value::from(day_text(*day))))
                    }
                    AttributeTest::Boolean(true) => ("is_true", None),
                    AttributeTest::Boolean(false) => ("is_false", None),
                    AttributeTest::HasValue => ("has_value", None),
                    AttributeTest::HasNoValue => ("has_no_value", None),
                };
                FilterSpec::Attribute {
                    name: name.clone(),
                    op: op.to_owned(),
                    value,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NEWS: Uuid = Uuid::from_u128(1);
    const SPRING_FILE: Uuid = Uuid::from_u128(3);

    fn catalogue() -> Catalogue {
        Catalogue {
            lists: vec![(NEWS, "News".into())],
            attributes: vec![
                ("city".into(), AttributeKind::Text),
                ("age".into(), AttributeKind::Number),
                ("birthday".into(), AttributeKind::Date),
                ("vip".into(), AttributeKind::Boolean),
            ],
            imports: vec![(SPRING_FILE, "spring.csv onto News, 2026-03-01".into())],
        }
    }

    fn parse(json: serde_json::Value) -> Result<Filter, FilterError> {
        let spec = FilterSpec::from_json(&json.to_string())?;
        Filter::parse(&spec, &catalogue())
    }

    fn attribute(name: &str, op: &str, value: serde_json::Value) -> serde_json::Value {
        json!({"attribute": {"name": name, "op": op, "value": value}})
    }

    #[test]
    fn a_filter_survives_its_round_trip_through_storage() {
        let filter = parse(json!({"all": [
            {"list": {"id": NEWS}},
            {"any": [
                attribute("city", "contains", json!("par")),
                attribute("age", "ge", json!("18")),
                attribute("birthday", "on", json!("2000-02-29")),
                {"attribute": {"name": "vip", "op": "is_true"}},
                {"attribute": {"name": "city", "op": "has_no_value", "value": ""}},
            ]},
            {"signed_up": {"after": "2026-01-01"}},
            {"confirmed": {"before": "2026-02-01"}},
            {"import": {"id": SPRING_FILE}},
        ]}))
        .unwrap();
        let stored = filter.to_spec().to_json();
        let back = Filter::parse(&FilterSpec::from_json(&stored).unwrap(), &catalogue()).unwrap();
        assert_eq!(back, filter);
        // The number typed as text is stored as a number.
        assert!(stored.contains(r#""value":18"#), "{stored}");
    }

    #[test]
    fn each_operator_is_refused_on_a_kind_it_does_not_apply_to() {
        let cases = [
            ("city", "lt", json!("a")),
            ("age", "contains", json!("1")),
            ("birthday", "eq", json!("2000-01-01")),
            ("vip", "eq", json!(true)),
            ("age", "DROP TABLE", json!(1)),
        ];
        for (name, op, value) in cases {
            let error = parse(attribute(name, op, value)).unwrap_err();
            assert!(
                matches!(error, FilterError::WrongOperator { .. }),
                "{name} {op}: {error}"
            );
        }
    }

    #[test]
    fn values_are_parsed_by_their_attributes_kind() {
        let refused = [
            ("age", "eq", json!("twelve"), "not a number"),
            ("age", "eq", json!("inf"), "inf"),
            ("age", "eq", json!("NaN"), "NaN"),
            ("age", "eq", json!("1e400"), "beyond a double"),
            ("age", "eq", json!(1e16), "over the limit"),
            ("age", "eq", json!("-1000000000000001"), "under the limit"),
            ("age", "eq", json!(true), "a boolean"),
            ("birthday", "on", json!("2026-02-30"), "no such day"),
            ("birthday", "on", json!("2026-2-3"), "unpadded"),
            ("birthday", "on", json!("+12026-02-03"), "five-digit year"),
            ("birthday", "on", json!(20260203), "a number"),
            ("city", "eq", json!(12), "a number for text"),
            ("city", "eq", json!(""), "no value"),
            (
                "vip",
                "is_true",
                json!("yes"),
                "a value where none is taken",
            ),
        ];
        for (name, op, value, case) in refused {
            assert!(
                matches!(
                    parse(attribute(name, op, value)),
                    Err(FilterError::BadValue(_))
                ),
                "{case} was accepted"
            );
        }
        assert_eq!(
            parse(attribute("age", "lt", json!(-1e15))).unwrap(),
            Filter::Condition(Condition::Attribute {
                name: "age".into(),
                test: AttributeTest::Number(NumberOp::Less, -1e15),
            })
        );
    }

    #[test]
    fn a_number_json_cannot_hold_is_refused_with_a_reason() {
        let error =
            FilterSpec::from_json(r#"{"attribute": {"name": "age", "op": "eq", "value": 1e400}}"#)
                .unwrap_err();
        assert!(matches!(error, FilterError::Unreadable(_)), "{error}");
    }

    #[test]
    fn control_and_invisible_characters_are_refused_wherever_text_goes() {
        for hostile in [
            "a\0b",
            "line\nbreak",
            "moc.elpmaxe\u{202E}",
            "zero\u{200B}width",
        ] {
            for filter in [
                attribute("city", "eq", json!(hostile)),
                attribute(hostile, "eq", json!("x")),
                json!({"signed_up": {"before": hostile}}),
                attribute("age", "eq", json!(hostile)),
            ] {
                assert!(
                    matches!(parse(filter.clone()), Err(FilterError::Unwanted { .. })),
                    "{filter} was not refused for its character"
                );
            }
        }
    }

    #[test]
    fn quotes_and_sql_are_only_text() {
        let filter = parse(attribute(
            "city",
            "eq",
            json!("'; DROP TABLE subscriptions; --"),
        ));
        assert!(filter.is_ok());
    }

    #[test]
    fn unknown_lists_and_attributes_are_named_in_the_reason() {
        let other = Uuid::from_u128(2);
        assert_eq!(
            parse(json!({"list": {"id": other}})).unwrap_err(),
            FilterError::UnknownList(other)
        );
        assert_eq!(
            parse(attribute("shoe_size", "eq", json!(1))).unwrap_err(),
            FilterError::UnknownAttribute("shoe_size".into())
        );
        assert_eq!(
            parse(attribute("Robert'); DROP", "eq", json!(1))).unwrap_err(),
            FilterError::MalformedAttributeName
        );
        assert_eq!(
            parse(json!({"import": {"id": other}})).unwrap_err(),
            FilterError::UnknownImport(other)
        );
        assert_eq!(
            parse(json!({"list": {"id": NEWS, "status": "gone"}})).unwrap_err(),
            FilterError::UnknownStatus
        );
    }

    #[test]
    fn groups_nest_five_deep_and_no_deeper() {
        let condition = json!({"list": {"id": NEWS}});
        let nested =
            |levels: usize| (0..levels).fold(condition.clone(), |inner, _| json!({"all": [inner]}));
        assert!(parse(nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            parse(nested(MAX_DEPTH + 1)).unwrap_err(),
            FilterError::TooDeep
        );
    }

    #[test]
    fn a_filter_holds_at_most_fifty_conditions() {
        let conditions = |n: usize| json!({"any": vec![json!({"list": {"id": NEWS}}); n]});
        assert!(parse(conditions(MAX_CONDITIONS)).is_ok());
        assert_eq!(
            parse(conditions(MAX_CONDITIONS + 1)).unwrap_err(),
            FilterError::TooLarge
        );
        let groups = json!({"all": vec![json!({"all": []}); MAX_CONDITIONS]});
        assert_eq!(parse(groups).unwrap_err(), FilterError::TooLarge);
    }

    #[test]
    fn an_empty_any_is_refused_and_an_empty_all_is_everyone() {
        assert_eq!(
            parse(json!({"any": []})).unwrap_err(),
            FilterError::EmptyAny
        );
        assert_eq!(parse(json!({"all": []})).unwrap(), Filter::All(vec![]));
    }

    #[test]
    fn unknown_fields_and_shapes_are_unreadable() {
        for json in [
            r#"{"all": [], "extra": 1}"#,
            r#"{"list": {"id": "not-a-uuid"}}"#,
            r#"{"list": {"id": "00000000-0000-0000-0000-000000000001", "sql": "x"}}"#,
            r#"{"everyone": true}"#,
            r#"{"import": {"id": "not-a-uuid"}}"#,
            r#"{"import": {"id": "00000000-0000-0000-0000-000000000003", "list": 1}}"#,
            r#"[]"#,
            r#""#,
        ] {
            assert!(
                matches!(FilterSpec::from_json(json), Err(FilterError::Unreadable(_))),
                "{json} was read"
            );
        }
    }

    #[test]
    fn json_nested_past_the_parsers_limit_is_unreadable_not_a_crash() {
        let deep = format!("{}{}", r#"{"all": ["#.repeat(10_000), "]}".repeat(10_000));
        assert!(matches!(
            FilterSpec::from_json(&deep),
            Err(FilterError::Unreadable(_))
        ));
    }
}
