//! The newsletter itself, as its readers meet it: a title on every page and
//! in every email, a paragraph saying what it is, and the display name its
//! emails come from. Built once at start-up from the configuration, so that a
//! title the pages could not show, or a sender name that does not belong in a
//! `From` header, stops the service before anyone sees it.

use crate::domain::unwanted_characters::UnwantedCharacter;

/// A newsletter's identity: trimmed, a non-empty title and sender name, all
/// three free of control and invisible formatting characters and of
/// reasonable length. Free of CR and LF in particular: the sender name goes
/// into the `From` header and the title into the subject line.
///
/// Markup is allowed (a title may well contain `&` or `<`): the pages and the
/// HTML emails escape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newsletter {
    title: String,
    description: String,
    sender_name: String,
}

/// One of the three parts of a [`Newsletter`], to say which one was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewsletterPart {
    Title,
    Description,
    SenderName,
}

impl NewsletterPart {
    /// The most characters the part may have. A title or a sender name has
    /// to fit a browser tab and an inbox line; a description is one
    /// paragraph.
    pub const fn max_chars(self) -> usize {
        match self {
            NewsletterPart::Title | NewsletterPart::SenderName => 100,
            NewsletterPart::Description => 1000,
        }
    }

    /// Whether the newsletter can do without it. A description is optional:
    /// the pages leave it out when it is empty.
    const fn may_be_empty(self) -> bool {
        matches!(self, NewsletterPart::Description)
    }
}

impl std::fmt::Display for NewsletterPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NewsletterPart::Title => "title",
            NewsletterPart::Description => "description",
            NewsletterPart::SenderName => "sender name",
        })
    }
}

/// Why a newsletter's title, description or sender name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NewsletterError {
    #[error("The newsletter's {0} must not be empty.")]
    Empty(NewsletterPart),
    #[error(
        "The newsletter's {part} must be at most {} characters long, not {length}.",
        part.max_chars()
    )]
    TooLong { part: NewsletterPart, length: usize },
    /// `character` describes it, e.g. "the control character U+000A (line
    /// feed)".
    #[error("The newsletter's {part} must not contain {character}.")]
    UnwantedCharacter {
        part: NewsletterPart,
        character: String,
    },
}

impl NewsletterError {
    /// The part that was refused.
    pub fn part(&self) -> NewsletterPart {
        match self {
            NewsletterError::Empty(part)
            | NewsletterError::TooLong { part, .. }
            | NewsletterError::UnwantedCharacter { part, .. } => *part,
        }
    }
}

