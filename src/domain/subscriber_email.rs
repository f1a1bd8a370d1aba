use email_address::{EmailAddress, Options};

/// An address we can send a confirmation email to: a syntactically valid
/// `local@domain.tld`, with surrounding whitespace trimmed. Display names
/// ("Ada <ada@example.com>"), domain literals and dotless domains are refused:
/// none of them belong in a subscription form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberEmail(String);

impl SubscriberEmail {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let candidate = raw.trim();
        if candidate.is_empty() {
            return Err("The email address must not be empty.".into());
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
    fn surrounding_whitespace_is_trimmed() {
        let email = SubscriberEmail::parse("  ursula@domain.com\t").unwrap();
        assert_eq!(email.as_ref(), "ursula@domain.com");
    }

    #[test]
    fn the_reason_quotes_the_rejected_address() {
        let err = SubscriberEmail::parse("not-an-address").unwrap_err();
        assert!(err.contains("not-an-address"), "{err}");
    }

    proptest! {
        #[test]
        fn ordinary_addresses_are_accepted_unchanged(
            address in "[a-z0-9]{1,12}([._+-][a-z0-9]{1,8})?@[a-z0-9]{1,12}(-[a-z0-9]{1,6})?\\.[a-z]{2,6}"
        ) {
            let parsed = SubscriberEmail::parse(&format!(" {address} ")).expect("valid address rejected");
            prop_assert_eq!(parsed.as_ref(), address.as_str());
        }
    }
}
