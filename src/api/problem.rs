//! The one place where the API's failures become answers: RFC 9457
//! problem details (`application/problem+json`), with `type`, `title`,
//! `status` and `detail`, and for input that was read but refused, an
//! `errors` array naming each field or parameter and why.
//!
//! The pages' [`ApiError`] answers in plain text for people; a program
//! wants a shape it can branch on, so `/api/v1` has this type of its own.
//! Failures from the shared steps (a database that does not answer) arrive
//! as [`ApiError`] and are turned into a problem by `From`, keeping their
//! status and their cause for the log. Internals are never in the body:
//! the log has the cause chain, once, at the edge.

use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::api::tokens::Scope;
use crate::telemetry::error_chain_fmt;
use crate::web::error::{ApiError, BUSY_RETRY_AFTER_SECONDS, retry_after_seconds, try_again_in};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One refused field or query parameter.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's or parameter's name, as sent.
    #[schema(example = "limit")]
    pub name: String,
    /// Why it was refused.
    #[schema(example = "`limit` is a whole number from 1 to 500.")]
    pub reason: String,
}

impl FieldError {
    pub fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The body of every refusal under `/api/v1`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[schema(example = "about:blank")]
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The status's name.
    #[schema(example = "Unprocessable Entity")]
    pub title: &'static str,
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong, for a person reading the client's log.
    #[schema(example = "Some parameters were refused.")]
    pub detail: String,
    /// The fields or parameters refused, on a 422; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(thiserror::Error)]
pub enum Problem {
    /// A request that cannot be read at all (a malformed query string, a
    /// body that is not JSON).
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that opens nothing: unknown, revoked or expired.
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        /// Whether a token was presented: `WWW-Authenticate` then says it
        /// is invalid (RFC 6750).
        presented: bool,
    },
    #[error("This token lacks the `{}` scope.", .0.as_str())]
    MissingScope(Scope),
    #[error("{0}")]
    NotFound(String),
    /// The thing's state does not allow the operation (pausing a paused
    /// issue), or another request is doing it right now.
    #[error("{0}")]
    Conflict(String),
    /// A path the API has, asked with a method it does not take there.
    #[error("This address does not take this method.")]
    MethodNotAllowed,
    /// A body over its limit (an import's file over
    /// `imports.max_upload_bytes`, a JSON body over its extractor's).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Fields or parameters read but refused, each with its reason.
    #[error("{}", summary(.0))]
    Invalid(Vec<FieldError>),
    #[error("Too many requests with this token. {}", try_again_in(*.0))]
    TooManyRequests(Duration),
    #[error("The service is temporarily unavailable. Please try again in a moment.")]
    Unavailable(#[source] anyhow::Error),
    /// Doing as much of this work as it takes at once (imports).
    #[error("{0}")]
    Busy(String),
    #[error("Something went wrong on our side. Please try again later.")]
    Unexpected(#[source] anyhow::Error),
}

fn summary(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.reason.clone(),
        _ => "Some fields or parameters were refused.".into(),
    }
}

impl Problem {
    /// One refused field or parameter.
    pub fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Problem::Invalid(vec![FieldError::new(name, reason)])
    }
}

impl std::fmt::Debug for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        error_chain_fmt(self, f)
    }
}

