//! `POST /webhooks/postmark`: where Postmark reports bounces, spam
//! complaints, changes to its suppression list and deliveries (see
//! `crate::webhooks`).
//!
//! Postmark authenticates with HTTP Basic credentials written into the
//! webhook's URL (`https://user:password@host/webhooks/postmark`), checked
//! here against `webhooks.postmark_username` and `postmark_password`.
//!
//! Postmark retries any answer but 2xx, for hours. So the answer says what
//! retrying would do: 200 once the record is stored (or was already), 400
//! for a body that will never be a record this service takes (retrying
//! cannot help; the reason is logged and shows in Postmark's webhook log),
//! 401 for wrong credentials, 503 when the database is unreachable (retrying
//! later is exactly right).

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::configuration::WebhookSettings;
use crate::db::Db;
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;
use crate::webhooks::{self, Applied, Policy, postmark};

/// Largest body taken. A bounce record carries the bounced message's
/// headers, and with "Include bounce content" switched on in Postmark its
/// whole content: that option should stay off, and this leaves room for
/// large headers either way.
pub const WEBHOOK_BODY_LIMIT_BYTES: usize = 1024 * 1024;

#[utoipa::path(post, path = "/webhooks/postmark", tag = "webhooks",
    request_body(content = serde_json::Value, description = "A Postmark Bounce, SpamComplaint, SubscriptionChange or Delivery webhook record.", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or already stored)."),
        (status = 400, description = "Not a record this service takes; retrying cannot help.", body = String, content_type = "text/plain"),
        (status = 401, description = "Basic credentials missing or wrong, or none configured.", body = String, content_type = "text/plain",
         headers(("WWW-Authenticate" = String))),
        (status = 413, description = "A body over 1 MiB.", body = String, content_type = "text/plain"),
        crate::web::openapi_responses::Unavailable,
    ),
    security(("postmark" = [])))]
pub async fn postmark_webhook(
    request: HttpRequest,
    payload: web::Payload,
    settings: web::Data<WebhookSettings>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    policy: web::Data<Policy>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    // The credentials first: a caller without them gets its 401 before
    // the service buffers a byte of what it sent.
    if authenticate(request.headers(), &settings).is_err() {
        return Ok(unauthorized());
    }
    let body = payload
        .to_bytes_limited(WEBHOOK_BODY_LIMIT_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(WEBHOOK_BODY_LIMIT_BYTES))?
        .map_err(|e| ApiError::BadRequest(format!("The body could not be read: {e}.")))?;
    let record = postmark::parse(&body).map_err(|e| {
        tracing::warn!(reason = %e, "Refused a Postmark webhook record");
        ApiError::BadRequest(e.to_string())
    })?;
    let applied = db
        .transaction(async |tx| webhooks::apply(tx, &keys, &policy, &record).await)
        .await
        .step("apply a webhook record")?;
    if applied == Applied::Applied {
        metrics.webhook_record(webhooks::counted_as(&record.event));
    }
    tracing::info!(
        record_type = record.event.record_type(),
        record_id = %record.id,
        repeat = applied == Applied::Repeat,
        "Postmark webhook record handled"
    );
    Ok(HttpResponse::Ok().finish())
}

/// Credentials missing, wrong, or not configured: answered with 401.
#[derive(Debug)]
struct Refused;

/// Checks the request's Basic credentials. Until both credentials are
/// configured nothing is accepted.
fn authenticate(headers: &HeaderMap, settings: &WebhookSettings) -> Result<(), Refused> {
    let (Some(username), Some(password)) = (
        settings
            .postmark_username
            .as_deref()
            .filter(|u| !u.is_empty()),
        settings
            .postmark_password
            .as_ref()
            .map(|p| p.expose_secret())
            .filter(|p| !p.is_empty()),
    ) else {
        tracing::warn!(
            "Refused a Postmark webhook: webhooks.postmark_username and postmark_password \
             (APP_WEBHOOKS__POSTMARK_USERNAME, APP_WEBHOOKS__POSTMARK_PASSWORD) are not both set"
        );
        return Err(Refused);
    };
    let Some((given_username, given_password)) = basic_credentials(headers) else {
        tracing::warn!("Refused a Postmark webhook without Basic credentials");
        return Err(Refused);
    };
    let matches = same(&given_username, username) & same(&given_password, password);
    if bool::from(matches) {
        Ok(())
    } else {
        tracing::warn!("Refused a Postmark webhook with the wrong credentials");
        Err(Refused)
    }
}

/// The username and password of a `Basic` `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some((username.to_owned(), password.to_owned()))
}

/// Compares in time that depends on neither value: both are hashed first,
/// so that not even their lengths show.
fn same(given: &str, expected: &str) -> subtle::Choice {
    Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes()))
}

fn unauthorized() -> HttpResponse {
    let mut answer = HttpResponse::Unauthorized()
        .content_type("text/plain; charset=utf-8")
        .body("Webhook credentials are missing or wrong.");
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Basic realm="webhooks", charset="UTF-8""#),
    );
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn settings(username: Option<&str>, password: Option<&str>) -> WebhookSettings {
        WebhookSettings {
            postmark_username: username.map(str::to_owned),
            postmark_password: password.map(SecretString::from),
            soft_bounce_limit: 3,
        }
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    fn basic(credentials: &str) -> HeaderMap {
        with_authorization(&format!("Basic {}", STANDARD.encode(credentials)))
    }

    #[test]
    fn only_the_configured_credentials_pass() {
        let configured = settings(Some("postmark"), Some("p:ss word"));
        assert!(authenticate(&basic("postmark:p:ss word"), &configured).is_ok());
        for (headers, case) in [
            (basic("postmark:wrong"), "wrong password"),
            (basic("someone:p:ss word"), "wrong username"),
            (
                basic("postmark:p:ss word "),
                "password with a trailing space",
            ),
            (basic("postmark"), "no colon"),
            (HeaderMap::new(), "no header"),
            (with_authorization("Bearer abc"), "another scheme"),
            (with_authorization("Basic ###"), "not base64"),
        ] {
            assert!(authenticate(&headers, &configured).is_err(), "{case}");
        }
    }

    #[test]
    fn a_refusal_says_which_scheme_to_use() {
        let refused = unauthorized();
        assert_eq!(refused.status(), 401);
        assert!(refused.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn without_configured_credentials_nothing_passes() {
        for configured in [
            settings(None, None),
            settings(Some("postmark"), None),
            settings(None, Some("secret")),
            settings(Some(""), Some("")),
        ] {
            assert!(authenticate(&basic("postmark:secret"), &configured).is_err());
            assert!(authenticate(&basic(":"), &configured).is_err());
        }
    }
}
