//! What the service derives from its one configured secret
//! (`application.hmac_secret`): the key that signs unsubscribe links and the
//! key that hashes the addresses kept on the suppression list after their
//! subscriber was erased.
//!
//! Each purpose has its own key, derived as HMAC-SHA256(secret, purpose), so
//! that a value made for one purpose is never accepted for another. Changing
//! the secret breaks every unsubscribe link already sent and makes erased
//! addresses unrecognisable: it is set once per deployment.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted, in bytes: HMAC-SHA256's own key size.
pub const MIN_SECRET_BYTES: usize = 32;

/// The derived keys. Cheap to clone.
#[derive(Clone)]
pub struct Keys {
    unsubscribe: [u8; 32],
    address: [u8; 32],
    preferences_form: [u8; 32],
}

impl Keys {
    /// Derives the keys, or says why the secret cannot be used.
    pub fn derive(secret: &SecretString) -> Result<Self, String> {
        let secret = secret.expose_secret().as_bytes();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "application.hmac_secret (APP_APPLICATION__HMAC_SECRET) must be at least \
                 {MIN_SECRET_BYTES} bytes; it is {}. Generate one with `openssl rand -hex 32`.",
                secret.len()
            ));
        }
        let derive = |purpose: &[u8]| -> [u8; 32] { mac(secret, &[purpose]) };
        Ok(Self {
            unsubscribe: derive(b"unsubscribe link"),
            address: derive(b"suppressed address"),
            preferences_form: derive(b"preferences form"),
        })
    }

    /// The token in `subscriber_id`'s unsubscribe link.
    pub fn unsubscribe_token(&self, subscriber_id: Uuid) -> UnsubscribeToken {
        let tag = mac(&self.unsubscribe, &[subscriber_id.as_bytes()]);
        token_from(subscriber_id, &tag)
    }

    /// The token in the unsubscribe link of previews and test sends. It has
    /// the shape of a subscriber's token, but its id is the nil UUID (which
    /// no subscriber has: ids are random) and its tag is the HMAC of a
    /// label rather than of the id: a tag made for it never verifies as
    /// anyone's token, and a subscriber's tag never verifies as it.
    pub fn test_unsubscribe_token(&self) -> UnsubscribeToken {
        let tag = mac(&self.unsubscribe, &[TEST_SEND_LABEL]);
        token_from(Uuid::nil(), &tag)
    }

    /// Whom a token from an unsubscribe link names, if this service signed
    /// it: a subscriber, or no one (the test sends' token). The tag is
    /// compared in constant time.
    pub fn verify_unsubscribe_token(&self, raw: &str) -> Result<Unsubscriber, BadToken> {
        if raw.len() != UnsubscribeToken::BYTES * 2 {
            return Err(BadToken);
        }
        let bytes = hex::decode(raw).map_err(|_| BadToken)?;
        let (id, tag) = bytes.split_at(16);
        let id = Uuid::from_slice(id).expect("16 bytes");
        let mut check = HmacSha256::new_from_slice(&self.unsubscribe).expect("any key length");
        if id.is_nil() {
            check.update(TEST_SEND_LABEL);
            check.verify_truncated_left(tag).map_err(|_| BadToken)?;
            return Ok(Unsubscriber::TestSend);
        }
        check.update(id.as_bytes());
        check.verify_truncated_left(tag).map_err(|_| BadToken)?;
        Ok(Unsubscriber::Subscriber(id))
    }

    /// The token the preferences page's form carries for `subscriber_id`:
    /// a `POST` without it did not come from the page, so saving takes
    /// opening the page first, not just knowing the link.
    pub fn preferences_form_token(&self, subscriber_id: Uuid) -> String {
        hex::encode(&mac(&self.preferences_form, &[subscriber_id.as_bytes()])[..16])
    }

    /// Whether `raw` is [`Keys::preferences_form_token`] for
    /// `subscriber_id`, compared in constant time.
    pub fn verify_preferences_form_token(&self, subscriber_id: Uuid, raw: &str) -> bool {
        let Ok(tag) = hex::decode(raw) else {
            return false;
        };
        if tag.len() != 16 {
            return false;
        }
        let mut check = HmacSha256::new_from_slice(&self.preferences_form).expect("any key length");
        check.update(subscriber_id.as_bytes());
        check.verify_truncated_left(&tag).is_ok()
    }

    /// The keyed hash of an address, compared case-insensitively: what the
    /// suppression list keeps. Without the secret it cannot be reversed by
    /// hashing guessed addresses.
    pub fn address_hash(&self, address: &str) -> Vec<u8> {
        mac(&self.address, &[address.to_lowercase().as_bytes()]).to_vec()
    }
}