impl From<ApiError> for Problem {
    /// A failure of a step the pages share, keeping its status.
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::DatabaseUnavailable(cause) | ApiError::SessionsUnavailable(cause) => {
                Problem::Unavailable(cause)
            }
            ApiError::Unexpected(cause) => Problem::Unexpected(cause),
            ApiError::BadRequest(reason) => Problem::BadRequest(reason),
            ApiError::NotFound(reason) | ApiError::Gone(reason) => Problem::NotFound(reason),
            ApiError::TooManyRequests(wait) => Problem::TooManyRequests(wait),
            ApiError::Busy(reason) => Problem::Busy(reason),
            ApiError::UnsupportedMediaType(reason) => Problem::UnsupportedMediaType(reason),
            ApiError::PayloadTooLarge(limit) => {
                Problem::TooLarge(format!("The body is over {limit} bytes."))
            }
            other => Problem::Unexpected(anyhow::anyhow!("{other}")),
        }
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        match self {
            Problem::BadRequest(_) => StatusCode::BAD_REQUEST,
            Problem::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Problem::MissingScope(_) => StatusCode::FORBIDDEN,
            Problem::NotFound(_) => StatusCode::NOT_FOUND,
            Problem::Conflict(_) => StatusCode::CONFLICT,
            Problem::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Problem::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Problem::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Problem::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Problem::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Problem::Unavailable(_) | Problem::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Problem::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let body = ProblemBody {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match self {
                Problem::Invalid(errors) => errors.clone(),
                _ => Vec::new(),
            },
        };
        let mut response = HttpResponse::build(status);
        response
            .content_type(CONTENT_TYPE)
            .insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Problem::Unauthorized { presented, .. } => {
                let challenge = if *presented {
                    r#"Bearer realm="newsletter", error="invalid_token""#
                } else {
                    r#"Bearer realm="newsletter""#
                };
                response.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            Problem::MissingScope(scope) => {
                let challenge = format!(
                    r#"Bearer realm="newsletter", error="insufficient_scope", scope="{}""#,
                    scope.as_str()
                );
                response.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            Problem::TooManyRequests(wait) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(*wait)),
                ));
            }
            Problem::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from(5)));
            }
            Problem::Busy(_) => {
                response.insert_header((
                    header::RETRY_AFTER,
                    HeaderValue::from(BUSY_RETRY_AFTER_SECONDS),
                ));
            }
            _ => {}
        }
        response.json(body)
    }
}

/// `/api/v1`'s answer to a path that names none of its operations.
pub async fn no_such_operation() -> Result<HttpResponse, Problem> {
    Err(Problem::NotFound(
        "There is nothing at this address.".into(),
    ))
}

/// Answers in kind the refusals actix makes before a handler runs: a wrong
/// method (the resource's own 405) and a body over the limit (the
/// extractor's 413) come as empty or plain-text answers, which a program
/// reading `/api/v1` cannot branch on like every other refusal. A handler's
/// own problems pass untouched.
pub async fn answer_in_kind(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(request).await?;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == CONTENT_TYPE.as_bytes());
    let problem = match response.status() {
        _ if is_problem => None,
        StatusCode::NOT_FOUND => Some(Problem::NotFound(
            "There is nothing at this address.".into(),
        )),
        StatusCode::METHOD_NOT_ALLOWED => Some(Problem::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(Problem::TooLarge(
            "The body is larger than this operation takes.".into(),
        )),
        _ => None,
    };
    match problem {
        None => Ok(response.map_into_left_body()),
        Some(problem) => {
            let (request, _) = response.into_parts();
            let answer = problem.error_response();
            Ok(ServiceResponse::new(request, answer).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(problem: Problem) -> (StatusCode, serde_json::Value, HttpResponse) {
        let response = problem.error_response();
        let status = response.status();
        let bytes = actix_web::body::to_bytes(problem.error_response().into_body())
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), response)
    }

    #[actix_web::test]
    async fn a_refused_parameter_is_named_in_the_errors_array() {
        let (status, json, response) = body(Problem::invalid("limit", "too big")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            CONTENT_TYPE
        );
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Unprocessable Entity");
        assert_eq!(json["status"], 422);
        assert_eq!(json["detail"], "too big");
        assert_eq!(json["errors"][0]["name"], "limit");
    }

    #[actix_web::test]
    async fn an_internal_failure_says_nothing_of_its_cause() {
        let cause = anyhow::anyhow!("password authentication failed for user postgres");
        let (status, json, _) = body(Problem::Unexpected(cause)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!json.to_string().contains("postgres"), "{json}");
        assert!(json.get("errors").is_none());
    }

    #[actix_web::test]
    async fn a_missing_scope_is_named_in_the_challenge() {
        let (status, json, response) = body(Problem::MissingScope(Scope::Write)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(json["detail"].as_str().unwrap().contains("`write`"));
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge.to_str().unwrap().contains(r#"scope="write""#));
    }
}
