//! What both segment pages share: their addresses, the builder form with
//! its choices, reading the catalogue, counting, and saving.

use std::time::Duration;

use actix_web::HttpResponse;
use uuid::Uuid;

use super::form::{Fields, SegmentForm};
use super::pages::{Choice, ChoiceGroup, FormView};
use crate::admin::audit::{self, Action, Actor};
use crate::db::Db;
use crate::subscribers::segments::{self, Catalogue, Count, Filter, SegmentError, SegmentName};
use crate::telemetry::error_chain_line;
use crate::web::answers::see_other;
use crate::web::error::{ApiError, DatabaseStep};

pub const SEGMENTS_PATH: &str = "/admin/segments";

pub fn segment_path(id: Uuid) -> String {
    format!("{SEGMENTS_PATH}/{id}")
}

/// The id in a segment's address; `None` answers 404.
pub fn parse_segment_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

pub fn missing() -> ApiError {
    ApiError::NotFound("No segment has this id: it may have been deleted.".into())
}

/// How long a page waits for a count, a connection included: a little
/// longer than the count's own limit in Postgres, whose cancel keeps the
/// connection usable, so that this one only catches a pool with no
/// connection free or a connection gone silent.
const COUNT_WAIT: Duration = Duration::from_millis(1500);

/// The catalogue a filter is read against.
#[tracing::instrument(name = "Read the lists and attributes", skip_all)]
pub async fn read_catalogue(db: &Db) -> Result<Catalogue, ApiError> {
    db.transaction(async |tx| {
        let imports = crate::imports::store::known(tx).await?;
        segments::catalogue(tx, imports).await
    })
    .await
    .step("read the lists and attributes")
}

/// The confirmed readers of any list who match `filter`, if they can be
/// counted in time; not a reason to fail the page.
#[tracing::instrument(name = "Count a segment", skip_all)]
pub async fn count_audience(db: &Db, filter: &Filter, lists: &[Uuid]) -> Count {
    db.transaction_within(COUNT_WAIT, async |tx| {
        segments::count(tx, filter, lists).await
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(
            error = %error_chain_line(&e),
            "A segment could not be counted; the page shows no number"
        );
        Count::Unavailable
    })
}

pub fn count_text(count: Count) -> String {
    match count {
        Count::Counted(1) => "1 confirmed reader matches.".into(),
        Count::Counted(n) => format!("{n} confirmed readers match."),
        Count::Unavailable => {
            "The count took longer than a second and was given up: try again later.".into()
        }
    }
}

/// The form, its choices made from the catalogue. A row naming what the
/// catalogue no longer has (a deleted attribute) keeps its choice, marked
/// unknown, so that the form shows what was saved.
pub fn form_view(
    catalogue: &Catalogue,
    action: String,
    fields: Fields,
    error: Option<String>,
    count: Option<String>,
) -> FormView {
    let choice = |value: String, label: String| Choice { value, label };
    let mut field_groups = vec![
        ChoiceGroup {
            label: "Subscriber",
            choices: vec![
                choice("signed_up".into(), "Signed up".into()),
                choice("confirmed".into(), "Confirmed".into()),
            ],
        },
        ChoiceGroup {
            label: "On list",
            choices: catalogue
                .lists
                .iter()
                .map(|(id, name)| choice(format!("list:{id}"), format!("On list {name}")))
                .collect(),
        },
        ChoiceGroup {
            label: "Came from import",
            choices: catalogue
                .imports
                .iter()
                .map(|(id, label)| choice(format!("import:{id}"), format!("From {label}")))
                .collect(),
        },
        ChoiceGroup {
            label: "Attributes",
            choices: catalogue
                .attributes
                .iter()
                .map(|(name, kind)| {
                    choice(
                        format!("attribute:{name}"),
                        format!("{name} ({})", kind.as_str()),
                    )
                })
                .collect(),
        },
    ];
    let known = |value: &str| {
        field_groups
            .iter()
            .flat_map(|group| &group.choices)
            .any(|choice| choice.value == value)
    };
    let unknown: Vec<Choice> = fields
        .rows
        .iter()
        .map(|row| row.field.trim())
        .filter(|field| !field.is_empty() && !known(field))
        .map(|field| choice(field.to_owned(), format!("{field} (unknown)")))
        .collect();
    if !unknown.is_empty() {
        field_groups.push(ChoiceGroup {
            label: "Unknown",
            choices: unknown,
        });
    }
    FormView {
        action,
        fields,
        field_groups,
        op_groups: op_groups(),
        error,
        count,
    }
}

