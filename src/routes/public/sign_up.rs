//! The one way onto the list from a public page, once a handler knows who
//! is signing up: the form of `POST /subscriptions`, and the "Subscribe
//! again" button after unsubscribing (`POST /unsubscribe/{token}/resubscribe`).
//! Both go through the same steps, so that neither can be used to get round
//! the other's defences: check the limits, store the sign-up, answer.
//!
//! Storing is one transaction ([`crate::signups`]): the subscriber (or the
//! one with this address, compared case-insensitively), a confirmation
//! token, and the email to send, in the outbox. Once it commits the email
//! will go out, whatever the email API is doing right now; the answer does
//! not wait for it. A confirmed address gets a short "already subscribed"
//! notice instead of a confirmation, under the same answer.
//!
//! The per-IP and per-address limits are checked in one round trip to
//! Redis. An over-limit client gets 429 (a page saying when to come back,
//! for a browser); past the per-address limit nothing is stored or sent,
//! with the same answer as ever, so that no one can flood an inbox or learn
//! about it. A sign-up that fails to store gives its charge back to the
//! address.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};

use uuid::Uuid;

use crate::db::Db;
use crate::domain::{NewSubscriber, Newsletter, SubscriberEmail};
use crate::metrics::Metrics;
use crate::pages::{CheckInboxPage, page, wants_html};
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::signups::Signups;
use crate::subscribers::lists::{self, List};
use crate::web::error::{ApiError, DatabaseStep};

/// What a sign-up needs of the request and of the app, taken as one
/// extractor so that a handler that signs people up names it once.
pub struct SignUpDesk {
    request: HttpRequest,
    signups: web::Data<Signups>,
    limiter: web::Data<RateLimiter>,
    metrics: web::Data<Metrics>,
    newsletter: web::Data<Newsletter>,
    db: web::Data<Db>,
}

impl FromRequest for SignUpDesk {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::of(request))
    }
}

/// Shared state of the app, as `web::Data` extracts it: a 500 that names
/// what is missing, which only a wrongly built app can cause.
fn shared<T: 'static>(request: &HttpRequest) -> Result<web::Data<T>, actix_web::Error> {
    request.app_data::<web::Data<T>>().cloned().ok_or_else(|| {
        actix_web::error::ErrorInternalServerError(format!(
            "{} is not registered with the app",
            std::any::type_name::<T>()
        ))
    })
}

impl SignUpDesk {
    fn of(request: &HttpRequest) -> Result<Self, actix_web::Error> {
        Ok(Self {
            request: request.clone(),
            signups: shared(request)?,
            limiter: shared(request)?,
            metrics: shared(request)?,
            newsletter: shared(request)?,
            db: shared(request)?,
        })
    }

    pub fn newsletter(&self) -> &Newsletter {
        &self.newsletter
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether every one of these lists takes sign-ups from the public
    /// form (no lists: the default one, which always does).
    pub async fn lists_are_offered(&self, lists: &[Uuid]) -> Result<bool, ApiError> {
        if lists.is_empty() {
            return Ok(true);
        }
        let offered = self
            .db
            .transaction(async |tx| lists::offered_among(tx, lists).await)
            .await
            .step("look up the lists chosen")?;
        Ok(offered.len() == lists.len())
    }

    /// The lists the form offers. When they cannot be read the form shows
    /// none, and a sign-up from it goes to the default list.
    pub async fn offered_lists(&self) -> Vec<List> {
        offered_lists(&self.db).await
    }

    /// Whether the answer is a page (a browser asked) or plain text.
    pub fn wants_html(&self) -> bool {
        wants_html(&self.request)
    }

    /// Signs `new_subscriber` up: the limits, then the store, then the
    /// answer.
    pub async fn sign_up(&self, new_subscriber: NewSubscriber) -> Result<HttpResponse, ApiError> {
        let decision = self.check_limits(Some(&new_subscriber.email)).await?;
        self.store(decision, new_subscriber).await
    }

    /// Charges the client, and `email` when the request would send it
    /// email. A client over its limit is refused here, with 429; what the
    /// address's limit decided is for [`SignUpDesk::store`].
    pub async fn check_limits(
        &self,
        email: Option<&SubscriberEmail>,
    ) -> Result<SubscriptionDecision, ApiError> {
        let client = self.request.peer_addr().map(|peer| {
            self.limiter
                .client_ip()
                .resolve(peer.ip(), self.request.headers())
        });
        let decision = self.limiter.check_subscription(client, email).await;
        if let SubscriptionDecision::IpLimited { retry_after } = decision {
            self.metrics.signup_rate_limited();
            return Err(ApiError::TooManyRequests(retry_after));
        }
        Ok(decision)
    }

    /// Stores the sign-up unless its address is over its limit, and
    /// answers as for every accepted one.
    pub async fn store(
        &self,
        decision: SubscriptionDecision,
        new_subscriber: NewSubscriber,
    ) -> Result<HttpResponse, ApiError> {
        let stored = self
            .signups
            .store_within_limit(&self.limiter, &self.metrics, decision, new_subscriber)
            .await
            .step("store the sign-up")?;
        if let Some(subscriber_id) = stored.and_then(|stored| stored.subscriber_id) {
            // The handler's span declares the field.
            tracing::Span::current()
                .record("subscriber_id", tracing::field::display(subscriber_id));
        }
        Ok(self.accepted())
    }

    /// The answer to every accepted sign-up, whatever became of it: the
    /// check-your-inbox page for a browser, an empty text for other
    /// clients.
    pub fn accepted(&self) -> HttpResponse {
        if self.wants_html() {
            page(
                StatusCode::OK,
                &CheckInboxPage {
                    newsletter: &self.newsletter,
                },
            )
        } else {
            // Empty, but typed like every other answer: a body without a
            // content type is one the contract cannot describe.
            HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .finish()
        }
    }
}

/// The lists the public form offers, or none when they cannot be read:
/// the form still works then, for the default list.
pub async fn offered_lists(db: &Db) -> Vec<List> {
    match db.transaction(async |tx| lists::offered(tx).await).await {
        Ok(lists) => lists,
        Err(e) => {
            tracing::warn!(
                error = %crate::telemetry::error_chain_line(&e),
                "Could not read the lists the form offers: showing the form without them"
            );
            Vec::new()
        }
    }
}
