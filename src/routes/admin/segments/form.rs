//! The segment form: a name, "match all" or "match any", a fixed number of
//! condition rows (field, operator, value), and a box for the filter as
//! JSON, which, when filled, is used instead of the rows. The rows make
//! one level of AND or OR without any script; the JSON nests.
//!
//! A row's field names what it tests: `signed_up`, `confirmed`,
//! `list:{id}`, `import:{id}` or `attribute:{name}`. Its operator and
//! value are the JSON's (`eq`, `before`, `has_value`…); a list's row takes
//! `eq` and a status as its value (empty: confirmed); an import's row takes
//! `eq` and no value.

use serde::Deserialize;
use uuid::Uuid;

use crate::subscribers::segments::FilterError;
use crate::subscribers::segments::filter::{DaySpec, FilterSpec};

/// How many condition rows the form has.
pub const ROWS: usize = 5;

/// The form as sent.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SegmentForm {
    #[serde(default)]
    pub name: String,
    /// `all` (the default) or `any`.
    #[serde(default, rename = "match")]
    pub match_: String,
    #[serde(default)]
    pub field_1: String,
    #[serde(default)]
    pub op_1: String,
    #[serde(default)]
    pub value_1: String,
    #[serde(default)]
    pub field_2: String,
    #[serde(default)]
    pub op_2: String,
    #[serde(default)]
    pub value_2: String,
    #[serde(default)]
    pub field_3: String,
    #[serde(default)]
    pub op_3: String,
    #[serde(default)]
    pub value_3: String,
    #[serde(default)]
    pub field_4: String,
    #[serde(default)]
    pub op_4: String,
    #[serde(default)]
    pub value_4: String,
    #[serde(default)]
    pub field_5: String,
    #[serde(default)]
    pub op_5: String,
    #[serde(default)]
    pub value_5: String,
    /// The filter as JSON; when not empty, the rows are ignored.
    #[serde(default)]
    pub filter_json: String,
    /// `save` (the default) or `count`, which shows how many match without
    /// saving.
    #[serde(default)]
    pub action: String,
}

/// One condition row, as the form shows and sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub field: String,
    pub op: String,
    pub value: String,
}

impl Row {
    fn is_empty(&self) -> bool {
        self.field.trim().is_empty()
    }
}

/// What the form holds, as it is shown again.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub name: String,
    pub match_any: bool,
    pub rows: Vec<Row>,
    pub filter_json: String,
}

impl Fields {
    /// An empty form.
    pub fn blank() -> Self {
        Self {
            rows: vec![Row::default(); ROWS],
            ..Self::default()
        }
    }

    /// The form for a stored filter: in the rows when it is one level of
    /// up to [`ROWS`] conditions, in the JSON box otherwise.
    pub fn of(name: &str, spec: &FilterSpec) -> Self {
        let mut fields = Self {
            name: name.to_owned(),
            ..Self::blank()
        };
        let (match_any, conditions) = match spec {
            FilterSpec::All(conditions) => (false, conditions.as_slice()),
            FilterSpec::Any(conditions) => (true, conditions.as_slice()),
            condition => (false, std::slice::from_ref(condition)),
        };
        let rows: Option<Vec<Row>> = (conditions.len() <= ROWS)
            .then(|| conditions.iter().map(row_of).collect())
            .flatten();
        match rows {
            Some(rows) => {
                fields.match_any = match_any;
                for (slot, row) in fields.rows.iter_mut().zip(rows) {
                    *slot = row;
                }
            }
            None => fields.filter_json = spec.to_pretty_json(),
        }
        fields
    }

