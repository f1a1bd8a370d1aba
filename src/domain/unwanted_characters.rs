//! Characters no text field of ours has a reason to carry: control characters
//! (NUL, CR, LF, TAB and the rest of Unicode's `Cc`), invisible formatting
//! characters (`Cf`: bidi overrides and isolates, zero-width spaces and
//! joiners, the byte order mark, the soft hyphen...) and the line and
//! paragraph separators U+2028 and U+2029.
//!
//! Each of them hurts somewhere: Postgres refuses NUL in `text` (a 500 instead
//! of a 400), CR and LF split headers and log lines, and the invisible ones
//! make a value look different from what it is (a bidi override shows
//! "moc.elpmaxe" as "example.com"; a zero-width space hides a word from a
//! filter). The price is small: a zero-width joiner also glues some emoji
//! sequences and some Persian and Indic spellings together, and tag
//! characters make the Scottish and Welsh flags; a name keeps its letters
//! without them.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The first unwanted character in a value, to name in a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwantedCharacter(char);

impl UnwantedCharacter {
    /// The first character of `text` that no field should carry, if any.
    pub fn find_in(text: &str) -> Option<Self> {
        text.chars().find(|&c| is_unwanted(c)).map(Self)
    }

    /// `text` without the characters no field should carry: for a value
    /// that is only a label, such as an uploaded file's name, which is
    /// better kept than refused.
    pub fn remove_from(text: &str) -> String {
        text.chars().filter(|&c| !is_unwanted(c)).collect()
    }

    pub fn character(self) -> char {
        self.0
    }

    /// What a person calls the character, for the ones they may have met.
    fn common_name(self) -> Option<&'static str> {
        Some(match self.0 {
            '\0' => "null",
            '\t' => "tab",
            '\n' => "line feed",
            '\r' => "carriage return",
            '\u{AD}' => "soft hyphen",
            '\u{200B}' => "zero width space",
            '\u{200C}' => "zero width non-joiner",
            '\u{200D}' => "zero width joiner",
            '\u{200E}' => "left-to-right mark",
            '\u{200F}' => "right-to-left mark",
            '\u{202A}' => "left-to-right embedding",
            '\u{202B}' => "right-to-left embedding",
            '\u{202C}' => "pop directional formatting",
            '\u{202D}' => "left-to-right override",
            '\u{202E}' => "right-to-left override",
            '\u{2060}' => "word joiner",
            '\u{2066}' => "left-to-right isolate",
            '\u{2067}' => "right-to-left isolate",
            '\u{2068}' => "first strong isolate",
            '\u{2069}' => "pop directional isolate",
            '\u{FEFF}' => "zero width no-break space",
            _ => return None,
        })
    }
}

/// Reads as "the control character U+0000 (null)", to follow "must not
/// contain".
impl std::fmt::Display for UnwantedCharacter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0.general_category() {
            GeneralCategory::Control => "the control character",
            GeneralCategory::LineSeparator => "the line separator",
            GeneralCategory::ParagraphSeparator => "the paragraph separator",
            _ => "the invisible formatting character",
        };
        write!(f, "{kind} U+{:04X}", u32::from(self.0))?;
        if let Some(name) = self.common_name() {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

fn is_unwanted(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_kind_of_unwanted_character_is_found() {
        let cases = [
            ('\0', "NUL"),
            ('\r', "CR"),
            ('\n', "LF"),
            ('\t', "TAB"),
            ('\u{1B}', "ESC"),
            ('\u{7F}', "DEL"),
            ('\u{85}', "next line, a C1 control"),
            ('\u{AD}', "soft hyphen"),
            ('\u{61C}', "Arabic letter mark"),
            ('\u{180E}', "Mongolian vowel separator"),
            ('\u{200B}', "zero width space"),
            ('\u{200C}', "zero width non-joiner"),
            ('\u{200D}', "zero width joiner"),
            ('\u{200E}', "left-to-right mark"),
            ('\u{200F}', "right-to-left mark"),
            ('\u{2028}', "line separator"),
            ('\u{2029}', "paragraph separator"),
            ('\u{202A}', "left-to-right embedding"),
            ('\u{202E}', "right-to-left override"),
            ('\u{2060}', "word joiner"),
            ('\u{2066}', "left-to-right isolate"),
            ('\u{2069}', "pop directional isolate"),
            ('\u{FEFF}', "byte order mark"),
            ('\u{FFF9}', "interlinear annotation anchor"),
            ('\u{E0001}', "language tag"),
            ('\u{E0041}', "tag latin capital letter a"),
        ];
        for (c, case) in cases {
            let found = UnwantedCharacter::find_in(&format!("Ursula{c}Le Guin"));
            assert_eq!(found.map(|u| u.0), Some(c), "{case}");
        }
    }

    #[test]
    fn ordinary_text_has_none() {
        let cases = [
            "Ursula K. Le Guin",
            "Ana-María O'Neil",
            "Þórunn Jónsdóttir",
            "محمد",
            "שלום",
            "山田 太郎",
            "Nguyễn Văn A",
            "e\u{301}",
            "\u{3000}ideographic space",
            "non\u{A0}breaking",
            "emoji 🦀 and a variation selector ☺\u{FE0F}",
        ];
        for text in cases {
            assert_eq!(UnwantedCharacter::find_in(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_first_one_is_reported() {
        let found = UnwantedCharacter::find_in("a\u{202E}b\0c").unwrap();
        assert_eq!(found.0, '\u{202E}');
    }

    #[test]
    fn the_description_names_the_code_point_and_what_it_is() {
        let cases = [
            ('\0', "the control character U+0000 (null)"),
            ('\u{1B}', "the control character U+001B"),
            (
                '\u{202E}',
                "the invisible formatting character U+202E (right-to-left override)",
            ),
            ('\u{2028}', "the line separator U+2028"),
            ('\u{2029}', "the paragraph separator U+2029"),
            ('\u{E0041}', "the invisible formatting character U+E0041"),
        ];
        for (c, expected) in cases {
            let found = UnwantedCharacter::find_in(&c.to_string()).unwrap();
            assert_eq!(found.to_string(), expected, "U+{:04X}", u32::from(c));
        }
    }

    proptest! {
        #[test]
        fn any_control_or_format_character_anywhere_is_found(
            prefix in "[^\\p{C}\\p{Zl}\\p{Zp}]{0,10}",
            c in "[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]",
            suffix in "\\PC{0,10}",
        ) {
            let found = UnwantedCharacter::find_in(&format!("{prefix}{c}{suffix}"));
            prop_assert_eq!(found.map(|u| u.0.to_string()), Some(c));
        }
    }
}
