//! The import pages' templates (`src/templates/admin/import*.html`).

use askama::Template;

use super::view::ImportView;
use crate::admin::pages::templates::Nav;
use crate::domain::Newsletter;
use crate::imports::Refusal;

/// One import in the list.
pub struct ImportRow {
    pub path: String,
    pub file_name: String,
    pub list_name: String,
    pub state: &'static str,
    pub rows_read: i64,
    pub added: i64,
    pub already_on_list: i64,
    pub refused: i64,
    pub started_by: String,
    pub created_at: String,
}

/// A list the upload can go to, as an option of the form's select.
pub struct ListOption {
    pub id: String,
    pub name: String,
    pub selected: bool,
}

/// The upload form as sent, shown again with the reason it was refused.
#[derive(Default)]
pub struct UploadFields {
    pub list: String,
    pub consent_source: String,
    pub welcome: bool,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/imports.html")]
pub struct ImportsPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub rows: Vec<ImportRow>,
    pub lists: Vec<ListOption>,
    pub fields: UploadFields,
    /// "512 MiB"
    pub max_upload: String,
}

#[derive(Template)]
#[template(path = "admin/import.html")]
pub struct ImportPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub path: String,
    pub file_name: String,
    pub list_name: String,
    /// Where the readers' consent came from, when the admin attested it.
    pub consent_source: Option<String>,
    pub welcome: bool,
    pub started_by: String,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub progress: ImportView,
    /// The first refused rows, by line.
    pub refusals: Vec<Refusal>,
    /// This very file was uploaded onto this list again: nothing changed.
    pub already_imported: bool,
}

impl ImportPage<'_> {
    /// How many refused rows the page does not list.
    pub fn refusals_not_shown(&self) -> i64 {
        (self.progress.refused - self.refusals.len() as i64).max(0)
    }

    /// Whether a browser without scripts should reload to follow along.
    pub fn refreshes(&self) -> bool {
        !self.progress.finished
    }
}

#[derive(Template)]
#[template(path = "admin/import_missing.html")]
pub struct ImportMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
}