/// Keys are secrets: keep them out of logs.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([REDACTED])")
    }
}

/// What the test sends' token signs in place of a subscriber id.
const TEST_SEND_LABEL: &[u8] = b"test send";

/// Whom an unsubscribe link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscriber {
    Subscriber(Uuid),
    /// The link of a preview or a test send: it unsubscribes no one.
    TestSend,
}

fn token_from(id: Uuid, tag: &[u8; 32]) -> UnsubscribeToken {
    let mut bytes = [0u8; UnsubscribeToken::BYTES];
    bytes[..16].copy_from_slice(id.as_bytes());
    bytes[16..].copy_from_slice(&tag[..UnsubscribeToken::TAG_BYTES]);
    UnsubscribeToken(hex::encode(bytes))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// An unsubscribe link's token: the subscriber id and the first 16 bytes of
/// its HMAC, in hex. Stateless on purpose: one issue to a million people
/// needs no million stored tokens, a link keeps working for as long as the
/// secret does, and it can be checked without a database round trip.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsubscribeToken(String);

impl UnsubscribeToken {
    const TAG_BYTES: usize = 16;
    const BYTES: usize = 16 + Self::TAG_BYTES;
}

impl AsRef<str> for UnsubscribeToken {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UnsubscribeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A token this service did not sign, or not a token at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadToken;

impl std::fmt::Display for BadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("This unsubscribe link is not valid: it may have been cut short when copied.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_for(secret: &str) -> Keys {
        Keys::derive(&SecretString::from(secret)).unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_names_its_subscriber() {
        let keys = keys_for(SECRET);
        let id = Uuid::new_v4();
        let token = keys.unsubscribe_token(id);
        assert_eq!(
            keys.verify_unsubscribe_token(token.as_ref()),
            Ok(Unsubscriber::Subscriber(id))
        );
    }

    #[test]
    fn the_test_sends_token_names_no_one_and_no_subscribers_token_passes_for_it() {
        let keys = keys_for(SECRET);
        let test = keys.test_unsubscribe_token();
        assert_eq!(
            keys.verify_unsubscribe_token(test.as_ref()),
            Ok(Unsubscriber::TestSend)
        );
        // Signed as a subscriber's, the nil id is no test token, and no one.
        let nil = keys.unsubscribe_token(Uuid::nil());
        assert_eq!(keys.verify_unsubscribe_token(nil.as_ref()), Err(BadToken));
        // The test tag on a subscriber's id names neither.
        let id = Uuid::new_v4();
        let grafted = format!("{}{}", id.simple(), &test.as_ref()[32..]);
        assert_eq!(keys.verify_unsubscribe_token(&grafted), Err(BadToken));
        // Another deployment's test token is not this one's.
        let foreign = keys_for("another secret that is long enough!").test_unsubscribe_token();
        assert_eq!(
            keys.verify_unsubscribe_token(foreign.as_ref()),
            Err(BadToken)
        );
    }

    #[test]
    fn a_forged_truncated_or_foreign_token_is_refused() {
        let keys = keys_for(SECRET);
        let id = Uuid::new_v4();
        let token = keys.unsubscribe_token(id).to_string();
        // Someone else's id with this tag.
        let other = format!("{}{}", Uuid::new_v4().simple(), &token[32..]);
        // One hex digit of the tag changed.
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        let foreign = keys_for("another secret that is long enough!").unsubscribe_token(id);
        for bad in [
            other.as_str(),
            flipped.as_str(),
            &token[..token.len() - 2],
            &token[..32],
            "",
            &format!("{token}00"),
            &token.replace(|c: char| c.is_ascii_digit(), "z"),
            foreign.as_ref(),
        ] {
            assert_eq!(keys.verify_unsubscribe_token(bad), Err(BadToken), "{bad}");
        }
    }

    #[test]
    fn an_address_hashes_the_same_in_any_letter_case_and_differs_by_key() {
        let keys_a = keys_for(SECRET);
        assert_eq!(
            keys_a.address_hash("Ada@Example.com"),
            keys_a.address_hash("ada@example.com")
        );
        assert_ne!(
            keys_a.address_hash("ada@example.com"),
            keys_for("another secret that is long enough!").address_hash("ada@example.com")
        );
    }

    #[test]
    fn a_short_secret_is_refused_with_the_setting_to_fix() {
        let error = Keys::derive(&SecretString::from("short")).unwrap_err();
        assert!(error.contains("APP_APPLICATION__HMAC_SECRET"), "{error}");
    }
}
