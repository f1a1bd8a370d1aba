use unicode_segmentation::UnicodeSegmentation;

use crate::domain::unwanted_characters::UnwantedCharacter;
use crate::domain::web_address::WebAddress;

/// A subscriber's name as we greet them: trimmed, never empty, at most
/// [`SubscriberName::MAX_GRAPHEMES`] user-perceived characters, free of
/// control and invisible formatting characters, of links, and of the
/// characters that are most often used to smuggle markup or paths.
///
/// Links are refused because the name is written into the confirmation
/// email, and that email goes to whatever address was typed: with a link in
/// the name, anyone could have us mail their advertisement (or a phishing
/// page) to a stranger, from our domain and past their spam filter. A name
/// has no need of one. What counts as a link, and why `Mr.Smith` is not one,
/// is in [`WebAddress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberName(String);

const FORBIDDEN_CHARACTERS: [char; 9] = ['/', '(', ')', '"', '<', '>', '\\', '{', '}'];

impl SubscriberName {
    pub const MAX_GRAPHEMES: usize = 256;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("The name must not be empty.".into());
        }
        // Graphemes, not bytes or chars: "é" typed as e + combining accent is one
        // character to the person who typed it.
        if name.graphemes(true).count() > Self::MAX_GRAPHEMES {
            return Err(format!(
                "The name must be at most {} characters long.",
                Self::MAX_GRAPHEMES
            ));
        }
        if let Some(unwanted) = UnwantedCharacter::find_in(name) {
            return Err(format!("The name must not contain {unwanted}."));
        }
        // Before the forbidden characters: `bit.ly/x` is refused for its
        // link, not for its slash.
        if let Some(link) = WebAddress::find_in(name) {
            let mut reason = format!(
                "The name must not contain a link or web address, and '{}' reads as one.",
                link.found
            );
            if link.only_a_domain_name {
                reason.push_str(" If it is part of your name, put a space after the dot.");
            }
            return Err(reason);
        }
        if let Some(c) = name.chars().find(|c| FORBIDDEN_CHARACTERS.contains(c)) {
            return Err(format!("The name must not contain the character '{c}'."));
        }
        Ok(Self(name.to_owned()))
    }
}

