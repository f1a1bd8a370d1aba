//! The form a list is made and changed with, as sent and as parsed: the
//! name and the description become [`ListName`] and [`ListDescription`]
//! here, at the edge, or the form goes back with a reason next to each
//! field that was refused.

use actix_web::web;
use serde::Deserialize;

use crate::domain::{ListDescription, ListName, UnwantedCharacter};
use crate::subscribers::lists::ListFields;
use crate::web::error::ApiError;

/// The list form's body limit. The longest name and description the form
/// takes, in characters of up to four bytes that a browser percent-encodes
/// as three characters each, and room for the token and the checkboxes:
/// the app-wide limit, sized for the public forms, would refuse a
/// description in Japanese with 413 well before its 1000 characters.
pub const LIST_FORM_BODY_LIMIT_BYTES: usize =
    3 * 4 * (ListName::MAX_CHARS + ListDescription::MAX_CHARS) + 1024;

/// The list resources' own extractor settings.
pub fn list_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(LIST_FORM_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

/// The form as a browser sends it. A checkbox that is not ticked is not
/// sent at all, so each is ticked when present, whatever its value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ListForm {
    /// 1 to 100 characters, unique among the lists (letter case aside).
    #[serde(default)]
    name: String,
    /// Up to 1000 characters; may be empty.
    #[serde(default)]
    description: String,
    /// Present when the list is offered on the public form.
    public: Option<String>,
    /// Present when joining the list needs its own confirmation.
    double_opt_in: Option<String>,
}

/// What the form shows: as typed, so that a refused form comes back as it
/// was sent, or the list's stored values.
#[derive(Debug, Clone)]
pub struct FormView {
    pub name: String,
    pub description: String,
    pub public: bool,
    pub double_opt_in: bool,
    pub name_error: Option<String>,
    pub description_error: Option<String>,
}

impl FormView {
    /// The empty form of the lists page: public, with double opt-in, as
    /// most lists are.
    pub fn blank() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            public: true,
            double_opt_in: true,
            name_error: None,
            description_error: None,
        }
    }
}

impl ListForm {
    /// The fields to store, or the form again with its reasons.
    pub fn parse(self) -> Result<ListFields, FormView> {
        let name = ListName::parse(&self.name);
        let description = ListDescription::parse(&self.description);
        let (public, double_opt_in) = (self.public.is_some(), self.double_opt_in.is_some());
        match (name, description) {
            (Ok(name), Ok(description)) => Ok(ListFields {
                name: name.into(),
                description: description.into(),
                public,
                double_opt_in,
            }),
            (name, description) => Err(FormView {
                name: visible(&self.name, false),
                description: visible(&self.description, true),
                public,
                double_opt_in,
                name_error: name.err(),
                description_error: description.err(),
            }),
        }
    }
}

/// What was typed, to show again, with each control or invisible
/// formatting character (a NUL, a bidi override) as U+FFFD: the page says which one was refused, and does not
/// carry it. Line breaks stay where the field takes them.
fn visible(typed: &str, line_breaks: bool) -> String {
    let mut buffer = [0; 4];
    typed
        .chars()
        .map(|c| match c {
            '\n' | '\r' if line_breaks => c,
            c if UnwantedCharacter::find_in(c.encode_utf8(&mut buffer)).is_some() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The form as sent, with the name refused because another list has it.
pub fn name_taken(fields: ListFields, reason: String) -> FormView {
    FormView {
        name: fields.name,
        description: fields.description,
        public: fields.public,
        double_opt_in: fields.double_opt_in,
        name_error: Some(reason),
        description_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(name: &str, description: &str) -> ListForm {
        ListForm {
            name: name.into(),
            description: description.into(),
            public: None,
            double_opt_in: Some("on".into()),
        }
    }

    #[test]
    fn a_good_form_becomes_the_fields_to_store_trimmed() {
        let fields = form("  Rust weekly ", " Crabs. ").parse().unwrap();
        assert_eq!(fields.name, "Rust weekly");
        assert_eq!(fields.description, "Crabs.");
        assert!(!fields.public);
        assert!(fields.double_opt_in);
    }

    #[test]
    fn a_refused_form_comes_back_as_typed_with_a_reason_for_each_field() {
        let refused = form("Rust\0weekly", &"a".repeat(1001)).parse().unwrap_err();
        assert_eq!(refused.name, "Rust\u{FFFD}weekly");
        assert!(refused.name_error.unwrap().contains("U+0000"));
        assert!(refused.description_error.unwrap().contains("1000"));
        assert!(refused.double_opt_in && !refused.public);
    }
}
