//! The optional second factor: time-based one-time codes (RFC 6238) from an
//! authenticator app, and the recovery codes that stand in for the app when
//! it is lost.
//!
//! Codes use the parameters every app honours — HMAC-SHA1, 6 digits, 30 s
//! steps — whatever an otpauth URL might ask for, because several apps
//! silently ignore the others and would then show codes that never match.
//! A code is accepted one step early or late, for clocks that drift; the
//! caller records the step that matched and refuses it next time, so a code
//! seen over someone's shoulder cannot be used twice.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngExt;
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder};

/// Seconds in one time step.
const STEP_SECONDS: u64 = 30;

/// Digits in a code.
const DIGITS: u8 = 6;

/// Steps a code may be early or late.
const ALLOWED_DRIFT: u16 = 1;

/// 160 bits, the length RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// Recovery codes given to an admin at once.
const RECOVERY_CODES: usize = 10;

/// Characters in one recovery code, not counting its hyphens: 16 of 31
/// symbols, about 79 bits.
const RECOVERY_CODE_LENGTH: usize = 16;

/// Lowercase letters and digits without the ones read or typed as another
/// (0/o, 1/l/i): 31 characters, so ten of them carry about 50 bits.
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// The key an authenticator app shares with us.
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// 160 random bits from the thread-local CSPRNG (ChaCha12 seeded from the
    /// OS).
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// A secret as stored in `admins.totp_secret`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, in groups of 4, for typing into an app by
    /// hand when the QR code cannot be scanned.
    pub fn display_base32(&self) -> String {
        let encoded = totp_rs::Secret::from(self.0.as_slice()).to_base32();
        encoded
            .as_bytes()
            .chunks(4)
            .map(|group| std::str::from_utf8(group).expect("base32 is ASCII"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Whoever holds the secret can make codes: it must not end up in a log line.
impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The `otpauth://totp/...` URL an authenticator app reads from the QR code:
/// `issuer` is the newsletter's title, `account` the admin's username.
pub fn otpauth_url(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    // The label is "issuer:account", so neither part may hold a ':'. An
    // issuer that is blank after that is left out; an account cannot be.
    let issuer = issuer.replace(':', " ");
    let issuer = issuer.trim();
    let account = account.replace(':', " ");
    let account = match account.trim() {
        "" => "admin",
        account => account,
    };
    let totp = totp(secret, DIGITS)
        .with_account_name(account)
        .with_issuer((!issuer.is_empty()).then_some(issuer))
        .build_noncompliant();
    totp.to_url()
        .expect("the account name is neither empty nor holds a ':'")
}

/// `data` (an otpauth URL) as a QR code: an inline `<svg>` element to place
/// in a page as is. It has no XML prolog and no scripts, and draws with
/// presentation attributes only, so a strict CSP (no inline styles) renders
/// it. The viewBox counts modules; width and height give it a default size
/// that CSS may override.
pub fn qr_svg(data: &str) -> String {
    const SIZE: u32 = 240;
    let code = match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code,
        Err(e) => {
            // Only data of thousands of bytes is too long, far beyond any
            // otpauth URL. The page still offers the secret to type in.
            tracing::warn!(error = %e, "The QR code could not be drawn");
            return format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1" width="{SIZE}" height="{SIZE}" role="img" aria-label="QR code unavailable"></svg>"#
            );
        }
    };
    let rendered = code
        .render::<qrcode::render::svg::Color<'_>>()
        .module_dimensions(1, 1)
        .quiet_zone(true)
        .build();
    // The renderer starts with an XML declaration, which is not allowed
    // inside an HTML document, and sizes the image one pixel per module.
    let svg = &rendered[rendered.find("<svg").unwrap_or(0)..];
    let modules = (code.width() + 8) as u32;
    svg.replacen(
        &format!(r#"width="{modules}" height="{modules}""#),
        &format!(
            r#"width="{SIZE}" height="{SIZE}" role="img" aria-label="QR code for an authenticator app""#
        ),
        1,
    )
}

/// Checks a typed code (spaces ignored; six ASCII digits) against the secret
/// at `now`, allowing one step of drift either way. Returns the time step
/// (unix time / 30) that matched, so that the caller can refuse its reuse.
/// totp-rs compares codes in constant time.
pub fn verify(secret: &TotpSecret, code: &str, now: SystemTime) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != usize::from(DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let step = totp(secret, DIGITS)
        .build_noncompliant()
        .check(&code, now)?;
    i64::try_from(step).ok()
}

/// The code for a secret at `now` (tests, and the e2e test, need it).
pub fn code_at(secret: &TotpSecret, now: SystemTime) -> String {
    code_with_digits(secret, DIGITS, now)
}

fn code_with_digits(secret: &TotpSecret, digits: u8, now: SystemTime) -> String {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    totp(secret, digits)
        .build_noncompliant()
        .generate(now)
        .to_string()
}

/// Our parameters, ready for an account name and issuer. Built without
/// totp-rs's RFC checks: those refuse a secret under 128 bits, and a stored
/// secret must give its codes rather than a panic. Every secret we make has
/// 160 bits; the other parameters are fixed here and valid.
fn totp(secret: &TotpSecret, digits: u8) -> Builder {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_skew(ALLOWED_DRIFT)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.0.clone())
}

/// Ten one-time recovery codes, each sixteen characters of an unambiguous
/// alphabet shown as `xxxx-xxxx-xxxx-xxxx`: about 79 bits each.
pub fn generate_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    let mut codes: Vec<String> = Vec::with_capacity(RECOVERY_CODES);
    while codes.len() < RECOVERY_CODES {
        let mut code = String::with_capacity(RECOVERY_CODE_LENGTH + 1);
        for i in 0..RECOVERY_CODE_LENGTH {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            let index = rng.random_range(0..RECOVERY_ALPHABET.len());
            code.push(char::from(RECOVERY_ALPHABET[index]));
        }
        // Two equal codes in 2^79 will not happen; if they did, one of the
        // ten would be worth nothing once the other was used.
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    codes
}

/// What the database stores for an admin's recovery code: SHA-256 of the
/// admin's id and the code lowercased, without spaces and hyphens, so that
/// it matches however it is typed. A fast hash is enough here, unlike for
/// passwords: the code is 79 random bits, not something a person chose, so
/// a stolen hash cannot be reversed by trying likely codes, and trying all
/// 2^79 is out of reach. The id makes every admin's hashes different, so
/// one search cannot aim at every stored code at once.
pub fn hash_recovery_code(admin_id: uuid::Uuid, code: &str) -> Vec<u8> {
    let normalised: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    let mut hasher = Sha256::new();
    hasher.update(admin_id.as_bytes());
    hasher.update(normalised.as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;
    use totp_rs::Totp;

    fn at(unix_seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_seconds)
    }

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec())
    }

    /// A moment in the middle of a step, so that a second either way stays
    /// in it.
    const NOW: u64 = 1_765_000_015;

    #[test]
    fn codes_match_the_rfc_6238_test_vector() {
        assert_eq!(code_with_digits(&rfc_secret(), 8, at(59)), "94287082");
        assert_eq!(code_at(&rfc_secret(), at(59)), "287082");
        assert_eq!(
            code_with_digits(&rfc_secret(), 8, at(1_111_111_109)),
            "07081804"
        );
    }

    #[test]
    fn the_current_code_is_accepted() {
        let secret = TotpSecret::generate();
        let code = code_at(&secret, at(NOW));
        assert_eq!(verify(&secret, &code, at(NOW)), Some((NOW / 30) as i64));
    }

    #[test]
    fn a_code_from_one_step_before_or_after_is_accepted() {
        let secret = TotpSecret::generate();
        for (case, offset) in [("previous", -30i64), ("next", 30)] {
            let then = NOW.checked_add_signed(offset).unwrap();
            let code = code_at(&secret, at(then));
            assert_eq!(
                verify(&secret, &code, at(NOW)),
                Some((then / 30) as i64),
                "the {case} step's code"
            );
        }
    }

    #[test]
    fn a_code_two_steps_off_is_refused() {
        // A fixed secret, whose codes two steps off are known to differ from
        // every code in the window, so the refusal is not luck.
        let secret = rfc_secret();
        let window: Vec<_> = [NOW - 30, NOW, NOW + 30]
            .iter()
            .map(|t| code_at(&secret, at(*t)))
            .collect();
        for then in [NOW - 60, NOW + 60] {
            let code = code_at(&secret, at(then));
            assert!(!window.contains(&code), "the test's secret is unlucky");
            assert_eq!(verify(&secret, &code, at(NOW)), None, "at {then}");
        }
    }

    #[test]
    fn the_step_returned_is_the_one_that_matched() {
        let secret = rfc_secret();
        let previous = code_at(&secret, at(NOW - 30));
        let current = code_at(&secret, at(NOW));
        assert_ne!(previous, current);
        assert_eq!(
            verify(&secret, &previous, at(NOW)),
            Some((NOW / 30 - 1) as i64)
        );
        assert_eq!(verify(&secret, &current, at(NOW)), Some((NOW / 30) as i64));
    }

    #[test]
    fn spaces_in_a_typed_code_are_ignored() {
        let secret = TotpSecret::generate();
        let code = code_at(&secret, at(NOW));
        let spaced = format!(" {} {} ", &code[..3], &code[3..]);
        assert!(verify(&secret, &spaced, at(NOW)).is_some());
    }

    #[test]
    fn a_code_that_is_not_six_digits_is_refused() {
        let secret = TotpSecret::generate();
        let code = code_at(&secret, at(NOW));
        for (case, typed) in [
            ("empty", String::new()),
            ("five digits", code[..5].to_owned()),
            ("seven digits", format!("{code}0")),
            ("a letter", format!("{}a", &code[..5])),
            ("a sign", format!("+{}", &code[..5])),
            ("a full-width digit", format!("{}０", &code[..5])),
        ] {
            assert_eq!(verify(&secret, &typed, at(NOW)), None, "{case}");
        }
    }

    #[test]
    fn a_short_secret_gives_codes_instead_of_a_panic() {
        let secret = TotpSecret::from_bytes(vec![7; 10]);
        let code = code_at(&secret, at(NOW));
        assert!(verify(&secret, &code, at(NOW)).is_some());
        assert!(otpauth_url(&secret, "News", "ada").starts_with("otpauth://totp/"));
    }

    #[test]
    fn a_generated_secret_is_160_random_bits() {
        let a = TotpSecret::generate();
        let b = TotpSecret::generate();
        assert_eq!(a.as_bytes().len(), 20);
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn the_base32_display_decodes_back_to_the_secret() {
        let secret = TotpSecret::generate();
        let shown = secret.display_base32();
        assert!(!shown.contains('='), "{shown}");
        assert!(shown.split(' ').all(|group| group.len() <= 4), "{shown}");
        let typed: String = shown.split(' ').collect();
        let decoded = totp_rs::Secret::try_from_base32(typed).unwrap();
        assert_eq!(decoded.as_bytes(), secret.as_bytes());
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        let printed = format!("{secret:?}");
        assert!(!printed.contains("49"), "{printed}");
        assert!(!printed.contains("GEZDG"), "{printed}");
    }

    #[test]
    fn the_otpauth_url_names_issuer_and_account_percent_encoded() {
        let secret = rfc_secret();
        let url = otpauth_url(&secret, "The Weekly & Co", "ada lovelace");
        assert!(url.starts_with("otpauth://totp/"), "{url}");
        assert!(
            url.contains("The%20Weekly%20%26%20Co:ada%20lovelace"),
            "{url}"
        );
        assert!(url.contains("issuer=The%20Weekly%20%26%20Co"), "{url}");
        assert!(
            url.contains("secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            "{url}"
        );
        let parsed = Totp::from_url(&url).unwrap();
        assert_eq!(parsed.issuer(), Some("The Weekly & Co"));
        assert_eq!(parsed.account_name(), "ada lovelace");
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);
        assert_eq!(parsed.algorithm(), Algorithm::SHA1);
    }

    #[test]
    fn a_colon_in_the_issuer_or_account_does_not_break_the_url() {
        let url = otpauth_url(&rfc_secret(), "News: weekly", "a:b");
        let parsed = Totp::from_url(&url).unwrap();
        assert_eq!(parsed.issuer(), Some("News  weekly"));
        assert_eq!(parsed.account_name(), "a b");
    }

    #[test]
    fn a_blank_issuer_is_left_out_of_the_url() {
        let url = otpauth_url(&rfc_secret(), " : ", "ada");
        assert!(!url.contains("issuer="), "{url}");
        assert!(url.starts_with("otpauth://totp/ada?"), "{url}");
    }

    #[test]
    fn the_qr_code_is_an_inline_svg_element_without_scripts_or_prolog() {
        let url = otpauth_url(&rfc_secret(), "News", "ada");
        let svg = qr_svg(&url);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"), "{svg}");
        assert!(!svg.contains("<?xml"), "{svg}");
        assert!(!svg.to_lowercase().contains("<script"), "{svg}");
        assert!(!svg.contains("style"), "{svg}");
        assert!(svg.contains(r#"width="240" height="240""#), "{svg}");
        assert!(svg.contains(r#"viewBox="0 0 "#), "{svg}");
    }

    #[test]
    fn recovery_codes_are_ten_distinct_codes_of_the_agreed_shape() {
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(codes.iter().collect::<HashSet<_>>().len(), 10);
        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [4, 4, 4, 4],
                "{code}"
            );
            assert!(
                groups
                    .concat()
                    .chars()
                    .all(|c| RECOVERY_ALPHABET.contains(&(c as u8))),
                "{code}"
            );
            assert!(
                !code.contains(['0', 'o', 'O', '1', 'l', 'I', 'i']),
                "{code}"
            );
        }
    }

    #[test]
    fn a_recovery_code_hashes_the_same_however_it_is_typed() {
        let admin = uuid::Uuid::new_v4();
        let expected = hash_recovery_code(admin, "abcdefghjk");
        for typed in ["ABCDE-FGHJK", "abcde fghjk", " AbCdE-fGhJk "] {
            assert_eq!(hash_recovery_code(admin, typed), expected, "{typed}");
        }
        assert_ne!(hash_recovery_code(admin, "abcde-fghjm"), expected);
        // The same code of another admin is stored differently.
        assert_ne!(
            hash_recovery_code(uuid::Uuid::new_v4(), "abcdefghjk"),
            expected
        );
    }
}
