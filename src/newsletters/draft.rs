//! An issue as an admin wrote it, refused with a reason a form can show when
//! it could not be sent as it is.

use crate::domain::UnwantedCharacter;

/// What an admin wrote: a title, which becomes the subject, and Markdown
/// content. Holding one means both are within their limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    title: String,
    content: String,
}

/// The part of a draft that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftField {
    Title,
    Content,
}

impl DraftField {
    /// The form field's name, for pointing at it.
    pub const fn name(self) -> &'static str {
        match self {
            DraftField::Title => "title",
            DraftField::Content => "content",
        }
    }
}

impl std::fmt::Display for DraftField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a draft was refused: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DraftError {
    #[error("The {0} must not be empty.")]
    Empty(DraftField),
    #[error("The title must be at most {max} characters long, not {length}.", max = Draft::MAX_TITLE_CHARS)]
    TitleTooLong { length: usize },
    #[error("The content must be at most {max} bytes long, not {length}.", max = Draft::MAX_CONTENT_BYTES)]
    ContentTooLong { length: usize },
    /// `character` names it by code point, e.g. "U+000A".
    #[error("The {field} must not contain the control or invisible character {character}.")]
    UnwantedCharacter {
        field: DraftField,
        character: String,
    },
}

impl DraftError {
    /// The field that was refused.
    pub fn field(&self) -> DraftField {
        match self {
            DraftError::Empty(field) | DraftError::UnwantedCharacter { field, .. } => *field,
            DraftError::TitleTooLong { .. } => DraftField::Title,
            DraftError::ContentTooLong { .. } => DraftField::Content,
        }
    }
}

impl Draft {
    /// In characters: a subject line longer than this is cut by every mail
    /// client anyway.
    pub const MAX_TITLE_CHARS: usize = 200;
    /// In bytes, of the Markdown as typed: a long essay is a tenth of this,
    /// and the limit bounds what one issue costs to render and to store.
    pub const MAX_CONTENT_BYTES: usize = 200_000;

    /// The title is trimmed (a form field often carries a stray space); the
    /// content is kept exactly as typed, so that the same text submitted
    /// twice compares equal.
    pub fn parse(title: &str, content: &str) -> Result<Self, DraftError> {
        Ok(Self {
            title: parse_title(title)?,
            content: parse_content(content)?,
        })
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    /// Markdown.
    pub fn content(&self) -> &str {
        &self.content
    }
}

fn parse_title(raw: &str) -> Result<String, DraftError> {
    let title = raw.trim();
    if title.is_empty() {
        return Err(DraftError::Empty(DraftField::Title));
    }
    let length = title.chars().count();
    if length > Draft::MAX_TITLE_CHARS {
        return Err(DraftError::TitleTooLong { length });
    }
    // A subject is a header: a line break in it would split it, and an
    // invisible character would make it read differently from what it is.
    if let Some(found) = UnwantedCharacter::find_in(title) {
        return Err(unwanted(DraftField::Title, found.character()));
    }
    Ok(title.to_owned())
}

fn parse_content(raw: &str) -> Result<String, DraftError> {
    if raw.trim().is_empty() {
        return Err(DraftError::Empty(DraftField::Content));
    }
    if raw.len() > Draft::MAX_CONTENT_BYTES {
        return Err(DraftError::ContentTooLong { length: raw.len() });
    }
    // Markdown needs line breaks and tabs. Other control characters have no
    // meaning in it, and Postgres refuses NUL in `text` outright. Invisible
    // formatting characters stay: emoji sequences and some scripts need the
    // zero-width joiner, and the content is read, never compared or used in
    // a header.
    if let Some(c) = raw
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(unwanted(DraftField::Content, c));
    }
    Ok(raw.to_owned())
}

fn unwanted(field: DraftField, c: char) -> DraftError {
    DraftError::UnwantedCharacter {
        field,
        character: format!("U+{:04X}", u32::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_draft_is_accepted_with_its_title_trimmed_and_content_as_typed() {
        let draft = Draft::parse("  Issue #1 \n", "# Hello\r\n\r\nWorld\n").unwrap();
        assert_eq!(draft.title(), "Issue #1");
        assert_eq!(draft.content(), "# Hello\r\n\r\nWorld\n");
    }

    #[test]
    fn an_empty_or_blank_title_or_content_is_refused_naming_the_field() {
        for blank in ["", " ", "\n\t"] {
            assert_eq!(
                Draft::parse(blank, "Hello"),
                Err(DraftError::Empty(DraftField::Title)),
                "title {blank:?}"
            );
            assert_eq!(
                Draft::parse("Title", blank),
                Err(DraftError::Empty(DraftField::Content)),
                "content {blank:?}"
            );
        }
        assert_eq!(
            Draft::parse("Title", "").unwrap_err().to_string(),
            "The content must not be empty."
        );
    }

    #[test]
    fn a_title_of_200_characters_is_accepted_and_one_of_201_is_refused() {
        let at = "é".repeat(200);
        assert_eq!(Draft::parse(&at, "x").unwrap().title(), at);
        let err = Draft::parse(&"é".repeat(201), "x").unwrap_err();
        assert_eq!(err, DraftError::TitleTooLong { length: 201 });
        assert_eq!(err.field(), DraftField::Title);
        assert_eq!(
            err.to_string(),
            "The title must be at most 200 characters long, not 201."
        );
    }

    #[test]
    fn content_of_200000_bytes_is_accepted_and_one_byte_more_is_refused() {
        let at = "a".repeat(200_000);
        assert!(Draft::parse("T", &at).is_ok());
        let err = Draft::parse("T", &format!("{at}b")).unwrap_err();
        assert_eq!(err, DraftError::ContentTooLong { length: 200_001 });
        assert_eq!(err.field(), DraftField::Content);
        assert_eq!(
            err.to_string(),
            "The content must be at most 200000 bytes long, not 200001."
        );
    }

    #[test]
    fn content_is_measured_in_bytes_not_characters() {
        // 100,001 two-byte characters: under the limit in characters, over
        // it in bytes.
        let err = Draft::parse("T", &"é".repeat(100_001)).unwrap_err();
        assert_eq!(err, DraftError::ContentTooLong { length: 200_002 });
    }

    #[test]
    fn a_line_break_or_invisible_character_in_the_title_is_refused() {
        for (title, code_point) in [
            ("One\nTwo", "U+000A"),
            ("One\rBcc: x@example.com", "U+000D"),
            ("moc.elpmaxe\u{202E}", "U+202E"),
            ("Zero\u{200B}width", "U+200B"),
        ] {
            let err = Draft::parse(title, "x").unwrap_err();
            assert_eq!(err.field(), DraftField::Title, "{title:?}");
            assert_eq!(
                err.to_string(),
                format!(
                    "The title must not contain the control or invisible character {code_point}."
                )
            );
        }
    }

    #[test]
    fn content_keeps_line_breaks_and_tabs_but_refuses_other_control_characters() {
        assert!(Draft::parse("T", "a\r\n\tb\n").is_ok());
        for (content, code_point) in [("a\0b", "U+0000"), ("a\u{7}b", "U+0007")] {
            let err = Draft::parse("T", content).unwrap_err();
            assert_eq!(
                err,
                DraftError::UnwantedCharacter {
                    field: DraftField::Content,
                    character: code_point.into()
                },
                "{content:?}"
            );
        }
    }

    #[test]
    fn content_may_carry_a_zero_width_joiner_inside_an_emoji() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(Draft::parse("T", family).unwrap().content(), family);
    }
}