    /// The filter the form describes: the JSON box if filled, else the
    /// rows. Reasons about a row name it ("Row 2: …").
    pub fn spec(&self) -> Result<FilterSpec, FilterError> {
        if !self.filter_json.trim().is_empty() {
            return FilterSpec::from_json(&self.filter_json);
        }
        let conditions = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, row)| !row.is_empty())
            .map(|(i, row)| {
                condition_of(row)
                    .map_err(|reason| FilterError::BadValue(format!("Row {}: {reason}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // No row filled: everyone, whichever match was chosen.
        Ok(if self.match_any && !conditions.is_empty() {
            FilterSpec::Any(conditions)
        } else {
            FilterSpec::All(conditions)
        })
    }
}

impl SegmentForm {
    pub fn fields(&self) -> Fields {
        let row = |field: &str, op: &str, value: &str| Row {
            field: field.to_owned(),
            op: op.to_owned(),
            value: value.to_owned(),
        };
        Fields {
            name: self.name.clone(),
            match_any: self.match_.trim() == "any",
            rows: vec![
                row(&self.field_1, &self.op_1, &self.value_1),
                row(&self.field_2, &self.op_2, &self.value_2),
                row(&self.field_3, &self.op_3, &self.value_3),
                row(&self.field_4, &self.op_4, &self.value_4),
                row(&self.field_5, &self.op_5, &self.value_5),
            ],
            filter_json: self.filter_json.clone(),
        }
    }

    /// Whether the admin pressed Count rather than Save. Anything else
    /// than the two is refused.
    pub fn counts_only(&self) -> Result<bool, String> {
        match self.action.trim() {
            "" | "save" => Ok(false),
            "count" => Ok(true),
            _ => Err("The action is save or count.".into()),
        }
    }

    /// `match` is `all`, `any`, or left out.
    pub fn check_match(&self) -> Result<(), String> {
        match self.match_.trim() {
            "" | "all" | "any" => Ok(()),
            _ => Err("Match is all or any.".into()),
        }
    }
}

/// A row as a condition of the JSON shape, checked later with the rest.
fn condition_of(row: &Row) -> Result<FilterSpec, String> {
    let field = row.field.trim();
    let op = row.op.trim();
    let value = row.value.trim();
    let day = |what: &str| match op {
        "before" => Ok(DaySpec::Before(value.to_owned())),
        "after" => Ok(DaySpec::After(value.to_owned())),
        _ => Err(format!("{what} takes before or after, and a day.")),
    };
    if field == "signed_up" {
        return Ok(FilterSpec::SignedUp(day("Signed up")?));
    }
    if field == "confirmed" {
        return Ok(FilterSpec::Confirmed(day("Confirmed")?));
    }
    if let Some(id) = field.strip_prefix("list:") {
        let id = Uuid::parse_str(id).map_err(|_| "That list's id is malformed.".to_owned())?;
        if !matches!(op, "" | "eq") {
            return Err("A list takes = and a status: confirmed, pending or unsubscribed.".into());
        }
        return Ok(FilterSpec::List {
            id,
            status: (!value.is_empty()).then(|| value.to_owned()),
        });
    }
    if let Some(id) = field.strip_prefix("import:") {
        let id = Uuid::parse_str(id).map_err(|_| "That import's id is malformed.".to_owned())?;
        if !matches!(op, "" | "eq") {
            return Err("An import takes = and no value.".into());
        }
        if !value.is_empty() {
            return Err("An import takes no value: leave it empty.".into());
        }
        return Ok(FilterSpec::Import { id });
    }
    if let Some(name) = field.strip_prefix("attribute:") {
        return Ok(FilterSpec::Attribute {
            name: name.to_owned(),
            op: op.to_owned(),
            value: (!value.is_empty()).then(|| serde_json::Value::from(value)),
        });
    }
    Err("Choose what the row tests.".into())
}

/// A condition as a row, if a row can say it.
fn row_of(spec: &FilterSpec) -> Option<Row> {
    let row = |field: String, op: &str, value: String| Row {
        field,
        op: op.to_owned(),
        value,
    };
    let day = |field: &str, day: &DaySpec| match day {
        DaySpec::Before(value) => row(field.to_owned(), "before", value.clone()),
        DaySpec::After(value) => row(field.to_owned(), "after", value.clone()),
    };
    Some(match spec {
        FilterSpec::All(_) | FilterSpec::Any(_) => return None,
        FilterSpec::SignedUp(bound) => day("signed_up", bound),
        FilterSpec::Confirmed(bound) => day("confirmed", bound),
        FilterSpec::List { id, status } => row(
            format!("list:{id}"),
            "eq",
            status.clone().unwrap_or_default(),
        ),
        FilterSpec::Import { id } => row(format!("import:{id}"), "eq", String::new()),
        FilterSpec::Attribute { name, op, value } => {
            let value = match value {
                None => String::new(),
                Some(serde_json::Value::String(text)) => text.clone(),
                Some(serde_json::Value::Number(number)) => number.to_string(),
                // Not something a row sends: the JSON box says it.
                Some(_) => return None,
            };
            row(format!("attribute:{name}"), op, value)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> SegmentForm {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap()).unwrap()
    }

    #[test]
    fn filled_rows_become_one_group_and_empty_ones_are_skipped() {
        let list = Uuid::from_u128(9);
        let form = form(&[
            ("match", "any"),
            ("field_1", &format!("list:{list}")),
            ("op_1", "eq"),
            ("field_3", "attribute:age"),
            ("op_3", "ge"),
            ("value_3", "18"),
            ("field_5", "signed_up"),
            ("op_5", "after"),
            ("value_5", "2026-01-01"),
        ]);
        let spec = form.fields().spec().unwrap();
        assert_eq!(
            spec,
            FilterSpec::Any(vec![
                FilterSpec::List {
                    id: list,
                    status: None
                },
                FilterSpec::Attribute {
                    name: "age".into(),
                    op: "ge".into(),
                    value: Some("18".into())
                },
                FilterSpec::SignedUp(DaySpec::After("2026-01-01".into())),
            ])
        );
    }

    #[test]
    fn no_row_filled_is_everyone_whichever_match_was_chosen() {
        let spec = form(&[("match", "any")]).fields().spec().unwrap();
        assert_eq!(spec, FilterSpec::All(vec![]));
    }

    #[test]
    fn the_json_box_wins_over_the_rows() {
        let spec = form(&[
            ("field_1", "signed_up"),
            ("op_1", "before"),
            ("value_1", "2026-01-01"),
            ("filter_json", r#"{"any": [{"all": []}]}"#),
        ])
        .fields()
        .spec()
        .unwrap();
        assert_eq!(spec, FilterSpec::Any(vec![FilterSpec::All(vec![])]));
    }

    #[test]
    fn a_bad_row_is_named_in_the_reason() {
        let error = form(&[("field_2", "signed_up"), ("op_2", "on")])
            .fields()
            .spec()
            .unwrap_err();
        assert!(error.to_string().starts_with("Row 2: "), "{error}");
        let error = form(&[("field_1", "password")])
            .fields()
            .spec()
            .unwrap_err();
        assert!(error.to_string().starts_with("Row 1: "), "{error}");
    }

    #[test]
    fn a_stored_filter_of_one_level_goes_back_into_the_rows_and_a_nested_one_into_the_box() {
        let flat = FilterSpec::Any(vec![FilterSpec::Attribute {
            name: "age".into(),
            op: "lt".into(),
            value: Some(serde_json::json!(30)),
        }]);
        let fields = Fields::of("Young", &flat);
        assert!(fields.match_any && fields.filter_json.is_empty());
        assert_eq!(fields.rows[0].value, "30");
        assert_eq!(
            fields.spec().unwrap(),
            FilterSpec::Any(vec![FilterSpec::Attribute {
                name: "age".into(),
                op: "lt".into(),
                value: Some("30".into()),
            }])
        );

        let nested = FilterSpec::All(vec![FilterSpec::Any(vec![FilterSpec::All(vec![])])]);
        let fields = Fields::of("Nested", &nested);
        assert!(fields.rows.iter().all(|row| row.field.is_empty()));
        assert_eq!(fields.spec().unwrap(), nested);
    }

    #[test]
    fn an_import_row_takes_no_value_and_goes_back_into_its_row() {
        let import = Uuid::from_u128(4);
        let field = format!("import:{import}");
        let spec = form(&[("field_1", &field), ("op_1", "eq")])
            .fields()
            .spec()
            .unwrap();
        assert_eq!(
            spec,
            FilterSpec::All(vec![FilterSpec::Import { id: import }])
        );
        assert_eq!(Fields::of("Spring", &spec).rows[0].field, field);
        for (op, value) in [("eq", "confirmed"), ("ne", ""), ("contains", "x")] {
            let error = form(&[("field_1", &field), ("op_1", op), ("value_1", value)])
                .fields()
                .spec()
                .unwrap_err();
            assert!(error.to_string().starts_with("Row 1: An import"), "{error}");
        }
    }

    #[test]
    fn an_unknown_action_or_match_is_refused() {
        assert!(form(&[("action", "drop")]).counts_only().is_err());
        assert!(form(&[("action", "count")]).counts_only().unwrap());
        assert!(form(&[("match", "some")]).check_match().is_err());
    }
}
