//! The CSRF protection of the sign-in form, before there is any session.
//!
//! `GET /login` gives the browser a short-lived pre-session cookie holding a
//! random nonce, and puts in the form a token made from that nonce and the
//! time it was issued. `POST /login` is only heard with a matching pair, so
//! another site cannot sign a visitor's browser in to an account of its own
//! choosing (login CSRF): it can neither read the cookie (HttpOnly,
//! SameSite=Strict) nor, under its `__Host-` name, set one. Nothing is
//! stored on the server: the token is the SHA-256 of the nonce and the time,
//! which only the holder of the nonce can make, and the time in it bounds
//! how long the pair is good for.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a sign-in form may stay open before it must be reloaded; the
/// pre-session cookie lives as long.
pub const FORM_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// How far ahead of this replica's clock another replica's may be: a token
/// it issued is that much in the future here.
const CLOCK_DRIFT: Duration = Duration::from_secs(60);

/// Random bytes in a nonce.
const NONCE_BYTES: usize = 32;

/// What goes in the pre-session cookie: 32 random bytes as lowercase hex.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The form's token for `nonce`, issued at `issued` (`<unix seconds>.<hex>`).
pub fn token(nonce: &str, issued: SystemTime) -> String {
    let seconds = issued
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{seconds}.{}", tag(nonce, seconds))
}

fn tag(nonce: &str, seconds: u64) -> String {
    let mut hash = Sha256::new();
    hash.update(b"sign-in form\0");
    hash.update(nonce.as_bytes());
    hash.update(b"\0");
    hash.update(seconds.to_string().as_bytes());
    hex::encode(hash.finalize())
}

/// Why a sign-in was not heard. Each says what to do, for the form's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No cookie or no token: the form did not come from `GET /login` in
    /// this browser (or cookies are off).
    Missing,
    /// A token that is not the cookie's.
    Mismatch,
    /// A matching pair, older than [`FORM_LIFETIME`].
    Expired,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "This sign-in did not come from this site's form, or cookies are off. \
                 Use the form below (cookies must be on)."
            }
            Refusal::Mismatch => {
                "This sign-in form does not belong to this browser. Use the form below."
            }
            Refusal::Expired => "This sign-in form was open too long. Please sign in again.",
        }
    }
}

/// Whether `token` was made for `nonce` no longer than [`FORM_LIFETIME`]
/// before `now`. The tag is compared in constant time.
pub fn check(nonce: Option<&str>, token: Option<&str>, now: SystemTime) -> Result<(), Refusal> {
    let (Some(nonce), Some(token)) = (nonce, token) else {
        return Err(Refusal::Missing);
    };
    if nonce.is_empty() || token.is_empty() {
        return Err(Refusal::Missing);
    }
    let (seconds, given) = token.split_once('.').ok_or(Refusal::Mismatch)?;
    let seconds: u64 = seconds.parse().map_err(|_| Refusal::Mismatch)?;
    if !bool::from(given.as_bytes().ct_eq(tag(nonce, seconds).as_bytes())) {
        return Err(Refusal::Mismatch);
    }
    // The time is whatever the holder of the nonce wrote (anyone can make
    // a tag for their own nonce): a time past what `SystemTime` holds is no
    // form of ours, and neither is one from further ahead than replicas'
    // clocks drift apart.
    let issued = UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or(Refusal::Mismatch)?;
    if issued > now + CLOCK_DRIFT {
        return Err(Refusal::Mismatch);
    }
    let age = now.duration_since(issued).unwrap_or_default();
    if age > FORM_LIFETIME {
        return Err(Refusal::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_good_for_its_own_nonce_within_the_form_lifetime_only() {
        let nonce = new_nonce();
        // A whole second, as the token keeps it.
        let issued = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let good = token(&nonce, issued);
        let later = |d: Duration| issued + d;

        assert_eq!(
            check(Some(&nonce), Some(&good), later(Duration::ZERO)),
            Ok(())
        );
        assert_eq!(
            check(Some(&nonce), Some(&good), later(FORM_LIFETIME)),
            Ok(())
        );
        let cases = [
            ("no cookie", None, Some(good.as_str()), Refusal::Missing),
            ("no token", Some(nonce.as_str()), None, Refusal::Missing),
            (
                "empty token",
                Some(nonce.as_str()),
                Some(""),
                Refusal::Missing,
            ),
            (
                "another nonce",
                Some("00ff"),
                Some(good.as_str()),
                Refusal::Mismatch,
            ),
            (
                "no time",
                Some(nonce.as_str()),
                Some("abc"),
                Refusal::Mismatch,
            ),
        ];
        for (case, nonce, token, refusal) in cases {
            assert_eq!(check(nonce, token, issued), Err(refusal), "{case}");
        }
        let too_late = later(FORM_LIFETIME + Duration::from_secs(2));
        assert_eq!(
            check(Some(&nonce), Some(&good), too_late),
            Err(Refusal::Expired)
        );
        // Moving the time on makes the tag wrong: the age cannot be forged
        // without the nonce.
        let (_, tag) = good.split_once('.').unwrap();
        let forged = format!("{}.{tag}", u64::MAX / 2);
        assert_eq!(
            check(Some(&nonce), Some(&forged), too_late),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn a_holder_of_the_nonce_cannot_date_a_token_past_the_clock() {
        let nonce = new_nonce();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Beyond what a SystemTime holds, and far in the future: each with
        // a right tag, as anyone holding the nonce can make one.
        for seconds in [u64::MAX, 1_800_000_000 + 3600] {
            let dated = format!("{seconds}.{}", tag(&nonce, seconds));
            assert_eq!(
                check(Some(&nonce), Some(&dated), now),
                Err(Refusal::Mismatch),
                "{seconds}"
            );
        }
        // A replica a little ahead is fine.
        let ahead = token(&nonce, now + Duration::from_secs(30));
        assert_eq!(check(Some(&nonce), Some(&ahead), now), Ok(()));
    }
}
