use rand::{RngExt, distr::Alphanumeric};
use sha2::{Digest, Sha256};

/// The secret in a confirmation link. Generated from the thread-local CSPRNG
/// (ChaCha12 seeded from the OS): 32 characters from a 62-letter alphabet carry
/// about 190 bits, far beyond guessing range.
#[derive(Clone, PartialEq, Eq)]
pub struct SubscriptionToken(String);

impl SubscriptionToken {
    pub const LENGTH: usize = 32;

    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let token = (0..Self::LENGTH)
            .map(|_| char::from(rng.sample(Alphanumeric)))
            .collect();
        Self(token)
    }

    /// Accepts exactly what [`SubscriptionToken::generate`] produces, so a
    /// token of the wrong shape is refused before it reaches the database.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() != Self::LENGTH || !raw.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "A subscription token is {} letters and digits.",
                Self::LENGTH
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// What the database stores instead of the token. The token is a long
    /// random value, so a plain SHA-256 cannot be reversed by guessing, and a
    /// copy of the database cannot confirm anyone.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

impl AsRef<str> for SubscriptionToken {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Tokens are credentials: keep them out of logs and panic messages.
impl std::fmt::Debug for SubscriptionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubscriptionToken([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_are_32_alphanumeric_characters() {
        let token = SubscriptionToken::generate();
        assert_eq!(token.as_ref().len(), 32);
        assert!(token.as_ref().bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn generated_tokens_differ() {
        let tokens: std::collections::HashSet<String> = (0..1000)
            .map(|_| SubscriptionToken::generate().as_ref().to_owned())
            .collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn debug_output_does_not_reveal_the_token() {
        let token = SubscriptionToken::generate();
        assert!(!format!("{token:?}").contains(token.as_ref()));
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_token() {
        let token = SubscriptionToken::parse("abcdefghijklmnopqrstuvwxyz012345").unwrap();
        let hex: String = token.hash().iter().map(|b| format!("{b:02x}")).collect();
        // printf abcdefghijklmnopqrstuvwxyz012345 | sha256sum
        assert_eq!(
            hex,
            "653bb1245e828fcda4fa53fcd5a3def5bd7654e651f54b4132b73d74e64435c4"
        );
    }

    #[test]
    fn tokens_of_the_wrong_shape_are_rejected() {
        let too_short = "a".repeat(31);
        let too_long = "a".repeat(33);
        let wrong_alphabet = format!("{}-", "a".repeat(31));
        let non_ascii = format!("{}é", "a".repeat(30));
        for raw in ["", &too_short, &too_long, &wrong_alphabet, &non_ascii] {
            assert!(SubscriptionToken::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    proptest! {
        #[test]
        fn any_generated_token_parses_back(_seed in 0u8..) {
            let token = SubscriptionToken::generate();
            prop_assert_eq!(SubscriptionToken::parse(token.as_ref()).unwrap(), token);
        }
    }
}
