//! A list's welcome email as an admin writes it: a subject and Markdown,
//! both or neither. Parsed once, at the list page's form, so that the
//! store and the renderer never check it again.

use crate::domain::UnwantedCharacter;

/// A welcome email that can be stored and sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    subject: String,
    body: String,
}

/// Why a welcome was refused, as a form shows it beside the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WelcomeError {
    #[error("A welcome email needs a subject.")]
    SubjectMissing,
    #[error("A welcome email needs a body; empty both fields to send none.")]
    BodyMissing,
    #[error("The subject must be at most {max} characters long, not {length}.", max = Welcome::MAX_SUBJECT_CHARS)]
    SubjectTooLong { length: usize },
    #[error("The body must be at most {max} bytes long, not {length}.", max = Welcome::MAX_BODY_BYTES)]
    BodyTooLong { length: usize },
    /// `character` names it by code point, e.g. "U+0000".
    #[error("The {field} must not contain the control or invisible character {character}.")]
    UnwantedCharacter {
        field: &'static str,
        character: String,
    },
}

impl WelcomeError {
    /// Whether the subject (rather than the body) is what was refused.
    pub fn is_about_the_subject(&self) -> bool {
        match self {
            WelcomeError::SubjectMissing | WelcomeError::SubjectTooLong { .. } => true,
            WelcomeError::UnwantedCharacter { field, .. } => *field == "subject",
            WelcomeError::BodyMissing | WelcomeError::BodyTooLong { .. } => false,
        }
    }
}

impl Welcome {
    /// A subject line, like an issue's title: longer ones are cut by every
    /// mail client anyway. The schema checks the same.
    pub const MAX_SUBJECT_CHARS: usize = 200;
    /// A welcome is a few paragraphs; this bounds what each confirmation
    /// costs to render and to store. The schema checks the same.
    pub const MAX_BODY_BYTES: usize = 50_000;

    /// Both fields empty (or blank) is no welcome at all: `None`. The
    /// subject is trimmed; the body is kept as typed.
    pub fn parse(subject: &str, body: &str) -> Result<Option<Self>, WelcomeError> {
        let subject = subject.trim();
        match (subject.is_empty(), body.trim().is_empty()) {
            (true, true) => return Ok(None),
            (true, false) => return Err(WelcomeError::SubjectMissing),
            (false, true) => return Err(WelcomeError::BodyMissing),
            (false, false) => {}
        }
        let length = subject.chars().count();
        if length > Self::MAX_SUBJECT_CHARS {
            return Err(WelcomeError::SubjectTooLong { length });
        }
        // A subject is a header: a line break would split it, an invisible
        // character would make it read differently from what it is.
        if let Some(found) = UnwantedCharacter::find_in(subject) {
            return Err(unwanted("subject", found.character()));
        }
        if body.len() > Self::MAX_BODY_BYTES {
            return Err(WelcomeError::BodyTooLong { length: body.len() });
        }
        // Markdown needs line breaks and tabs; no other control character
        // means anything in it, and Postgres refuses NUL in `text`.
        if let Some(c) = body
            .chars()
            .find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(unwanted("body", c));
        }
        Ok(Some(Self {
            subject: subject.to_owned(),
            body: body.to_owned(),
        }))
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Markdown.
    pub fn body(&self) -> &str {
        &self.body
    }
}

fn unwanted(field: &'static str, c: char) -> WelcomeError {
    WelcomeError::UnwantedCharacter {
        field,
        character: format!("U+{:04X}", u32::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fields_empty_is_no_welcome() {
        assert_eq!(Welcome::parse("  ", "\n"), Ok(None));
    }

    #[test]
    fn a_body_without_a_subject_or_a_subject_without_a_body_is_refused() {
        assert_eq!(
            Welcome::parse("", "Hello"),
            Err(WelcomeError::SubjectMissing)
        );
        assert_eq!(Welcome::parse("Hi", " "), Err(WelcomeError::BodyMissing));
    }

    #[test]
    fn lengths_over_the_limits_are_refused_naming_the_limit() {
        let long_subject = "é".repeat(Welcome::MAX_SUBJECT_CHARS + 1);
        let refused = Welcome::parse(&long_subject, "Body").unwrap_err();
        assert!(refused.to_string().contains("200"), "{refused}");
        assert!(refused.is_about_the_subject());
        let long_body = "a".repeat(Welcome::MAX_BODY_BYTES + 1);
        let refused = Welcome::parse("Hi", &long_body).unwrap_err();
        assert!(refused.to_string().contains("50000"), "{refused}");
        assert!(!refused.is_about_the_subject());
    }

    #[test]
    fn control_characters_are_refused_by_code_point_but_markdown_keeps_its_lines() {
        for (subject, body, field, code) in [
            ("Hi\nthere", "Body", "subject", "U+000A"),
            ("Hi\u{202E}", "Body", "subject", "U+202E"),
            ("Hi", "Body\0", "body", "U+0000"),
        ] {
            let refused = Welcome::parse(subject, body).unwrap_err();
            assert_eq!(
                refused,
                WelcomeError::UnwantedCharacter {
                    field,
                    character: code.into()
                },
                "{subject:?} {body:?}"
            );
        }
        let kept = Welcome::parse(" Hi ", "# Welcome\r\n\n\tcode\n")
            .unwrap()
            .unwrap();
        assert_eq!(kept.subject(), "Hi");
        assert_eq!(kept.body(), "# Welcome\r\n\n\tcode\n");
    }
}
