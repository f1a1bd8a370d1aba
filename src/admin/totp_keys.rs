//! TOTP secrets sealed at rest: whoever reads `admins.totp_secret` (a dump,
//! a replica, a backup) or a pending enrolment in Redis gets ciphertext, not
//! the key to the admins' second factor.
//!
//! A sealed secret is AES-256-GCM under a key from the settings
//! (`admin.totp_key`), with a fresh random 96-bit nonce for every seal:
//!
//! ```text
//! "ts" | format 1 | key id | nonce (12) | ciphertext and tag (secret + 16)
//! ```
//!
//! The key id is a byte derived from the key itself, so that an operator
//! names no ids: when keys rotate, a value says which of the configured
//! keys (`admin.totp_key`, then `admin.previous_totp_keys`) sealed it. Two
//! keys may share an id (1 in 256); both are then tried, and the tag tells.
//!
//! The associated data names where the value belongs: the admin's row
//! ([`Place::Account`]) or the admin's pending enrolment
//! ([`Place::Enrolment`]). A value copied onto another admin's row, or from
//! a session into the table, does not open.
//!
//! Rows written before secrets were sealed hold the 20 plain bytes
//! [`TotpSecret::generate`] made. Those still open (as [`Opened::stale`]),
//! and so do values sealed under a previous key: the caller seals them
//! again under the current key (at sign-in, and `newsletter admin
//! reseal-totp` for every row at once).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use anyhow::anyhow;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::admin::totp::TotpSecret;
use crate::configuration::AdminSettings;

/// What every sealed value starts with, before the key id.
const MAGIC: &[u8] = b"ts\x01";

const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const KEY_BYTES: usize = 32;

/// The length of every secret made before secrets were sealed.
const PLAIN_SECRET_BYTES: usize = 20;

/// Where a sealed secret is kept; part of what the tag covers.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// `admins.totp_secret` of this admin.
    Account(Uuid),
    /// The pending enrolment in a session of this admin.
    Enrolment(Uuid),
}

impl Place {
    fn associated_data(self) -> Vec<u8> {
        let (label, admin_id): (&[u8], Uuid) = match self {
            Place::Account(id) => (b"admins.totp_secret:", id),
            Place::Enrolment(id) => (b"session.pending_totp_secret:", id),
        };
        [label, admin_id.as_bytes()].concat()
    }
}

/// A secret that opened.
pub struct Opened {
    pub secret: TotpSecret,
    /// Stored plain, or sealed under a previous key: to be sealed again
    /// under the current one.
    pub stale: bool,
}

/// Why a stored value gave no secret. Either way the value is no use for
/// checking a code: sign-in with a code fails closed (recovery codes still
/// work), and an operator has to look.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key that is not configured (any more).
    #[error("the TOTP secret was sealed under a key that is not configured (key id {0})")]
    UnknownKey(u8),
    /// A configured key has the value's key id, but the tag does not match:
    /// the value was changed, or belongs to another admin or place.
    #[error("the sealed TOTP secret does not open: changed, or moved from another admin")]
    DoesNotOpen,
    /// Neither a sealed value nor a plain secret of the length we made.
    #[error("the stored TOTP secret has an unknown format ({0} bytes)")]
    Malformed(usize),
}

/// One AES-256 key and its id.
struct Key {
    id: u8,
    cipher: Aes256Gcm,
}

impl Key {
    fn new(bytes: &[u8; KEY_BYTES]) -> Self {
        let id = Sha256::new()
            .chain_update(b"newsletter TOTP key id")
            .chain_update(bytes)
            .finalize()[0];
        Self {
            id,
            cipher: Aes256Gcm::new_from_slice(bytes).expect("32 bytes is an AES-256 key"),
        }
    }
}

/// The keys TOTP secrets are sealed and opened with: the current one, which
/// seals, and the previous ones, which only open.
pub struct TotpKeys {
    current: Key,
    previous: Vec<Key>,
}

