//! Whether a piece of text carries a link: a scheme (`https://`, `xyz://`),
//! a `www.` host, or a word that reads as a domain name (`example.com`,
//! `bit.ly`). Mail clients turn all three into links, and people type them
//! into a browser.
//!
//! "Reads as a domain name" is decided with the list of real top-level
//! domains (IANA's root zone, from the `tld` crate), because nothing in the
//! shape of a word tells `Mr.Smith` from `Spam.Click`: only the fact that
//! `.click` is a top-level domain and `.smith` is not. Two more rules keep
//! abbreviations out: the name just under the top-level domain must be at
//! least two characters long (registries hold back one-character names, so
//! `M.Sc.` is an abbreviation, not a host in `.sc`), and every label must be
//! a valid host label (letters, digits and inner hyphens, so `Dipl.-Ing.` is
//! no host in `.ing`). What is left over are names written without a space
//! after a dot whose last word happens to be a top-level domain
//! (`James.Bond`, `Dr.med.`): refused, with a reason that says how to write
//! them.

/// A link found in a piece of text, to name in a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebAddress {
    /// The word it was found in, as typed.
    pub found: String,
    /// Whether it only reads as a domain name, which a person may have typed
    /// without meaning one.
    pub only_a_domain_name: bool,
}

impl WebAddress {
    /// The first link in `text`, if any.
    pub fn find_in(text: &str) -> Option<Self> {
        if let Some(word) = text.split_whitespace().find(|w| w.contains("://")) {
            return Some(Self {
                found: word.to_owned(),
                only_a_domain_name: false,
            });
        }
        text.split(|c: char| !is_host_character(c))
            .find_map(|word| {
                let host = as_host(word);
                if host.starts_with("www.") {
                    Some(false)
                } else if reads_as_a_host(&host) {
                    Some(true)
                } else {
                    None
                }
                .map(|only_a_domain_name| Self {
                    found: word.trim_matches(|c| is_dot(c) || c == '-').to_owned(),
                    only_a_domain_name,
                })
            })
    }
}

fn is_host_character(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || is_dot(c)
}

/// The full stop and the dots that IDNA maps to it: browsers accept
/// `example。com` for `example.com`.
fn is_dot(c: char) -> bool {
    matches!(c, '.' | '\u{3002}' | '\u{FF0E}' | '\u{FF61}')
}

/// A word as a host name: lower case, dots as full stops, without the
/// punctuation around it (a sentence's last full stop, a leading hyphen).
fn as_host(word: &str) -> String {
    word.chars()
        .map(|c| if is_dot(c) { '.' } else { c })
        .collect::<String>()
        .trim_matches(|c| c == '.' || c == '-')
        .to_lowercase()
}

/// Whether `host` ends in a domain name or an IPv4 address. Only the end
/// counts: in `a..b.example.com` a link finder still finds `b.example.com`.
fn reads_as_a_host(host: &str) -> bool {
    let labels: Vec<&str> = host
        .rsplit('.')
        .take_while(|label| is_host_label(label))
        .collect();
    match labels.as_slice() {
        [d, c, b, a, ..] if [a, b, c, d].iter().all(|l| is_number(l)) => true,
        [tld, name, ..] => tld::exist(tld) && name.chars().count() >= 2,
        _ => false,
    }
}

fn is_host_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_alphanumeric() || c == '-')
}

fn is_number(label: &str) -> bool {
    label.len() <= 3 && label.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn links_are_found_and_quoted_as_typed() {
        let cases = [
            ("http://spam.example", "http://spam.example", false),
            (
                "Win at https://Spam.Example now",
                "https://Spam.Example",
                false,
            ),
            ("xyz://anything", "xyz://anything", false),
            ("see javascript://%0aalert", "javascript://%0aalert", false),
            ("www.example", "www.example", false),
            ("WWW.Example.org", "WWW.Example.org", false),
            ("www。example", "www。example", false),
            ("example.com", "example.com", true),
            ("Visit example.com.", "example.com", true),
            ("EXAMPLE.COM", "EXAMPLE.COM", true),
            ("Example.Com", "Example.Com", true),
            ("bit.ly/x", "bit.ly", true),
            ("Ada (cheap-pills.shop)", "cheap-pills.shop", true),
            ("mail spam@evil.click", "evil.click", true),
            ("-evil.com", "evil.com", true),
            ("a..b.example.co.uk", "a..b.example.co.uk", true),
            ("bücher.de", "bücher.de", true),
            ("example。com", "example。com", true),
            ("example．com", "example．com", true),
            ("xn--bcher-kva.xn--p1ai", "xn--bcher-kva.xn--p1ai", true),
            ("192.0.2.1", "192.0.2.1", true),
            ("James.Bond", "James.Bond", true),
            ("Ada Lovelace, ada.lovelace.name", "ada.lovelace.name", true),
        ];
        for (text, found, only_a_domain_name) in cases {
            assert_eq!(
                WebAddress::find_in(text),
                Some(WebAddress {
                    found: found.to_owned(),
                    only_a_domain_name
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn names_with_dots_and_abbreviations_are_not_links() {
        let cases = [
            "J.R.R. Tolkien",
            "J.R.R.Tolkien",
            "Dr. Jane Doe",
            "Mr.Smith",
            "Mr. Smith",
            "St.John Rivers",
            "Ana-María O'Neil",
            "Ursula K. Le Guin",
            "Jane Doe, M.Sc.",
            "Jane Doe, B.Sc",
            "Dipl.-Ing. Hans Müller",
            "Ph.D. Jane",
            "Jane Doe Ph.D",
            "John Smith Jr.",
            "Ma.Luisa Santos",
            "Jean-Luc.Picard",
            "x.com",
            "Version 3.14",
            "1.2.3",
            "...",
            ".com",
            "com.",
            "Ursula",
            "",
        ];
        for text in cases {
            assert_eq!(WebAddress::find_in(text), None, "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn any_name_under_a_real_top_level_domain_is_a_link(
            before in "[A-Za-z ]{0,10}",
            name in "[a-z0-9][a-z0-9-]{0,10}[a-z0-9]",
            tld in proptest::sample::select(vec!["com", "net", "org", "ly", "io", "shop", "click", "de", "co.uk"]),
            after in "[ ,;!?]{0,3}",
            upper in any::<bool>(),
        ) {
            let host = format!("{name}.{tld}");
            let host = if upper { host.to_uppercase() } else { host };
            let text = format!("{before} {host}{after}");
            let found = WebAddress::find_in(&text);
            prop_assert_eq!(found.map(|f| f.found), Some(host));
        }

        #[test]
        fn any_scheme_is_a_link(
            scheme in "[a-zA-Z][a-zA-Z0-9+.-]{0,8}",
            rest in "[^\\s]{0,12}",
        ) {
            let text = format!("Hi {scheme}://{rest}");
            prop_assert!(WebAddress::find_in(&text).is_some(), "{:?}", text);
        }

        #[test]
        fn names_without_dots_are_never_links(name in "[\\p{L}\\p{N}][\\p{L}\\p{N} ,'-]{0,60}") {
            prop_assert_eq!(WebAddress::find_in(&name), None);
        }

        #[test]
        fn initials_followed_by_a_space_are_never_links(
            initials in "([A-Z]\\. ?){1,4}",
            surname in "[A-Z][a-z]{1,12}",
        ) {
            let name = format!("{initials} {surname}");
            prop_assert_eq!(WebAddress::find_in(&name), None);
        }
    }
}