/// Every operator, grouped by what it compares; which apply depends on
/// the field, and the reason for a wrong one says which do.
fn op_groups() -> Vec<ChoiceGroup> {
    let group = |label, choices: &[(&str, &str)]| ChoiceGroup {
        label,
        choices: choices
            .iter()
            .map(|(value, label)| Choice {
                value: (*value).into(),
                label: (*label).into(),
            })
            .collect(),
    };
    vec![
        group(
            "Compare",
            &[
                ("eq", "= (a list's status, an import, text, number)"),
                ("ne", "≠"),
                ("lt", "<"),
                ("le", "≤"),
                ("gt", ">"),
                ("ge", "≥"),
            ],
        ),
        group(
            "Text",
            &[("contains", "contains"), ("starts_with", "starts with")],
        ),
        group(
            "Days (YYYY-MM-DD)",
            &[("before", "before"), ("after", "after"), ("on", "on")],
        ),
        group(
            "Yes or no",
            &[("is_true", "is true"), ("is_false", "is false")],
        ),
        group(
            "Any attribute",
            &[
                ("has_value", "has a value"),
                ("has_no_value", "has no value"),
            ],
        ),
    ]
}

/// How saving went.
pub enum Saving {
    Done(Uuid),
    NameTaken,
    Missing,
}

/// Creates the segment (`id` none) or updates it, with its audit entry,
/// in one transaction.
#[tracing::instrument(name = "Save a segment", skip(db, actor, name, filter))]
pub async fn save(
    db: &Db,
    actor: &Actor,
    id: Option<Uuid>,
    name: &SegmentName,
    filter: &Filter,
) -> Result<Saving, ApiError> {
    db.transaction(async |tx| {
        let written = match id {
            None => segments::store::create(tx, name, filter).await.map(Some),
            Some(id) => segments::store::update(tx, id, name, filter).await,
        };
        let segment = match written {
            Ok(Some(segment)) => segment,
            Ok(None) => return Ok(Saving::Missing),
            Err(SegmentError::NameTaken) => return Ok(Saving::NameTaken),
            Err(SegmentError::Database(e)) => return Err(e),
        };
        let action = if id.is_none() {
            Action::SegmentCreated
        } else {
            Action::SegmentUpdated
        };
        let detail = format!("segment {} ({})", segment.id, segment.name);
        audit::record(tx, actor, action, &detail).await?;
        Ok(Saving::Done(segment.id))
    })
    .await
    .step("save the segment")
}

/// 303 to the segment's page.
pub fn to_segment(id: Uuid) -> HttpResponse {
    see_other(segment_path(id))
}

/// What a sent form asks for, read against the catalogue.
pub enum Submitted {
    /// The filter or the name was refused, for this reason.
    Refused(String),
    /// Count was pressed: how many match, nothing saved.
    Counted(Count),
    Save(SegmentName, Filter),
}

/// Reads the form: its filter against `catalogue`, its name when it is to
/// be saved; counts when that is what was asked. A form no page sends (an
/// unknown action or match) is a 400.
pub async fn read_submission(
    db: &Db,
    form: &SegmentForm,
    catalogue: &Catalogue,
) -> Result<Submitted, ApiError> {
    form.check_match().map_err(ApiError::BadRequest)?;
    let counts_only = form.counts_only().map_err(ApiError::BadRequest)?;
    let filter = match form
        .fields()
        .spec()
        .and_then(|spec| Filter::parse(&spec, catalogue))
    {
        Ok(filter) => filter,
        Err(reason) => return Ok(Submitted::Refused(reason.to_string())),
    };
    if counts_only {
        let lists = catalogue.list_ids();
        return Ok(Submitted::Counted(
            count_audience(db, &filter, &lists).await,
        ));
    }
    Ok(match SegmentName::parse(&form.name) {
        Ok(name) => Submitted::Save(name, filter),
        Err(reason) => Submitted::Refused(reason),
    })
}
