//! `POST /subscriptions`: a person asks to join the list.
//!
//! The request reads as: parse the form, check the limits, store the
//! sign-up, answer. Storing is one transaction ([`crate::signups`]): the
//! subscriber (or the one with this address, compared case-insensitively), a
//! confirmation token, and the email to send, in the outbox. Once it commits
//! the email will go out, whatever the email API is doing right now; the
//! answer does not wait for it.
//!
//! The answer is the same whether the address is new, pending or already
//! confirmed, and each case does the same amount of database work, so the
//! form cannot be used to find out who is subscribed. A confirmed address
//! gets a short "already subscribed" notice instead of a confirmation.
//!
//! Two defences against using the form to flood someone's inbox keep that
//! same answer: a honeypot field (people never see it, bots fill it in) makes
//! the request a no-op, and past the per-address limit nothing is stored or
//! sent. A sign-up that fails to store gives its charge back to the address.
//! The per-IP limit is checked here too, in the same round trip to Redis as
//! the per-address one; an over-limit client gets 429 (a page saying when to
//! come back, for a browser).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::domain::{NewSubscriber, Newsletter, SubscriberEmail, SubscriberName};
use crate::metrics::{Metrics, Suppressed};
use crate::pages::{CheckInboxPage, SubscribePage, page, wants_html};
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::routes::error::{ApiError, DatabaseStep};
use crate::signups::Signups;

/// A subscription form is two short fields; anything much larger is not one.
pub const FORM_BODY_LIMIT_BYTES: usize = 4 * 1024;

/// What the confirmation flow needs from the configuration.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Whether a confirmation link asks for a button press before confirming.
    pub confirm_with_button: bool,
}

/// The form as sent. Fields are optional here so that a missing one gets its
/// own message instead of a deserializer error.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct SubscribeForm {
    name: Option<String>,
    email: Option<String>,
    /// The honeypot: hidden from people, filled in by bots.
    #[serde(rename = "website")]
    honeypot: Option<String>,
}

impl SubscribeForm {
    fn is_from_a_bot(&self) -> bool {
        self.honeypot
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty())
    }
}

impl SubscribeForm {
    /// Parses both fields, collecting a reason for each one refused, so a
    /// person sees every problem at once.
    fn parse(&self) -> Result<NewSubscriber, FormErrors> {
        let name = match &self.name {
            Some(raw) => SubscriberName::parse(raw),
            None => Err("The name field is missing.".to_owned()),
        };
        let email = match &self.email {
            Some(raw) => SubscriberEmail::parse(raw),
            None => Err("The email field is missing.".to_owned()),
        };
        match (name, email) {
            (Ok(name), Ok(email)) => Ok(NewSubscriber { name, email }),
            (name, email) => Err(FormErrors {
                name: name.err(),
                email: email.err(),
            }),
        }
    }
}

/// Why a form was refused, field by field.
#[derive(Debug)]
struct FormErrors {
    name: Option<String>,
    email: Option<String>,
}

impl std::fmt::Display for FormErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<&str> = [&self.name, &self.email]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        f.write_str(&reasons.join(" "))
    }
}

#[utoipa::path(post, path = "/subscriptions", tag = "public",
    request_body(content = inline(SubscribeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Accepted (whatever became of it): the check-your-inbox page for browsers, an empty text for other clients.", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "A field is missing or invalid: the form again with the reasons for browsers, the reasons for other clients.", content((String = "text/html"), (String = "text/plain"))),
        crate::routes::openapi::TooManyRequests,
        crate::routes::openapi::FormRefusals, crate::routes::openapi::Unavailable,
    ))]
#[tracing::instrument(name = "Subscribe", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn subscribe(
    request: HttpRequest,
    form: web::Form<SubscribeForm>,
    signups: web::Data<Signups>,
    limiter: web::Data<RateLimiter>,
    newsletter: web::Data<Newsletter>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let html = wants_html(&request);
    let form = form.into_inner();
    let parsed = form.parse();
    let decision = check_limits(&request, &form, &parsed, &limiter).await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        metrics.signup_rate_limited();
        return Err(ApiError::TooManyRequests(retry_after));
    }
    if form.is_from_a_bot() {
        metrics.signup_suppressed(Suppressed::honeypot);
        tracing::info!("Honeypot field filled in: nothing stored or sent");
        return Ok(accepted(html, &newsletter));
    }
    let new_subscriber = match parsed {
        Ok(new_subscriber) => new_subscriber,
        Err(errors) if html => return Ok(form_again(&newsletter, &form, errors)),
        Err(errors) => return Err(ApiError::BadRequest(errors.to_string())),
    };
    if decision == SubscriptionDecision::AddressLimited {
        metrics.signup_suppressed(Suppressed::address_limit);
        let suppressed_total = limiter.count_suppressed_email();
        tracing::warn!(
            suppressed_total,
            "Per-address email limit reached: nothing stored or sent"
        );
        return Ok(accepted(html, &newsletter));
    }

    let email = new_subscriber.email.clone();
    let stored = match signups.store(new_subscriber).await {
        Ok(stored) => stored,
        Err(e) => {
            // When nothing was stored or sent, the address keeps its
            // budget, so that a person who retries after a 5xx still gets
            // their email. A commit that may have gone through keeps it spent.
            if e.nothing_committed() {
                limiter.refund_address(&email).await;
            }
            return Err(e).step("store the sign-up");
        }
    };
    if stored.suppressed {
        metrics.signup_suppressed(Suppressed::suppression_list);
    } else {
        metrics.signup_stored();
    }
    if let Some(subscriber_id) = stored.subscriber_id {
        tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber_id));
    }
    Ok(accepted(html, &newsletter))
}

/// Every submission counts against its client; only one that would send
/// email is checked against its address.
async fn check_limits(
    request: &HttpRequest,
    form: &SubscribeForm,
    parsed: &Result<NewSubscriber, FormErrors>,
    limiter: &RateLimiter,
) -> SubscriptionDecision {
    let client = request
        .peer_addr()
        .map(|peer| limiter.client_ip().resolve(peer.ip(), request.headers()));
    let email = match parsed {
        Ok(new_subscriber) if !form.is_from_a_bot() => Some(&new_subscriber.email),
        _ => None,
    };
    limiter.check_subscription(client, email).await
}

/// The form again, with what was typed and the reason next to each
/// refused field.
fn form_again(newsletter: &Newsletter, form: &SubscribeForm, errors: FormErrors) -> HttpResponse {
    let page_again = SubscribePage {
        newsletter,
        name: form.name.as_deref().unwrap_or_default(),
        email: form.email.as_deref().unwrap_or_default(),
        name_error: errors.name,
        email_error: errors.email,
    };
    page(StatusCode::BAD_REQUEST, &page_again)
}

/// The answer to every accepted submission, whatever became of it.
fn accepted(html: bool, newsletter: &Newsletter) -> HttpResponse {
    if html {
        page(StatusCode::OK, &CheckInboxPage { newsletter })
    } else {
        // Empty, but typed like every other answer: a body without a
        // content type is one the contract cannot describe.
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .finish()
    }
}
