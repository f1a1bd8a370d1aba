//! What an admin types about a list: its name and its description, parsed
//! once at the form so that the list store never sees a value the schema
//! would refuse (Postgres answers a NUL in `text`, or a name over the
//! length check, with an error that would otherwise become a 500).
//!
//! Lengths count characters (code points), as the schema's `char_length`
//! checks do: a name the parser takes is one the table takes.

use crate::domain::unwanted_characters::UnwantedCharacter;

/// A list's name: trimmed, 1 to [`ListName::MAX_CHARS`] characters, with
/// no control or invisible formatting character. It is shown on the public
/// form and in every admin page, so it is one line of visible text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListName(String);

impl ListName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("The name must not be empty.".into());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "The name must be at most {} characters long.",
                Self::MAX_CHARS
            ));
        }
        if let Some(unwanted) = UnwantedCharacter::find_in(name) {
            return Err(format!("The name must not contain {unwanted}."));
        }
        Ok(Self(name.to_owned()))
    }
}

impl AsRef<str> for ListName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ListName> for String {
    fn from(name: ListName) -> Self {
        name.0
    }
}

/// A list's description: trimmed, at most [`ListDescription::MAX_CHARS`]
/// characters, possibly empty. It is typed in a text area, so it may hold
/// line breaks (a browser sends them as CR LF; they are kept as LF); any
/// other control or invisible formatting character is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListDescription(String);

impl ListDescription {
    pub const MAX_CHARS: usize = 1000;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let description = raw.trim().replace("\r\n", "\n");
        if description.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "The description must be at most {} characters long.",
                Self::MAX_CHARS
            ));
        }
        for line in description.split('\n') {
            if let Some(unwanted) = UnwantedCharacter::find_in(line) {
                return Err(format!("The description must not contain {unwanted}."));
            }
        }
        Ok(Self(description))
    }
}

impl AsRef<str> for ListDescription {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ListDescription> for String {
    fn from(description: ListDescription) -> Self {
        description.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_is_trimmed_and_kept_as_typed_otherwise() {
        let name = ListName::parse("  Rust <weekly> & co  ").unwrap();
        assert_eq!(name.as_ref(), "Rust <weekly> & co");
    }

    #[test]
    fn a_name_of_exactly_100_characters_is_taken_and_one_more_is_refused() {
        assert!(ListName::parse(&"ё".repeat(100)).is_ok());
        assert!(ListName::parse(&"ё".repeat(101)).is_err());
    }

    #[test]
    fn an_empty_or_blank_name_is_refused() {
        for blank in ["", "   ", "\u{3000}"] {
            assert!(ListName::parse(blank).is_err(), "{blank:?} was taken");
        }
    }

    #[test]
    fn a_name_with_a_control_or_invisible_character_is_refused() {
        for (name, case) in [
            ("Rust\0weekly", "NUL"),
            ("Rust\nweekly", "LF"),
            ("Rust\u{202E}weekly", "bidi override"),
            ("Rust\u{200B}weekly", "zero width space"),
        ] {
            let refused = ListName::parse(name);
            assert!(refused.is_err(), "{case} was taken");
        }
        assert!(
            ListName::parse("Rust\0weekly")
                .unwrap_err()
                .contains("U+0000")
        );
    }

    #[test]
    fn a_description_keeps_its_line_breaks_as_line_feeds() {
        let description = ListDescription::parse("One.\r\nTwo.\n").unwrap();
        assert_eq!(description.as_ref(), "One.\nTwo.");
    }

    #[test]
    fn a_description_may_be_empty_but_not_longer_than_1000_characters() {
        assert_eq!(ListDescription::parse("  ").unwrap().as_ref(), "");
        assert!(ListDescription::parse(&"a".repeat(1000)).is_ok());
        assert!(ListDescription::parse(&"a".repeat(1001)).is_err());
    }

    #[test]
    fn a_description_with_any_other_control_character_is_refused() {
        for (description, case) in [
            ("a\0b", "NUL"),
            ("a\rb", "a lone CR"),
            ("a\tb", "TAB"),
            ("a\u{2028}b", "line separator"),
        ] {
            assert!(
                ListDescription::parse(description).is_err(),
                "{case} was taken"
            );
        }
    }

    proptest! {
        #[test]
        fn a_parsed_name_fits_the_schema(raw in "\\PC{0,120}") {
            if let Ok(name) = ListName::parse(&raw) {
                let length = name.as_ref().chars().count();
                prop_assert!((1..=ListName::MAX_CHARS).contains(&length));
                prop_assert!(!name.as_ref().contains('\0'));
            }
        }
    }
}
