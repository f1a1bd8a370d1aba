use email_address::{EmailAddress, Options};
use unicode_segmentation::UnicodeSegmentation;

use crate::domain::unwanted_characters::UnwantedCharacter;

/// An address we can send a confirmation email to: a syntactically valid
/// `local@domain.tld`, with surrounding whitespace trimmed. Display names
/// ("Ada <ada@example.com>"), domain literals and dotless domains are refused:
/// none of them belong in a subscription form. So are control and invisible
/// formatting characters anywhere in it: an address goes into an email
/// header, where CR and LF start a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberEmail(String);

/// The mailbox an address delivers to, as far as the address alone tells:
/// lower case, without a `+tag`, and with Gmail's own rules applied. Many
/// spellings reach one inbox (`Victim+1@Example.com`, `v.i.c.t.i.m@gmail.com`),
/// so a limit on how much email one inbox may be sent counts mailboxes, not
/// spellings.
///
/// It may merge two inboxes that are really distinct (a provider where `+`
/// is an ordinary character, a server where letter case matters), which
/// only makes their shared limit stricter; it never splits one inbox in two.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox(String);

impl AsRef<str> for Mailbox {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl SubscriberEmail {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let candidate = raw.trim();
        if candidate.is_empty() {
            return Err("The email address must not be empty.".into());
        }
        // Before the syntax check, whose reason quotes the address back.
        if let Some(unwanted) = UnwantedCharacter::find_in(candidate) {
            return Err(format!("The email address must not contain {unwanted}."));
        }
        let options = Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        match EmailAddress::parse_with_options(candidate, options) {
            Ok(address) => Ok(Self(address.as_str().to_owned())),
            Err(e) => Err(format!(
                "'{candidate}' is not a valid email address: {}.",
                e.to_string().trim_end_matches('.')
            )),
        }
    }

    /// The mailbox this address delivers to (see [`Mailbox`]). The address
    /// itself is kept as typed: this is what limits count, not what is
    /// stored or sent to.
    pub fn mailbox(&self) -> Mailbox {
        let address = self.0.to_lowercase();
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Mailbox(address);
        };
        // Subaddressing: `victim+anything` is delivered to `victim` by Gmail,
        // Outlook, iCloud, Fastmail and most servers.
        let local = local
            .split_once('+')
            .map_or(local, |(mailbox, _tag)| mailbox);
        match domain {
            // Gmail ignores dots in the local part, and googlemail.com is the
            // same service under its older name.
            "gmail.com" | "googlemail.com" => {
                Mailbox(format!("{}@gmail.com", local.replace('.', "")))
            }
            _ => Mailbox(format!("{local}@{domain}")),
        }
    }
}

impl SubscriberEmail {
    /// The address as a page may show it to whoever holds a link to it
    /// (links get forwarded): enough for its owner to recognise it, too
    /// little for anyone else to write to it. The local part's first
    /// character, `•••` however long the rest is, then `@` and the domain:
    /// `a•••@example.com`. A local part of one character is not shown at
    /// all (`•••@example.com`): its first character would be the whole of
    /// it. A quoted local part is read inside its quotes.
    pub fn masked(&self) -> String {
        // The last `@`: a quoted local part may hold one; a domain never does.
        let (local, domain) = self.0.rsplit_once('@').expect("a parsed address has an @");
        let mut characters = local.trim_matches('"').graphemes(true);
        let first = characters.next().unwrap_or_default();
        if characters.next().is_none() {
            return format!("•••@{domain}");
        }
        format!("{first}•••@{domain}")
    }
}

