//! The one place where failures become HTTP answers.
//!
//! Handlers return [`ApiError`]. Client mistakes (4xx) answer with a short
//! plain-text reason; failures on our side (5xx) answer with a generic message
//! and keep the details for the log. `tracing-actix-web` logs every error
//! once, at the edge, using its `Debug` output, which prints the whole cause
//! chain.
//!
//! A refusal for going too fast (429) is the one a person meets without
//! having done anything wrong, so a browser gets it as a page in the site's
//! style, saying when to come back: [`refusal_pages`] turns every plain 429,
//! from a handler or a limit's middleware alike, into that page for a
//! request that asks for HTML.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpResponse, ResponseError, web};
use askama::Template;

use crate::db;
use crate::domain::Newsletter;
use crate::pages::{TooManyRequestsPage, wants_html};
use crate::telemetry::error_chain_fmt;

#[derive(thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// A state-changing admin form without the session's CSRF token.
    #[error("{0}")]
    Forbidden(String),
    /// Nothing is at this address, and the reason says why.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("Too many requests. {}", try_again_in(*.0))]
    TooManyRequests(Duration),
    #[error("The request body is larger than the {0} bytes this endpoint accepts.")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// This process is doing as much of this work as it takes at once
    /// (imports): trying again in a little while may work.
    #[error("{0}")]
    Busy(String),
    /// Postgres could not be reached in time: retrying later may work.
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    DatabaseUnavailable(#[source] anyhow::Error),
    /// Redis, where admin sessions live, could not be reached in time: no
    /// one can sign in until it answers. The public side does not need it.
    #[error("Signing in is unavailable right now. Please try again in a moment.")]
    SessionsUnavailable(#[source] anyhow::Error),
    #[error("Something went wrong on our side. Please try again later.")]
    Unexpected(#[from] anyhow::Error),
}

impl std::fmt::Debug for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        error_chain_fmt(self, f)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Busy(_)
            | ApiError::DatabaseUnavailable(_)
            | ApiError::SessionsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string());
        let retry_after = match self {
            ApiError::DatabaseUnavailable(_) | ApiError::SessionsUnavailable(_) => Some(5),
            ApiError::Busy(_) => Some(BUSY_RETRY_AFTER_SECONDS),
            ApiError::TooManyRequests(wait) => Some(retry_after_seconds(*wait)),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// When to come back after [`ApiError::Busy`]: about as long as a
/// typical import takes.
pub const BUSY_RETRY_AFTER_SECONDS: u64 = 30;

/// Whole seconds, rounded up: retrying after a rounded-down wait would be
/// refused again.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// When to come back, for a person: "Try again in 4 minutes." In the
/// largest unit under which the wait is a number below 60 (seconds, then
/// minutes, then hours), rounded up, so that coming back when told is
/// never too early.
pub fn try_again_in(wait: Duration) -> String {
    let seconds = retry_after_seconds(wait);
    if seconds == 0 {
        return "Try again now.".to_owned();
    }
    let minutes = seconds.div_ceil(60);
    let (count, unit) = if seconds < 60 {
        (seconds, "second")
    } else if minutes < 60 {
        (minutes, "minute")
    } else {
        (seconds.div_ceil(3600), "hour")
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("Try again in {count} {unit}{plural}.")
}

/// Turns a plain-text 429 into the too-many-requests page for a request
/// whose `Accept` names `text/html`, keeping its status, its headers
/// (`Retry-After`, which the page's words are taken from) and the error the
/// log reports. A 429 that is a page already (a sign-in form answering
/// itself again) and the answers to other clients pass unchanged.
pub fn refusal_pages<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().handler(StatusCode::TOO_MANY_REQUESTS, too_many_requests_page)
}

fn too_many_requests_page<B: MessageBody + 'static>(
    mut response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    // The body depends on who asks: a cache between must not hand a
    // browser's page to an API client, or the other way round.
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept"));
    let is_plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let newsletter = response.request().app_data::<web::Data<Newsletter>>();
    let page = match newsletter {
        Some(newsletter) if is_plain && wants_html(response.request()) => {
            let wait = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map_or(Duration::ZERO, Duration::from_secs);
            TooManyRequestsPage {
                newsletter,
                try_again: &try_again_in(wait),
            }
            .render()
            .inspect_err(|e| tracing::error!(error = %e, "Failed to render a page"))
            .ok()
        }
        _ => None,
    };
    let Some(page) = page else {
        return Ok(ErrorHandlerResponse::Response(
            response.map_into_left_body(),
        ));
    };
    let (request, mut answer) = response.into_parts();
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let answer = ServiceResponse::new(request, answer.set_body(page));
    Ok(ErrorHandlerResponse::Response(
        answer.map_into_boxed_body().map_into_right_body(),
    ))
}

impl From<actix_web::error::UrlencodedError> for ApiError {
    fn from(e: actix_web::error::UrlencodedError) -> Self {
        use actix_web::error::UrlencodedError as E;
        match e {
            E::Overflow { limit, .. } => ApiError::PayloadTooLarge(limit),
            E::ContentType => ApiError::UnsupportedMediaType(
                "Send the form as application/x-www-form-urlencoded.".into(),
            ),
            other => ApiError::BadRequest(format!("The form could not be read: {other}.")),
        }
    }
}

/// Turns a database failure in a named step into an [`ApiError`]: an
/// unreachable or overloaded database is a 503 the client may retry, anything
/// else is unexpected.
pub trait DatabaseStep<T> {
    fn step(self, what: &'static str) -> Result<T, ApiError>;
}

impl<T> DatabaseStep<T> for Result<T, sqlx::Error> {
    fn step(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(db::Error::Sql).step(what)
    }
}

impl<T> DatabaseStep<T> for Result<T, db::Error> {
    fn step(self, what: &'static str) -> Result<T, ApiError> {
        self.map_err(|e| {
            let unavailable = e.is_unavailable();
            let e = anyhow::Error::new(e).context(format!("Failed to {what}"));
            if unavailable {
                ApiError::DatabaseUnavailable(e)
            } else {
                ApiError::Unexpected(e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_hangs_up_mid_handshake_is_unavailable_not_unexpected() {
        let hung_up = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        let error = Err::<(), _>(hung_up)
            .step("begin a transaction")
            .unwrap_err();
        assert_eq!(error.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn the_wait_is_said_in_the_largest_unit_below_sixty_and_rounded_up() {
        let cases = [
            (Duration::ZERO, "Try again now."),
            (Duration::from_millis(300), "Try again in 1 second."),
            (Duration::from_secs(1), "Try again in 1 second."),
            (Duration::from_millis(44_200), "Try again in 45 seconds."),
            (Duration::from_secs(59), "Try again in 59 seconds."),
            (Duration::from_secs(60), "Try again in 1 minute."),
            (Duration::from_secs(61), "Try again in 2 minutes."),
            (Duration::from_secs(190), "Try again in 4 minutes."),
            (Duration::from_secs(240), "Try again in 4 minutes."),
            (Duration::from_secs(3_540), "Try again in 59 minutes."),
            (Duration::from_secs(3_541), "Try again in 1 hour."),
            (Duration::from_secs(3_600), "Try again in 1 hour."),
            (Duration::from_secs(3_601), "Try again in 2 hours."),
            (Duration::from_secs(86_400), "Try again in 24 hours."),
        ];
        for (wait, said) in cases {
            assert_eq!(try_again_in(wait), said, "{wait:?}");
        }
    }

    #[test]
    fn an_api_client_is_told_the_wait_in_words_and_in_retry_after() {
        let refusal = ApiError::TooManyRequests(Duration::from_millis(239_400));
        let response = refusal.error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "240");
        assert_eq!(
            refusal.to_string(),
            "Too many requests. Try again in 4 minutes."
        );
    }

    #[test]
    fn a_missing_row_is_unexpected() {
        let error = Err::<(), _>(sqlx::Error::RowNotFound)
            .step("look something up")
            .unwrap_err();
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
