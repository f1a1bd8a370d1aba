//! The segment pages' templates (`src/templates/admin/segment*.html`).

use askama::Template;

use super::form::Fields;
use crate::admin::pages::templates::Nav;
use crate::domain::Newsletter;

/// One segment in the list.
pub struct SegmentRow {
    pub path: String,
    pub name: String,
    pub updated_at: String,
}

/// A choice of a select: its value and what the admin reads.
pub struct Choice {
    pub value: String,
    pub label: String,
}

/// The choices of a select, under a heading.
pub struct ChoiceGroup {
    pub label: &'static str,
    pub choices: Vec<Choice>,
}

/// The builder form, as `segment_form.html` shows it.
pub struct FormView {
    /// Where it is sent.
    pub action: String,
    pub fields: Fields,
    /// What a row may test: the subscriber's times, the lists, the
    /// imports, the attributes.
    pub field_groups: Vec<ChoiceGroup>,
    pub op_groups: Vec<ChoiceGroup>,
    /// Why the last submission was refused.
    pub error: Option<String>,
    /// The count, once asked for.
    pub count: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/segments.html")]
pub struct SegmentsPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub segments: Vec<SegmentRow>,
    pub form: FormView,
}

#[derive(Template)]
#[template(path = "admin/segment.html")]
pub struct SegmentPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// This page's address; the delete form is under it.
    pub path: String,
    pub name: String,
    pub form: FormView,
    /// Why the saved filter no longer applies, if it does not.
    pub stale: Option<String>,
}
