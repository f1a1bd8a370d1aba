//! Signing webhook calls the Standard Webhooks way
//! (<https://www.standardwebhooks.com/>), so that a receiver can tell a call
//! came from this service and was not replayed later: each call carries
//! `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last being
//! `v1,` and the base64 of an HMAC-SHA256, keyed with the endpoint's
//! secret, of `{id}.{timestamp}.{body}`. Receivers can check it with any
//! Standard Webhooks library; [`verify`] is the same check, for our tests
//! and as the reference the README's snippet follows.
//!
//! A secret is shown to the operator once, as `whsec_` and the base64 of
//! its bytes, and kept by the service in that form.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header naming the call: the same on every retry of it, so that a
/// receiver can drop a call it already had.
pub const ID_HEADER: &str = "webhook-id";
/// The header holding when the call was signed, in seconds since the epoch.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The header holding the signatures, space-separated.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What a secret's text starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// How many random bytes a generated secret has.
const GENERATED_BYTES: usize = 32;
/// The shortest and longest secrets accepted, in bytes: Standard Webhooks
/// asks for 24 to 64.
const MIN_BYTES: usize = 24;
const MAX_BYTES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing secret. Its `Debug` never shows it: only
/// [`Secret::expose`] does, for the one time it is shown and for storage.
#[derive(Clone)]
pub struct Secret(SecretSlice<u8>);

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret is not base64 (after its optional whsec_ prefix)")]
    NotBase64,
    #[error("the secret has {0} bytes; a secret has 24 to 64")]
    Length(usize),
}

impl Secret {
    /// A new secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_BYTES];
        rand::fill(&mut bytes[..]);
        Self(bytes.into())
    }

    /// Reads a secret's text, with or without its `whsec_` prefix.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// The secret as the operator is shown it and the service stores it:
    /// `whsec_` and the base64 of its bytes.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0.expose_secret()))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(self.0.expose_secret()).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// The `webhook-signature` value of a call: `v1,` and the base64 of the
/// HMAC-SHA256 of `{msg_id}.{timestamp}.{body}`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// The three headers a call carries, signed: for the client's `post`.
pub fn headers(
    secret: &Secret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (ID_HEADER, msg_id.to_owned()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (SIGNATURE_HEADER, sign(secret, msg_id, timestamp, body)),
    ]
}

/// The three headers of a received call, as text.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`: one or more `v1,<base64>`, space-separated.
    pub signature: &'a str,
}

/// Why a received call's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is too far from now (a replay, or a clock off)")]
    OutsideTolerance,
    #[error("webhook-signature holds no v1 signature")]
    NoSignature,
    #[error("no signature in webhook-signature matches the call")]
    Mismatch,
}