impl Newsletter {
    pub fn parse(
        title: &str,
        description: &str,
        sender_name: &str,
    ) -> Result<Self, NewsletterError> {
        Ok(Self {
            title: parse_part(NewsletterPart::Title, title)?,
            description: parse_part(NewsletterPart::Description, description)?,
            sender_name: parse_part(NewsletterPart::SenderName, sender_name)?,
        })
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    /// One paragraph, possibly empty.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The display name of the `From` header, unquoted.
    pub fn sender_name(&self) -> &str {
        &self.sender_name
    }
}

fn parse_part(part: NewsletterPart, raw: &str) -> Result<String, NewsletterError> {
    // Trimmed: a value set from a file or a YAML block often ends in a line
    // feed that nobody meant as part of it.
    let value = raw.trim();
    if value.is_empty() && !part.may_be_empty() {
        return Err(NewsletterError::Empty(part));
    }
    // Characters, not bytes: a title in Greek is as long as one in English.
    let length = value.chars().count();
    if length > part.max_chars() {
        return Err(NewsletterError::TooLong { part, length });
    }
    if let Some(unwanted) = UnwantedCharacter::find_in(value) {
        return Err(NewsletterError::UnwantedCharacter {
            part,
            character: unwanted.to_string(),
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DESCRIPTION: &str = "Stories about rust, weekly.";

    #[test]
    fn an_ordinary_newsletter_is_accepted_trimmed() {
        let newsletter =
            Newsletter::parse(" Rust & Rost ", "  Weekly <news>.\n", "The Rust Desk\n").unwrap();
        assert_eq!(newsletter.title(), "Rust & Rost");
        assert_eq!(newsletter.description(), "Weekly <news>.");
        assert_eq!(newsletter.sender_name(), "The Rust Desk");
    }

    #[test]
    fn an_empty_title_or_sender_name_is_refused() {
        for blank in ["", "   ", "\n"] {
            assert_eq!(
                Newsletter::parse(blank, DESCRIPTION, "Desk"),
                Err(NewsletterError::Empty(NewsletterPart::Title)),
                "title {blank:?}"
            );
            assert_eq!(
                Newsletter::parse("Title", DESCRIPTION, blank),
                Err(NewsletterError::Empty(NewsletterPart::SenderName)),
                "sender name {blank:?}"
            );
        }
    }

    #[test]
    fn an_empty_description_is_accepted() {
        let newsletter = Newsletter::parse("Title", "", "Desk").unwrap();
        assert_eq!(newsletter.description(), "");
    }

    #[test]
    fn a_line_break_inside_any_part_is_refused_and_the_reason_names_part_and_character() {
        let cases = [
            (
                Newsletter::parse("Weekly\nNews", DESCRIPTION, "Desk"),
                NewsletterPart::Title,
                "U+000A",
            ),
            (
                Newsletter::parse("Weekly", "One.\r\nTwo.", "Desk"),
                NewsletterPart::Description,
                "U+000D",
            ),
            (
                Newsletter::parse("Weekly", DESCRIPTION, "Desk\r\nBcc: victim@example.com"),
                NewsletterPart::SenderName,
                "U+000D",
            ),
        ];
        for (parsed, part, code_point) in cases {
            let err = parsed.expect_err(&part.to_string());
            assert_eq!(err.part(), part);
            let reason = err.to_string();
            assert!(
                reason.starts_with(&format!("The newsletter's {part} must not contain")),
                "{reason}"
            );
            assert!(reason.contains(code_point), "{reason}");
        }
    }

    #[test]
    fn invisible_formatting_characters_are_refused() {
        for c in ['\u{202E}', '\u{200B}', '\u{FEFF}', '\u{2028}', '\0'] {
            let title = format!("Weekly{c}News");
            let err = Newsletter::parse(&title, DESCRIPTION, "Desk").unwrap_err();
            assert!(
                matches!(err, NewsletterError::UnwantedCharacter { .. }),
                "U+{:04X}: {err:?}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn each_part_is_refused_one_character_past_its_limit() {
        let at = |part: NewsletterPart| "é".repeat(part.max_chars());
        let past = |part: NewsletterPart| "é".repeat(part.max_chars() + 1);
        assert!(
            Newsletter::parse(
                &at(NewsletterPart::Title),
                &at(NewsletterPart::Description),
                &at(NewsletterPart::SenderName)
            )
            .is_ok(),
            "at the limits"
        );
        let cases = [
            (
                Newsletter::parse(&past(NewsletterPart::Title), DESCRIPTION, "Desk"),
                NewsletterPart::Title,
                101,
            ),
            (
                Newsletter::parse("T", &past(NewsletterPart::Description), "Desk"),
                NewsletterPart::Description,
                1001,
            ),
            (
                Newsletter::parse("T", DESCRIPTION, &past(NewsletterPart::SenderName)),
                NewsletterPart::SenderName,
                101,
            ),
        ];
        for (parsed, part, length) in cases {
            assert_eq!(
                parsed,
                Err(NewsletterError::TooLong { part, length }),
                "{part}"
            );
        }
    }

    #[test]
    fn the_reason_for_a_long_title_gives_the_limit() {
        let err = Newsletter::parse(&"a".repeat(150), DESCRIPTION, "Desk").unwrap_err();
        assert_eq!(
            err.to_string(),
            "The newsletter's title must be at most 100 characters long, not 150."
        );
    }

    proptest! {
        #[test]
        fn any_short_printable_title_is_kept_as_it_is(
            title in "[^\\p{C}\\p{Z}][^\\p{C}\\p{Zl}\\p{Zp}]{0,98}[^\\p{C}\\p{Z}]"
        ) {
            let newsletter = Newsletter::parse(&title, DESCRIPTION, "Desk").unwrap();
            prop_assert_eq!(newsletter.title(), title.as_str());
        }
    }
}
