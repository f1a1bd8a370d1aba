//! The one place where failures become HTTP answers.
//!
//! Handlers return [`ApiError`]. Client mistakes (4xx) answer with a short
//! plain-text reason; failures on our side (5xx) answer with a generic message
//! and keep the details for the log. `tracing-actix-web` logs every error
//! once, at the edge, using its `Debug` output, which prints the whole cause
//! chain.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};

use crate::db;
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
    #[error("Too many requests. Please try again in {} seconds.", retry_after_seconds(*.0))]
    TooManyRequests(std::time::Duration),
    #[error("The request body is larger than the {0} bytes this endpoint accepts.")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
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
            ApiError::DatabaseUnavailable(_) | ApiError::SessionsUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string());
        let retry_after = match self {
            ApiError::DatabaseUnavailable(_) | ApiError::SessionsUnavailable(_) => Some(5),
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

/// Whole seconds, rounded up: retrying after a rounded-down wait would be
/// refused again.
pub fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
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
    fn a_missing_row_is_unexpected() {
        let error = Err::<(), _>(sqlx::Error::RowNotFound)
            .step("look something up")
            .unwrap_err();
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