impl AsRef<str> for SubscriberName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_name_of_exactly_256_graphemes_is_accepted() {
        let name = "ё".repeat(256);
        assert!(SubscriberName::parse(&name).is_ok());
    }

    #[test]
    fn a_name_longer_than_256_graphemes_is_rejected() {
        let name = "a".repeat(257);
        assert!(SubscriberName::parse(&name).is_err());
    }

    #[test]
    fn combining_characters_count_as_one_grapheme() {
        // 256 times "e" followed by a combining acute accent: 512 chars, 256 graphemes.
        let name = "e\u{301}".repeat(256);
        assert!(SubscriberName::parse(&name).is_ok());
    }

    #[test]
    fn whitespace_only_names_are_rejected() {
        for raw in ["", " ", "\t\n", "\u{3000}"] {
            assert!(SubscriberName::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn names_with_a_forbidden_character_are_rejected_and_the_reason_names_it() {
        for c in FORBIDDEN_CHARACTERS {
            let err = SubscriberName::parse(&format!("Ursula {c} Le Guin")).unwrap_err();
            assert!(err.contains(c), "reason for {c:?} was {err:?}");
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let name = SubscriberName::parse("  Ursula Le Guin \n").unwrap();
        assert_eq!(name.as_ref(), "Ursula Le Guin");
    }

    #[test]
    fn control_and_formatting_characters_inside_a_name_are_rejected_by_code_point() {
        let cases = [
            ("Ursula\0Le Guin", "U+0000", "NUL"),
            ("Ursula\r\nBcc: victim@example.com", "U+000D", "CR LF"),
            ("Ursula\nLe Guin", "U+000A", "LF"),
            ("Ursula\tLe Guin", "U+0009", "TAB"),
            ("Ursula\u{202E}niuG eL", "U+202E", "right-to-left override"),
            (
                "Ursula\u{2066}Le Guin\u{2069}",
                "U+2066",
                "left-to-right isolate",
            ),
            ("Ursula\u{200B}Le Guin", "U+200B", "zero width space"),
            ("Ursula\u{FEFF}Le Guin", "U+FEFF", "byte order mark"),
            ("Ursula\u{AD}Le Guin", "U+00AD", "soft hyphen"),
            ("Ursula\u{2028}Le Guin", "U+2028", "line separator"),
        ];
        for (raw, code_point, case) in cases {
            let err = SubscriberName::parse(raw).expect_err(case);
            assert!(err.contains(code_point), "{case}: {err}");
            assert!(
                err.starts_with("The name must not contain"),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn the_reason_for_a_nul_says_what_it_is() {
        assert_eq!(
            SubscriberName::parse("a\0b").unwrap_err(),
            "The name must not contain the control character U+0000 (null)."
        );
    }

    #[test]
    fn whitespace_controls_around_a_name_are_still_trimmed() {
        let name = SubscriberName::parse("\r\n\tUrsula\u{2028}\u{85}").unwrap();
        assert_eq!(name.as_ref(), "Ursula");
    }

    #[test]
    fn names_with_a_link_are_rejected_and_the_reason_says_so() {
        let cases = [
            "http://spam.example",
            "Ursula https://spam.example",
            "xyz://spam",
            "www.spam",
            "Win big at cheap-pills.shop",
            "bit.ly/x",
            "Example.Com",
            "EXAMPLE.COM",
        ];
        for raw in cases {
            let err = SubscriberName::parse(raw).expect_err(raw);
            assert!(err.contains("must not contain a link"), "{raw:?}: {err}");
        }
    }

    #[test]
    fn a_name_that_only_reads_as_a_domain_is_told_how_to_write_it() {
        let err = SubscriberName::parse("James.Bond").unwrap_err();
        assert_eq!(
            err,
            "The name must not contain a link or web address, and 'James.Bond' reads as one. \
             If it is part of your name, put a space after the dot."
        );
        assert!(SubscriberName::parse("James. Bond").is_ok());
    }

    #[test]
    fn ordinary_names_with_dots_hyphens_and_apostrophes_are_accepted() {
        let cases = [
            "J.R.R. Tolkien",
            "Dr. Jane Doe",
            "Ana-María O'Neil",
            "Mr.Smith",
            "St.John Rivers",
            "Jane Doe, M.Sc.",
            "Dipl.-Ing. Hans Müller",
            "Ursula K. Le Guin",
            "Þórunn Jónsdóttir",
            "山田 太郎",
        ];
        for raw in cases {
            let parsed = SubscriberName::parse(raw);
            assert_eq!(parsed.as_ref().map(AsRef::as_ref), Ok(raw), "{raw:?}");
        }
    }

    proptest! {
        #[test]
        fn any_short_name_without_forbidden_characters_or_links_is_accepted(
            name in "[\\p{L}\\p{N}][\\p{L}\\p{N} .,'-]{0,60}"
        ) {
            // Random letters around a dot can spell a domain ("ab.de").
            prop_assume!(WebAddress::find_in(&name).is_none());
            let parsed = SubscriberName::parse(&name).expect("valid name rejected");
            prop_assert_eq!(parsed.as_ref(), name.trim());
        }

        #[test]
        fn any_control_or_formatting_character_inside_a_name_is_rejected(
            prefix in "[a-zA-Z]{1,10}",
            c in "[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]",
            suffix in "[a-zA-Z]{1,10}",
        ) {
            let err = SubscriberName::parse(&format!("{prefix}{c}{suffix}")).unwrap_err();
            let code_point = format!("U+{:04X}", u32::from(c.chars().next().unwrap()));
            prop_assert!(err.contains(&code_point), "{}", err);
        }

        #[test]
        fn any_name_with_a_forbidden_character_is_rejected(
            prefix in "[a-z ]{0,10}",
            c in proptest::sample::select(FORBIDDEN_CHARACTERS.to_vec()),
            suffix in "[a-z ]{0,10}",
        ) {
            let name = format!("{prefix}{c}{suffix}");
            prop_assert!(SubscriberName::parse(&name).is_err());
        }
    }
}
