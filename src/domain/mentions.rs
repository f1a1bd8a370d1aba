//! The ways free text can name a person: their address in any letter case,
//! its local part, the mailbox without a `+tag`, the address URL-encoded,
//! their name and the words of it. An erasure finds these in text it did not
//! write (an admin's search in the audit log, a username typed at a failed
//! sign-in) and cuts them out, leaving the rest of the text readable.
//!
//! A mention counts only as a whole word: `ada` is found in `ada@x.example`
//! and in `search "Ada"`, not in `adamant`. Matching ignores letter case.
//! A common local part or name word (`info`, `news`) is cut from unrelated
//! text too, an issue's title in the audit log say: an erasure errs on the
//! side of cutting, and the entry keeps its action, actor and time.

/// What a mention is replaced with.
pub const ERASED: &str = "[erased]";

/// Name words shorter than this are not looked for on their own (the whole
/// name still is): `Al` or `Jo` would cut through every other sentence.
const SHORTEST_NAME_WORD: usize = 3;

/// The forms of one person, lower-cased, longest first so that the
/// address is cut whole before its local part is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mentions {
    forms: Vec<String>,
}

impl Mentions {
    /// The forms of the person with `address` and `name`.
    pub fn of(address: &str, name: &str) -> Self {
        let address = address.trim().to_lowercase();
        let name = name.trim().to_lowercase();
        let mut forms = vec![address.clone()];
        if let Some((local, domain)) = address.rsplit_once('@') {
            forms.push(local.to_owned());
            if let Some((mailbox, _tag)) = local.split_once('+') {
                forms.push(mailbox.to_owned());
                forms.push(format!("{mailbox}@{domain}"));
            }
        }
        forms.push(url_encoded(&address));
        if !name.is_empty() {
            forms.push(name.clone());
            forms.push(url_encoded(&name));
            forms.push(name.replace(' ', "+"));
            forms.extend(
                name.split(|c: char| !c.is_alphanumeric())
                    .filter(|word| word.chars().count() >= SHORTEST_NAME_WORD)
                    .map(str::to_owned),
            );
        }
        forms.retain(|form| !form.is_empty());
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        forms.dedup();
        Self { forms }
    }

    /// The forms, lower-cased, longest first.
    pub fn forms(&self) -> &[String] {
        &self.forms
    }

    /// `ILIKE` patterns, one per form, that match any text holding the form
    /// anywhere: a first sieve for the database, which [`Mentions::scrub`]
    /// then judges word by word.
    pub fn like_patterns(&self) -> Vec<String> {
        self.forms
            .iter()
            .map(|form| {
                let escaped = form
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                format!("%{escaped}%")
            })
            .collect()
    }

    /// `text` with every mention replaced by [`ERASED`]; `None` when it
    /// mentions nobody.
    pub fn scrub(&self, text: &str) -> Option<String> {
        let mut kept = String::with_capacity(text.len());
        let mut changed = false;
        let mut at = 0;
        'text: while let Some(c) = text[at..].chars().next() {
            let starts_a_word = text[..at]
                .chars()
                .next_back()
                .is_none_or(|before| !before.is_alphanumeric() || !c.is_alphanumeric());
            if starts_a_word {
                for form in &self.forms {
                    let Some(end) = match_at(text, at, form) else {
                        continue;
                    };
                    let last = text[..end].chars().next_back();
                    let ends_a_word = text[end..].chars().next().is_none_or(|after| {
                        !after.is_alphanumeric() || !last.is_some_and(char::is_alphanumeric)
                    });
                    if ends_a_word {
                        kept.push_str(ERASED);
                        changed = true;
                        at = end;
                        continue 'text;
                    }
                }
            }
            kept.push(c);
            at += c.len_utf8();
        }
        changed.then_some(kept)
    }
}

/// Where `form` (lower case) ends if `text` has it at byte `start`, letter
/// case aside.
fn match_at(text: &str, start: usize, form: &str) -> Option<usize> {
    let mut lowered = String::with_capacity(form.len());
    for (offset, c) in text[start..].char_indices() {
        lowered.extend(c.to_lowercase());
        if !form.starts_with(&lowered) {
            return None;
        }
        if lowered.len() == form.len() {
            return Some(start + offset + c.len_utf8());
        }
    }
    None
}

/// `text` as a URL carries it: every byte outside the unreserved characters
/// as `%XX`.
fn url_encoded(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            // Lower-cased like every form: matching ignores case.
            encoded.push_str(&format!("%{byte:02x}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zebulon() -> Mentions {
        Mentions::of("Zebulon.Quirke+Letters@Example.org", "Zebulon Quirke")
    }

    #[test]
    fn every_form_of_the_address_and_the_name_is_looked_for() {
        let forms = zebulon().forms().to_vec();
        for expected in [
            "zebulon.quirke+letters@example.org",
            "zebulon.quirke+letters",
            "zebulon.quirke",
            "zebulon.quirke@example.org",
            "zebulon.quirke%2bletters%40example.org",
            "zebulon quirke",
            "zebulon%20quirke",
            "zebulon+quirke",
            "zebulon",
            "quirke",
        ] {
            assert!(
                forms.iter().any(|f| f == expected),
                "{expected} not in {forms:?}"
            );
        }
    }

    #[test]
    fn each_mention_is_cut_and_the_rest_of_the_text_kept() {
        let mentions = zebulon();
        for (text, scrubbed) in [
            (
                r#"search "ZEBULON.QUIRKE+letters@example.org", status """#,
                r#"search "[erased]", status """#,
            ),
            (
                "q=zebulon.quirke%2Bletters%40example.org&status=",
                "q=[erased]&status=",
            ),
            ("Zebulon Quirke exported", "[erased] exported"),
            ("wrote to zebulon.quirke@example.org", "wrote to [erased]"),
            ("a search for quirke", "a search for [erased]"),
            ("name=Zebulon+Quirke", "name=[erased]"),
        ] {
            assert_eq!(mentions.scrub(text).as_deref(), Some(scrubbed), "{text}");
        }
    }

    #[test]
    fn text_that_mentions_them_only_inside_other_words_is_left_alone() {
        let mentions = Mentions::of("ada@example.com", "Ada Byron");
        for text in [
            "adamant",
            "a Byronic hero",
            "status confirmed, no search",
            "",
        ] {
            assert_eq!(mentions.scrub(text), None, "{text}");
        }
        assert_eq!(
            mentions.scrub("Ada, adamant").as_deref(),
            Some("[erased], adamant")
        );
    }

    #[test]
    fn short_name_words_are_looked_for_only_as_the_whole_name() {
        let mentions = Mentions::of("al@example.com", "Al Wu");
        assert_eq!(
            mentions.scrub("al wu searched").as_deref(),
            Some("[erased] searched")
        );
        assert_eq!(mentions.scrub("wu"), None);
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        let mentions = Mentions::of("a_b%c@example.com", "");
        assert!(
            mentions
                .like_patterns()
                .contains(&"%a\\_b\\%c@example.com%".to_owned())
        );
    }
}
