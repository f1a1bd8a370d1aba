//! The name an admin signs in with. It is typed on a sign-in form and on the
//! command line, shown on the dashboard and written to the audit log, so it
//! keeps to a small alphabet that cannot hide anything: ASCII lower-case
//! letters, digits, `.`, `_` and `-`. Letter case is folded on the way in, so
//! `Ada` and `ada` are one account (the schema's unique index on
//! `lower(username)` says the same).

use std::fmt;

/// The longest username we accept, in characters (all of them ASCII).
const MAX_LENGTH: usize = 64;

/// 1..=64 characters from `[a-z0-9._-]`, stored and compared in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUsername(String);

impl AdminUsername {
    /// Trims surrounding whitespace and folds ASCII letters to lower case;
    /// refuses anything else outside the alphabet, with a reason that names
    /// the problem.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let candidate = raw.trim();
        if candidate.is_empty() {
            return Err("The username must not be empty.".into());
        }
        // Checked before folding case: a Unicode lower-casing would turn the
        // Kelvin sign (U+212A) into an ASCII `k`, and two different inputs
        // into one account.
        if let Some(c) = candidate
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "The username must not contain {c:?}: use only letters a-z, digits, \
                 '.', '_' and '-'."
            ));
        }
        // Every character is ASCII by now, so bytes count characters.
        if candidate.len() > MAX_LENGTH {
            return Err(format!(
                "The username must be at most {MAX_LENGTH} characters long."
            ));
        }
        Ok(Self(candidate.to_ascii_lowercase()))
    }
}

impl AsRef<str> for AdminUsername {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AdminUsername {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::AdminUsername;

    #[test]
    fn a_username_is_trimmed_and_lower_cased() {
        let username = AdminUsername::parse("  Ada.Lovelace_1-x \n").unwrap();
        assert_eq!(username.as_ref(), "ada.lovelace_1-x");
        assert_eq!(username.to_string(), "ada.lovelace_1-x");
    }

    #[test]
    fn a_username_of_one_to_64_characters_is_accepted() {
        for length in [1, 64] {
            let raw = "a".repeat(length);
            assert!(
                AdminUsername::parse(&raw).is_ok(),
                "{length} characters were refused"
            );
        }
    }

    #[test]
    fn an_empty_or_blank_username_is_refused() {
        for raw in ["", "   ", "\t\n"] {
            let reason = AdminUsername::parse(raw).unwrap_err();
            assert!(reason.contains("empty"), "{raw:?}: {reason}");
        }
    }

    #[test]
    fn a_username_longer_than_64_characters_is_refused() {
        let reason = AdminUsername::parse(&"a".repeat(65)).unwrap_err();
        assert!(reason.contains("at most 64"), "{reason}");
    }

    #[test]
    fn a_username_with_a_character_outside_the_alphabet_is_refused_and_the_character_named() {
        let cases = [
            ("ada lovelace", "' '"),
            ("ada@example.com", "'@'"),
            ("adé", "'é'"),
            // The Kelvin sign lower-cases to an ASCII `k` under Unicode rules.
            ("\u{212A}ate", "'\u{212A}'"),
            ("ada\0", "'\\0'"),
            ("ada\u{200B}", "'\\u{200b}'"),
            ("ad\na", "'\\n'"),
        ];
        for (raw, named) in cases {
            let reason = AdminUsername::parse(raw).unwrap_err();
            assert!(reason.contains(named), "{raw:?}: {reason}");
        }
    }
}