/// Checks a received call as a receiver would: its timestamp within
/// `tolerance` of `now` (seconds since the epoch) either way, and one of
/// the `v1` signatures in its header that of `{id}.{timestamp}.{body}`
/// under `secret`, compared in constant time. Entries of other versions
/// are ignored.
pub fn verify(
    secret: &Secret,
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let timestamp: i64 = headers
        .timestamp
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(VerifyError::OutsideTolerance);
    }
    let expected = secret
        .mac(headers.id, timestamp, body)
        .finalize()
        .into_bytes();
    let mut any = false;
    let mut matched = false;
    for entry in headers.signature.split_whitespace() {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        any = true;
        if let Ok(given) = STANDARD.decode(encoded) {
            // Every entry is checked, so the time taken does not say which
            // matched.
            matched |= bool::from(given.as_slice().ct_eq(expected.as_slice()));
        }
    }
    match (any, matched) {
        (_, true) => Ok(()),
        (false, false) => Err(VerifyError::NoSignature),
        (true, false) => Err(VerifyError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks libraries' own tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    fn received(signature: &str) -> Headers<'_> {
        Headers {
            id: MSG_ID,
            timestamp: "1614265330",
            signature,
        }
    }

    #[test]
    fn a_call_is_signed_as_the_standard_webhooks_example_is() {
        assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn the_headers_name_the_call_its_time_and_its_signature() {
        assert_eq!(
            headers(&secret(), MSG_ID, TIMESTAMP, BODY),
            [
                ("webhook-id", MSG_ID.to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                ("webhook-signature", SIGNATURE.to_owned()),
            ]
        );
    }

    #[test]
    fn a_signed_call_verifies() {
        assert_eq!(
            verify(&secret(), &received(SIGNATURE), BODY, TIMESTAMP, TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_signature_among_several_verifies() {
        let several = format!("v1,bm90IGl0 v1a,ignored {SIGNATURE} v2,other");
        assert_eq!(
            verify(&secret(), &received(&several), BODY, TIMESTAMP, TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn a_call_changed_after_signing_is_refused() {
        let secret = secret();
        let other_secret = Secret::generate();
        let cases: [(&str, &Secret, Headers, &[u8]); 4] = [
            (
                "body",
                &secret,
                received(SIGNATURE),
                br#"{"test": 2432232315}"#,
            ),
            (
                "id",
                &secret,
                Headers {
                    id: "msg_p5jXN8AQM9LWM0D4loKWxJeK",
                    ..received(SIGNATURE)
                },
                BODY,
            ),
            (
                "timestamp",
                &secret,
                Headers {
                    timestamp: "1614265331",
                    ..received(SIGNATURE)
                },
                BODY,
            ),
            ("secret", &other_secret, received(SIGNATURE), BODY),
        ];
        for (changed, secret, headers, body) in cases {
            assert_eq!(
                verify(secret, &headers, body, TIMESTAMP, TOLERANCE),
                Err(VerifyError::Mismatch),
                "with its {changed} changed"
            );
        }
    }

    #[test]
    fn a_timestamp_beyond_the_tolerance_either_way_is_refused() {
        for (now, expected) in [
            (TIMESTAMP + 300, Ok(())),
            (TIMESTAMP - 300, Ok(())),
            (TIMESTAMP + 301, Err(VerifyError::OutsideTolerance)),
            (TIMESTAMP - 301, Err(VerifyError::OutsideTolerance)),
        ] {
            assert_eq!(
                verify(&secret(), &received(SIGNATURE), BODY, now, TOLERANCE),
                expected,
                "{} seconds from the timestamp",
                now - TIMESTAMP
            );
        }
    }

    #[test]
    fn headers_without_a_v1_signature_or_a_numeric_timestamp_are_refused() {
        for (headers, expected) in [
            (received(""), VerifyError::NoSignature),
            (received("v1a,abc v2,def"), VerifyError::NoSignature),
            (received("v1,not base64!"), VerifyError::Mismatch),
            (
                Headers {
                    timestamp: "soon",
                    ..received(SIGNATURE)
                },
                VerifyError::BadTimestamp,
            ),
        ] {
            assert_eq!(
                verify(&secret(), &headers, BODY, TIMESTAMP, TOLERANCE),
                Err(expected.clone()),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_generated_secret_reads_back_as_itself_with_its_prefix() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(STANDARD.decode(&text[6..]).unwrap().len(), 32);
        assert_eq!(Secret::parse(&text).unwrap().expose(), text);
        assert_ne!(Secret::generate().expose(), text, "two secrets alike");
    }

    #[test]
    fn a_secret_is_read_with_or_without_its_prefix() {
        let without = SECRET.strip_prefix("whsec_").unwrap();
        assert_eq!(Secret::parse(without).unwrap().expose(), SECRET);
    }

    #[test]
    fn a_secret_too_short_too_long_or_not_base64_is_refused() {
        for (text, expected) in [
            (
                format!("whsec_{}", STANDARD.encode([7; 23])),
                SecretError::Length(23),
            ),
            (
                format!("whsec_{}", STANDARD.encode([7; 65])),
                SecretError::Length(65),
            ),
            ("whsec_".to_owned(), SecretError::Length(0)),
            ("whsec_not base64!".to_owned(), SecretError::NotBase64),
        ] {
            assert_eq!(Secret::parse(&text).err(), Some(expected), "{text}");
        }
        for bytes in [24, 64] {
            let text = format!("whsec_{}", STANDARD.encode(vec![7; bytes]));
            assert!(Secret::parse(&text).is_ok(), "{bytes} bytes");
        }
    }

    #[test]
    fn a_secret_is_not_shown_by_debug() {
        let secret = secret();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("MfKQ9r8G"), "{shown}");
        assert_eq!(shown, "Secret([REDACTED])");
    }
}