impl TotpKeys {
    /// The keys the settings name, or an error naming the setting that is
    /// not a 32-byte key (never the value).
    pub fn from_settings(settings: &AdminSettings) -> Result<Self, anyhow::Error> {
        let current = parse_key(&settings.totp_key)
            .map_err(|e| anyhow!("Invalid admin.totp_key (APP_ADMIN__TOTP_KEY): {e}"))?;
        let previous = settings
            .previous_totp_keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                parse_key(key).map_err(|e| {
                    anyhow!(
                        "Invalid admin.previous_totp_keys (APP_ADMIN__PREVIOUS_TOTP_KEYS), \
                         key {}: {e}",
                        i + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(&current, &previous))
    }

    fn new(current: &[u8; KEY_BYTES], previous: &[[u8; KEY_BYTES]]) -> Self {
        Self {
            current: Key::new(current),
            previous: previous.iter().map(Key::new).collect(),
        }
    }

    /// `secret` sealed under the current key for `place`.
    pub fn seal(&self, secret: &TotpSecret, place: Place) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let aad = place.associated_data();
        let sealed = self
            .current
            .cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals a secret of a few bytes");
        [MAGIC, &[self.current.id], &nonce, &sealed].concat()
    }

    /// The secret `stored` holds for `place`: sealed by one of the keys, or
    /// plain from before secrets were sealed.
    pub fn open(&self, stored: &[u8], place: Place) -> Result<Opened, OpenError> {
        let Some(rest) = stored
            .strip_prefix(MAGIC)
            .filter(|rest| rest.len() >= 1 + NONCE_BYTES + TAG_BYTES)
        else {
            return if stored.len() == PLAIN_SECRET_BYTES {
                Ok(Opened {
                    secret: TotpSecret::from_bytes(stored.to_vec()),
                    stale: true,
                })
            } else {
                Err(OpenError::Malformed(stored.len()))
            };
        };
        let (id, rest) = (rest[0], &rest[1..]);
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let aad = place.associated_data();
        let candidates = std::iter::once((&self.current, false))
            .chain(self.previous.iter().map(|key| (key, true)))
            .filter(|(key, _)| key.id == id);
        let mut any = false;
        for (key, stale) in candidates {
            any = true;
            let payload = Payload {
                msg: sealed,
                aad: &aad,
            };
            if let Ok(secret) = key.cipher.decrypt(&nonce.into(), payload) {
                return Ok(Opened {
                    secret: TotpSecret::from_bytes(secret),
                    stale,
                });
            }
        }
        Err(if any {
            OpenError::DoesNotOpen
        } else {
            OpenError::UnknownKey(id)
        })
    }
}

/// 32 bytes, written as 64 hex digits or as base64 (standard alphabet,
/// padding optional).
fn parse_key(key: &SecretString) -> Result<[u8; KEY_BYTES], String> {
    let text = key.expose_secret().trim();
    let bytes = if text.len() == KEY_BYTES * 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| {
                "not 64 hex digits or base64; make one with `openssl rand -base64 32`".to_owned()
            })?
    };
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        format!(
            "{} bytes where an AES-256 key needs {KEY_BYTES}; make one with `openssl rand -base64 32`",
            bytes.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: [u8; 32] = [1; 32];
    const KEY_B: [u8; 32] = [2; 32];

    fn secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    fn opened(keys: &TotpKeys, stored: &[u8], place: Place) -> Result<(Vec<u8>, bool), OpenError> {
        keys.open(stored, place)
            .map(|o| (o.secret.as_bytes().to_vec(), o.stale))
    }

    #[test]
    fn a_sealed_secret_opens_for_its_admin_and_does_not_hold_the_plain_bytes() {
        let keys = TotpKeys::new(&KEY_A, &[]);
        let admin = Place::Account(Uuid::new_v4());
        let sealed = keys.seal(&secret(), admin);
        assert!(
            !sealed
                .windows(PLAIN_SECRET_BYTES)
                .any(|w| w == secret().as_bytes())
        );
        assert_eq!(
            opened(&keys, &sealed, admin),
            Ok((secret().as_bytes().to_vec(), false))
        );
    }

    #[test]
    fn two_seals_of_one_secret_differ() {
        let keys = TotpKeys::new(&KEY_A, &[]);
        let admin = Place::Account(Uuid::new_v4());
        assert_ne!(keys.seal(&secret(), admin), keys.seal(&secret(), admin));
    }

    #[test]
    fn a_sealed_secret_does_not_open_under_another_key() {
        let sealed = TotpKeys::new(&KEY_A, &[]).seal(&secret(), Place::Account(Uuid::nil()));
        let other = TotpKeys::new(&KEY_B, &[]);
        assert_eq!(
            opened(&other, &sealed, Place::Account(Uuid::nil())),
            Err(OpenError::UnknownKey(sealed[MAGIC.len()]))
        );
    }

    #[test]
    fn a_sealed_secret_does_not_open_for_another_admin_or_place() {
        let keys = TotpKeys::new(&KEY_A, &[]);
        let ada = Uuid::new_v4();
        let sealed = keys.seal(&secret(), Place::Account(ada));
        for (case, place) in [
            ("another admin", Place::Account(Uuid::new_v4())),
            ("a pending enrolment", Place::Enrolment(ada)),
        ] {
            assert_eq!(
                opened(&keys, &sealed, place),
                Err(OpenError::DoesNotOpen),
                "{case}"
            );
        }
    }

    #[test]
    fn a_changed_byte_anywhere_after_the_key_id_stops_it_opening() {
        let keys = TotpKeys::new(&KEY_A, &[]);
        let place = Place::Account(Uuid::new_v4());
        let sealed = keys.seal(&secret(), place);
        for i in MAGIC.len() + 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                opened(&keys, &tampered, place),
                Err(OpenError::DoesNotOpen),
                "byte {i}"
            );
        }
        let mut short = sealed.clone();
        short.pop();
        assert_eq!(opened(&keys, &short, place), Err(OpenError::DoesNotOpen));
    }

    #[test]
    fn after_a_rotation_the_previous_key_still_opens_and_marks_the_value_stale() {
        let place = Place::Account(Uuid::new_v4());
        let old = TotpKeys::new(&KEY_A, &[]).seal(&secret(), place);
        let rotated = TotpKeys::new(&KEY_B, &[KEY_A]);
        assert_eq!(
            opened(&rotated, &old, place),
            Ok((secret().as_bytes().to_vec(), true))
        );
        let resealed = rotated.seal(&secret(), place);
        assert_eq!(
            opened(&rotated, &resealed, place),
            Ok((secret().as_bytes().to_vec(), false))
        );
        // Once the old key is dropped, only the re-sealed value opens.
        let after = TotpKeys::new(&KEY_B, &[]);
        assert!(opened(&after, &resealed, place).is_ok());
        assert!(opened(&after, &old, place).is_err());
    }

    #[test]
    fn a_plain_secret_from_before_sealing_opens_as_stale_and_odd_values_do_not() {
        let keys = TotpKeys::new(&KEY_A, &[]);
        let place = Place::Account(Uuid::new_v4());
        assert_eq!(
            opened(&keys, secret().as_bytes(), place),
            Ok((secret().as_bytes().to_vec(), true))
        );
        for (case, stored) in [
            ("empty", Vec::new()),
            ("short", vec![7; 10]),
            ("the magic alone", MAGIC.to_vec()),
            ("long and unsealed", vec![7; 53]),
        ] {
            assert!(
                matches!(opened(&keys, &stored, place), Err(OpenError::Malformed(_))),
                "{case}"
            );
        }
    }

    #[test]
    fn keys_are_read_as_hex_or_base64_and_must_be_32_bytes() {
        let hex_key = "ab".repeat(32);
        let base64_key = base64::engine::general_purpose::STANDARD.encode([0xab; 32]);
        for written in [
            hex_key.clone(),
            base64_key.clone(),
            base64_key.trim_end_matches('=').to_owned(),
        ] {
            assert_eq!(
                parse_key(&SecretString::from(written.clone())),
                Ok([0xab; 32]),
                "{written}"
            );
        }
        for (case, written) in [
            ("16 bytes of hex", "ab".repeat(16)),
            (
                "16 bytes of base64",
                base64::engine::general_purpose::STANDARD.encode([1; 16]),
            ),
            ("a passphrase", "correct horse battery staple".to_owned()),
            ("empty", String::new()),
        ] {
            let error = parse_key(&SecretString::from(written)).unwrap_err();
            assert!(error.contains("openssl rand"), "{case}: {error}");
        }
    }

    #[test]
    fn a_bad_key_is_refused_naming_the_setting_and_not_the_value() {
        let settings = |current: &str, previous: &[&str]| AdminSettings {
            session_idle_timeout_seconds: 60,
            session_lifetime_seconds: 60,
            secure_cookie: true,
            totp_key: SecretString::from(current),
            previous_totp_keys: previous.iter().map(|k| SecretString::from(*k)).collect(),
        };
        let good = "ab".repeat(32);
        assert!(TotpKeys::from_settings(&settings(&good, &[&good])).is_ok());
        let error = TotpKeys::from_settings(&settings("too-short-secret", &[]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("admin.totp_key"), "{error}");
        assert!(!error.contains("too-short-secret"), "{error}");
        let error = TotpKeys::from_settings(&settings(&good, &[&good, "nope"]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("admin.previous_totp_keys"), "{error}");
        assert!(error.contains("key 2"), "{error}");
    }
}
