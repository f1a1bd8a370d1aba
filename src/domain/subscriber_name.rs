use unicode_segmentation::UnicodeSegmentation;

/// A subscriber's name as we greet them: trimmed, never empty, at most
/// [`SubscriberName::MAX_GRAPHEMES`] user-perceived characters, and free of the
/// characters that are most often used to smuggle markup or paths.
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

    proptest! {
        #[test]
        fn any_short_name_without_forbidden_characters_is_accepted(
            name in "[\\p{L}\\p{N}][\\p{L}\\p{N} .,'-]{0,60}"
        ) {
            let parsed = SubscriberName::parse(&name).expect("valid name rejected");
            prop_assert_eq!(parsed.as_ref(), name.trim());
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
