use crate::domain::unwanted_characters::UnwantedCharacter;

/// Where an imported list's consent came from, as the admin attests it
/// ("signed up on our old site's form, double opt-in, 2019-2024"): kept with
/// the import, it is the evidence for every reader it confirmed. Trimmed, 1
/// to [`ConsentSource::MAX_CHARS`] characters, free of control and
/// invisible characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentSource(String);

impl ConsentSource {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let source = raw.trim();
        if source.is_empty() {
            return Err(
                "Say where the readers' consent came from: attesting it takes a source.".into(),
            );
        }
        if source.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "Where the consent came from must be at most {} characters long.",
                Self::MAX_CHARS
            ));
        }
        if let Some(unwanted) = UnwantedCharacter::find_in(source) {
            return Err(format!(
                "Where the consent came from must not contain {unwanted}."
            ));
        }
        Ok(Self(source.to_owned()))
    }
}

impl AsRef<str> for ConsentSource {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::ConsentSource;

    #[test]
    fn a_source_is_trimmed_and_must_say_something_plain() {
        assert_eq!(
            ConsentSource::parse("  old site form ").unwrap().as_ref(),
            "old site form"
        );
        for bad in ["", "   ", "a\u{0}b", "a\u{202E}b"] {
            assert!(ConsentSource::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ConsentSource::parse(&"x".repeat(501)).is_err());
    }
}
