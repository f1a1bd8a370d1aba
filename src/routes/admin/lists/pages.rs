//! The templates of the list pages (`src/templates/admin/lists.html`,
//! `list.html`, `list_missing.html`) and the rows they show.

use askama::Template;
use chrono::{DateTime, Utc};

use super::form::FormView;
use super::list_path;
use crate::admin::pages::templates::Nav;
use crate::domain::Newsletter;
use crate::subscribers::lists::List;
use crate::subscribers::memberships::ListCounts;

/// One list as the pages show it.
pub struct ListView {
    /// The list's own page.
    pub path: String,
    pub name: String,
    pub description: String,
    pub public: bool,
    pub double_opt_in: bool,
    pub is_default: bool,
    /// When it was archived (UTC), or empty while it is live.
    pub archived_at: String,
    pub created_at: String,
    pub counts: ListCounts,
    /// The subscriber list narrowed to this list.
    pub subscribers: String,
    /// Its welcome email as stored; empty for none.
    pub welcome_subject: String,
    pub welcome_body: String,
}

#[derive(Template)]
#[template(path = "admin/lists.html")]
pub struct ListsPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub lists: Vec<ListView>,
    /// The form that makes a list, empty or as it was refused.
    pub form: FormView,
}

#[derive(Template)]
#[template(path = "admin/list.html")]
pub struct ListPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    pub list: ListView,
    /// The list's fields, as stored or as a refused change typed them.
    pub form: FormView,
    /// What the admin was sent here after (made, saved, archived).
    pub notice: Option<&'static str>,
    /// Why the last change was refused, when it was not about one field
    /// (the default list cannot be archived).
    pub error: Option<String>,
    /// The welcome email's fields, as stored or as a refused change or a
    /// preview typed them.
    pub welcome: WelcomeView,
    /// The welcome email as a reader gets it, when the admin asked.
    pub preview: Option<WelcomePreview>,
}

#[derive(Template)]
#[template(path = "admin/list_missing.html")]
pub struct ListMissingPage<'a> {
    pub newsletter: &'a Newsletter,
    pub nav: Nav<'a>,
    /// Whether the address held no list id at all, rather than an id that
    /// matches no list.
    pub malformed: bool,
}

impl ListView {
    /// The form filled with what the list holds.
    pub fn form(&self) -> FormView {
        FormView {
            name: self.name.clone(),
            description: self.description.clone(),
            public: self.public,
            double_opt_in: self.double_opt_in,
            name_error: None,
            description_error: None,
        }
    }

    /// The welcome form filled with what the list holds.
    pub fn welcome(&self) -> WelcomeView {
        WelcomeView {
            subject: self.welcome_subject.clone(),
            body: self.welcome_body.clone(),
            subject_error: None,
            body_error: None,
        }
    }

    pub fn of(list: List, counts: ListCounts) -> Self {
        let subscribers = format!(
            "/admin/subscribers?{}",
            serde_urlencoded::to_string([("list", list.id.to_string())])
                .expect("strings always encode")
        );
        Self {
            path: list_path(list.id),
            name: list.name,
            description: list.description,
            public: list.public,
            double_opt_in: list.double_opt_in,
            is_default: list.is_default,
            archived_at: list.archived_at.map(time).unwrap_or_default(),
            created_at: time(list.created_at),
            counts,
            subscribers,
            welcome_subject: list.welcome_subject.unwrap_or_default(),
            welcome_body: list.welcome_body.unwrap_or_default(),
        }
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M").to_string()
}

/// The welcome fields as the page shows them: as typed, or as stored.
#[derive(Debug, Clone, Default)]
pub struct WelcomeView {
    pub subject: String,
    pub body: String,
    pub subject_error: Option<String>,
    pub body_error: Option<String>,
}

/// The welcome as a reader gets it.
#[derive(Debug, Clone)]
pub struct WelcomePreview {
    pub subject: String,
    pub html: String,
    pub text: String,
}
