//! What production refuses to start with: settings that would leave it open
//! while looking fine.
//!
//! - A secret (key, password, token) that is written down anywhere in the
//!   repository: the local signing key, the default database password, an
//!   example from the documentation, a test's value. Anyone can read those,
//!   so they sign nothing and protect nothing. The list is collected from
//!   the repository's files when the binary is built (`build.rs`).
//! - Keys shorter than 32 bytes, and a webhook password shorter than 16
//!   characters: short enough to guess or to search for.
//! - A `base_url` that is not `https`, or that points at this machine:
//!   every link in every email starts with it.
//! - Cookies that may travel over plain HTTP.
//! - The local inbox among the email providers: its emails reach nobody.
//!
//! Every refusal names its setting and the variable that sets it, and all of
//! them are reported at once, so that one deploy fixes them all.

use std::fmt;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};

use super::{EmailBackend, Settings};
use crate::keys::MIN_SECRET_BYTES;

mod published {
    include!(concat!(env!("OUT_DIR"), "/published_values.rs"));
}

/// The shortest webhook password production accepts, in characters.
pub const MIN_WEBHOOK_PASSWORD_CHARS: usize = 16;

/// The settings production cannot start with, one reason each.
#[derive(Debug)]
pub struct Refused(Vec<String>);

impl Refused {
    pub fn reasons(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "production cannot start with these settings:")?;
        for reason in &self.0 {
            write!(f, "\n  - {reason}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// Checks `settings` as production would run them.
pub fn refuse_placeholders(settings: &Settings) -> Result<(), Refused> {
    let mut refused = Vec::new();
    let mut refuse = |setting: &str, why: String| {
        refused.push(format!("{setting} ({}): {why}", variable(setting)));
    };

    let hmac = &settings.application.hmac_secret;
    if let Some(why) = key_problem(hmac) {
        refuse("application.hmac_secret", why);
    }
    // Their length is checked where they are decoded (`admin::totp_keys`).
    if is_published(&settings.admin.totp_key) {
        refuse("admin.totp_key", published_reason());
    }
    if settings.admin.previous_totp_keys.iter().any(is_published) {
        refuse("admin.previous_totp_keys", published_reason());
    }
    if is_published(&settings.database.password) {
        refuse("database.password", published_reason());
    }
    if let Some(token) = &settings.email_client.authorization_token
        && is_published(token)
    {
        refuse("email_client.authorization_token", published_reason());
    }
    if let Some(password) = settings
        .email_client
        .smtp
        .as_ref()
        .and_then(|smtp| smtp.password.as_ref())
        && is_published(password)
    {
        refuse("email_client.smtp.password", published_reason());
    }
    if let Some(password) = &settings.webhooks.postmark_password {
        if password.expose_secret().chars().count() < MIN_WEBHOOK_PASSWORD_CHARS {
            refuse(
                "webhooks.postmark_password",
                format!(
                    "shorter than {MIN_WEBHOOK_PASSWORD_CHARS} characters; \
                     generate one with `openssl rand -hex 16`"
                ),
            );
        } else if is_published(password) {
            refuse("webhooks.postmark_password", published_reason());
        }
    }
    if let Some(password) = redis_password(&settings.redis_uri)
        && is_published(&SecretString::from(password))
    {
        refuse("redis_uri", format!("its password {}", published_reason()));
    }
    if let Err(why) = check_base_url(&settings.application.base_url) {
        refuse("application.base_url", why);
    }
    for (setting, providers) in settings.email_client.provider_lists() {
        if providers.contains(&EmailBackend::Inbox) {
            refuse(
                setting,
                "lists `inbox`, which keeps emails in the database instead of sending \
                 them: for local runs only; list postmark or smtp"
                    .to_owned(),
            );
        }
    }
    if !settings.admin.secure_cookie {
        refuse(
            "admin.secure_cookie",
            "must be true: the session cookie would travel over plain HTTP".to_owned(),
        );
    }

    if refused.is_empty() {
        Ok(())
    } else {
        Err(Refused(refused))
    }
}

/// Why a signing or encryption key cannot be used, if it cannot.
pub fn key_problem(key: &SecretString) -> Option<String> {
    let bytes = key.expose_secret().len();
    if bytes < MIN_SECRET_BYTES {
        Some(format!(
            "{bytes} bytes, shorter than {MIN_SECRET_BYTES}; \
             generate one with `openssl rand -hex 32`"
        ))
    } else if is_published(key) {
        Some(published_reason())
    } else {
        None
    }
}

fn published_reason() -> String {
    "this value is written in the repository, so it is no secret; \
     set a value of your own"
        .to_owned()
}

/// Whether `secret` is a value the repository holds somewhere. An empty
/// one counts: it is as public as any.
pub fn is_published(secret: &SecretString) -> bool {
    let secret = secret.expose_secret().trim();
    secret.is_empty()
        || published::PUBLISHED_VALUES
            .binary_search_by(|value| (*value).cmp(secret))
            .is_ok()
}

/// The password in a `redis://user:password@host` address, if any.
fn redis_password(uri: &SecretString) -> Option<String> {
    let url = url::Url::parse(uri.expose_secret()).ok()?;
    let password = url.password()?;
    Some(
        percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// `https`, and a host that is not this machine: the links in emails start
/// with it, and a reader's browser must reach the service through it.
fn check_base_url(raw: &str) -> Result<(), String> {
    let url =
        url::Url::parse(raw).map_err(|e| format!("`{raw}` is not an absolute address: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "`{raw}` is not https: links in emails would travel in the clear"
        ));
    }
    let local = match url.host() {
        None => true,
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => is_local(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_local(IpAddr::V6(ip)),
    };
    if local {
        return Err(format!(
            "`{raw}` points at this machine: readers could not follow its links"
        ));
    }
    Ok(())
}

fn is_local(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

/// The environment variable that sets a setting: `APP_` and the path in
/// capitals, levels joined by `__`.
fn variable(setting: &str) -> String {
    format!("APP_{}", setting.to_uppercase().replace('.', "__"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_the_repositorys_own_values() {
        for value in [
            "local-development-secret-not-for-production-use",
            "password",
            "webhook password for tests",
        ] {
            assert!(
                is_published(&SecretString::from(value)),
                "{value} is not on the list"
            );
        }
        let fresh = uuid::Uuid::new_v4().to_string();
        assert!(!is_published(&SecretString::from(fresh)));
    }

    #[test]
    fn base_urls_must_be_https_and_not_this_machine() {
        for refused in [
            "http://news.example.com",
            "https://localhost:8000",
            "https://LOCALHOST.",
            "https://app.localhost",
            "https://127.0.0.1",
            "https://[::1]:8443",
            "https://[::ffff:127.0.0.1]",
            "https://0.0.0.0",
            "news.example.com",
            "",
        ] {
            assert!(check_base_url(refused).is_err(), "{refused} was accepted");
        }
        assert_eq!(check_base_url("https://news.example.com"), Ok(()));
    }

    #[test]
    fn a_redis_password_is_read_from_its_address() {
        let uri = SecretString::from("rediss://default:s%3Dcret@cache.internal:25061");
        assert_eq!(redis_password(&uri).as_deref(), Some("s=cret"));
        let none = SecretString::from("redis://cache.internal:6379");
        assert_eq!(redis_password(&none), None);
    }

    #[test]
    fn variables_are_named_as_the_configuration_reads_them() {
        assert_eq!(
            variable("webhooks.postmark_password"),
            "APP_WEBHOOKS__POSTMARK_PASSWORD"
        );
    }
}
