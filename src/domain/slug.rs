//! An issue's address in the public archive, `/archive/{slug}`: lowercase
//! ASCII letters and digits in words joined by single hyphens, at most
//! [`Slug::MAX_LEN`] bytes. A slug is made once from the title
//! ([`Slug::from_title`]) and read back from addresses ([`Slug::parse`]);
//! either way it holds nothing that needs escaping in a URL, an HTML
//! attribute or XML, and nothing Postgres would refuse.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    /// Long enough for a title's first words, short enough for a link that
    /// reads well; the suffix that makes a slug unique fits inside it.
    pub const MAX_LEN: usize = 80;

    /// The slug a title suggests: its ASCII letters and digits, lowercased,
    /// each run of anything else one hyphen, cut at a word boundary to
    /// leave room for a suffix. A title with no ASCII letter or digit at
    /// all ("Ωμέγα") becomes `issue`; [`Slug::with_suffix`] tells them apart.
    pub fn from_title(title: &str) -> Self {
        let mut slug = String::with_capacity(title.len().min(Self::MAX_LEN));
        for word in title
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|word| !word.is_empty())
        {
            // Room for "-" and a suffix of up to six digits.
            if slug.len() + 1 + word.len() > Self::MAX_LEN - 7 {
                if slug.is_empty() {
                    slug.push_str(&word[..Self::MAX_LEN - 7]);
                }
                break;
            }
            if !slug.is_empty() {
                slug.push('-');
            }
            slug.push_str(word);
        }
        if slug.is_empty() {
            slug.push_str("issue");
        }
        slug.make_ascii_lowercase();
        Self(slug)
    }

    /// This slug with `-{n}` after it: how a second issue of the same title
    /// gets an address of its own.
    pub fn with_suffix(&self, n: u32) -> Self {
        Self(format!("{}-{n}", self.0))
    }

    /// A slug as an address gives it, or why it cannot be one.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("The address names no issue.".into());
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!(
                "An issue's address is at most {} characters long.",
                Self::MAX_LEN
            ));
        }
        let well_formed = raw.split('-').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
        if !well_formed {
            return Err(
                "An issue's address is lowercase letters and digits, in words joined by hyphens."
                    .into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Slug {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Slug;
    use proptest::prelude::*;

    #[test]
    fn a_title_becomes_lowercase_words_joined_by_hyphens() {
        for (title, slug) in [
            ("Hello, World!", "hello-world"),
            ("  Issue #12: Rust & Tokio  ", "issue-12-rust-tokio"),
            ("Café crème", "caf-cr-me"),
            ("Ωμέγα", "issue"),
            ("---", "issue"),
        ] {
            assert_eq!(Slug::from_title(title).as_str(), slug, "{title:?}");
        }
    }

    #[test]
    fn a_long_title_is_cut_at_a_word_with_room_for_a_suffix() {
        let title = "word ".repeat(40);
        let slug = Slug::from_title(&title).with_suffix(999_999);
        assert!(slug.as_str().len() <= Slug::MAX_LEN, "{slug}");
        assert!(!slug.as_str().contains("--"), "{slug}");
        let one_word = "x".repeat(200);
        let slug = Slug::from_title(&one_word).with_suffix(999_999);
        assert!(slug.as_str().len() <= Slug::MAX_LEN, "{slug}");
    }

    #[test]
    fn addresses_that_are_not_slugs_are_refused_with_a_reason() {
        for raw in [
            "",
            "Upper",
            "two--hyphens",
            "-leading",
            "trailing-",
            "sp ace",
            "nul\0",
            "dot.dot",
            "%2e%2e",
            "é",
            &"a".repeat(81),
        ] {
            assert!(Slug::parse(raw).is_err(), "{raw:?} was taken for a slug");
        }
        assert_eq!(Slug::parse("issue-12").unwrap().as_str(), "issue-12");
    }

    proptest! {
        #[test]
        fn every_slug_made_from_a_title_parses_back(title in ".{0,200}", n in 2u32..1_000_000) {
            let slug = Slug::from_title(&title);
            prop_assert_eq!(Slug::parse(slug.as_str()), Ok(slug.clone()));
            let suffixed = slug.with_suffix(n);
            prop_assert_eq!(Slug::parse(suffixed.as_str()), Ok(suffixed.clone()));
        }
    }
}