impl AsRef<str> for SubscriberEmail {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubscriberEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn malformed_addresses_are_rejected() {
        for raw in [
            "",
            "   ",
            "ursuladomain.com",
            "@domain.com",
            "ursula@",
            "ursula@localhost",
            "ursula@@domain.com",
            "Ursula <ursula@domain.com>",
            "ursula@[127.0.0.1]",
            "urs ula@domain.com",
        ] {
            assert!(SubscriberEmail::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn a_masked_address_shows_the_first_character_and_the_domain_only() {
        for (address, masked) in [
            ("ada@example.com", "a•••@example.com"),
            (
                "Ada.Lovelace+news@mail.example.co.uk",
                "A•••@mail.example.co.uk",
            ),
            // However long the local part, the dots are the same three.
            ("ab@example.com", "a•••@example.com"),
            // One character would be all of it.
            ("a@example.com", "•••@example.com"),
            ("élodie@exämple.com", "é•••@exämple.com"),
            ("\"a@b\"@example.com", "a•••@example.com"),
        ] {
            let parsed =
                SubscriberEmail::parse(address).unwrap_or_else(|e| panic!("{address}: {e}"));
            assert_eq!(parsed.masked(), masked, "{address}");
        }
    }

    proptest! {
        #[test]
        fn a_masked_address_never_holds_the_whole_local_part(
            local in "[a-z0-9][a-z0-9_+-]{0,29}",
        ) {
            let address = SubscriberEmail::parse(&format!("{local}@example.com")).unwrap();
            let masked = address.masked();
            prop_assert!(masked.ends_with("•••@example.com"), "{}", masked);
            prop_assert!(masked.chars().count() <= "x•••@example.com".chars().count());
            prop_assert!(local.len() == 1 || masked.starts_with(&local[..1]));
        }
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let email = SubscriberEmail::parse("  ursula@domain.com\t").unwrap();
        assert_eq!(email.as_ref(), "ursula@domain.com");
    }

    #[test]
    fn the_reason_quotes_the_rejected_address() {
        let err = SubscriberEmail::parse("not-an-address").unwrap_err();
        assert!(err.contains("not-an-address"), "{err}");
    }

    #[test]
    fn control_and_formatting_characters_inside_an_address_are_rejected_by_code_point() {
        let cases = [
            ("ursula\0@example.com", "U+0000", "NUL"),
            (
                "ursula@example.com\r\nBcc: victim@example.com",
                "U+000D",
                "CR LF",
            ),
            ("ursula\t@example.com", "U+0009", "TAB"),
            (
                "ursula@\u{202E}moc.elpmaxe",
                "U+202E",
                "right-to-left override",
            ),
            ("urs\u{200B}ula@example.com", "U+200B", "zero width space"),
            ("ursula@exa\u{2060}mple.com", "U+2060", "word joiner"),
            ("\u{FEFF}ursula@example.com", "U+FEFF", "byte order mark"),
            (
                "ursula@example.com\u{2029}x",
                "U+2029",
                "paragraph separator",
            ),
        ];
        for (raw, code_point, case) in cases {
            let err = SubscriberEmail::parse(raw).expect_err(case);
            assert!(err.contains(code_point), "{case}: {err}");
            assert!(
                err.starts_with("The email address must not contain"),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn the_mailbox_is_what_the_address_delivers_to() {
        let cases = [
            ("Victim+1@Example.com", "victim@example.com"),
            ("victim+x@outlook.com", "victim@outlook.com"),
            ("victim@outlook.com", "victim@outlook.com"),
            ("victim+@example.com", "victim@example.com"),
            ("victim+a+b@example.com", "victim@example.com"),
            ("v.i.c.t.i.m@gmail.com", "victim@gmail.com"),
            ("V.I.C.T.I.M+spam@GMail.com", "victim@gmail.com"),
            ("victim@googlemail.com", "victim@gmail.com"),
            ("vic.tim+x@googlemail.com", "victim@gmail.com"),
            ("vic.tim@example.com", "vic.tim@example.com"),
            ("vic.tim@outlook.com", "vic.tim@outlook.com"),
            ("vic.tim@mail.gmail.com", "vic.tim@mail.gmail.com"),
            ("vic.tim@gmail.com.example", "vic.tim@gmail.com.example"),
        ];
        for (raw, mailbox) in cases {
            let email = SubscriberEmail::parse(raw).unwrap();
            assert_eq!(email.mailbox().as_ref(), mailbox, "{raw}");
        }
    }

    #[test]
    fn the_address_is_kept_as_typed() {
        let email = SubscriberEmail::parse("V.ictim+1@GMail.com").unwrap();
        assert_eq!(email.as_ref(), "V.ictim+1@GMail.com");
    }

    proptest! {
        #[test]
        fn tags_dots_and_case_never_change_a_gmail_mailbox(
            user in "[a-z0-9]{1,12}",
            dots in proptest::collection::vec(any::<bool>(), 12),
            tag in "(\\+[a-z0-9]{0,4}(\\.[a-z0-9]{1,4})?)?",
            domain in proptest::sample::select(vec!["gmail.com", "googlemail.com", "GMAIL.COM"]),
            upper in any::<bool>(),
        ) {
            let dotted: String = user
                .chars()
                .zip(&dots)
                .enumerate()
                .map(|(i, (c, dot))| if *dot && i > 0 { format!(".{c}") } else { c.to_string() })
                .collect();
            let local = if upper { dotted.to_uppercase() } else { dotted };
            let email = SubscriberEmail::parse(&format!("{local}{tag}@{domain}")).unwrap();
            let mailbox = email.mailbox();
            prop_assert_eq!(mailbox.as_ref(), format!("{user}@gmail.com"));
        }

        #[test]
        fn ordinary_addresses_are_accepted_unchanged(
            address in "[a-z0-9]{1,12}([._+-][a-z0-9]{1,8})?@[a-z0-9]{1,12}(-[a-z0-9]{1,6})?\\.[a-z]{2,6}"
        ) {
            let parsed = SubscriberEmail::parse(&format!(" {address} ")).expect("valid address rejected");
            prop_assert_eq!(parsed.as_ref(), address.as_str());
        }
    }
}
