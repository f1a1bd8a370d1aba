//! The answers many handlers share, said once for the OpenAPI document:
//! the form extractor's refusals, the `/admin` guard's, an unreachable
//! database's, a client over its budget, a confirmation link's. Handlers
//! name these in their `#[utoipa::path(responses(...))]`; they live apart
//! from the document (which lists every handler) so that handlers import
//! only what they answer, and the document stays the one place that knows
//! them all.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::RefOr;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Schema, Type};

/// A plain-text reason, as [`crate::web::error::ApiError`] sends every refusal.
fn plain(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("text/plain", text())
        .build()
}

/// A page for browsers or a plain-text reason for other clients.
pub fn page_or_plain(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("text/html", text())
        .content("text/plain", text())
        .build()
}

fn text() -> utoipa::openapi::content::Content {
    ContentBuilder::new()
        .schema(Some(Schema::Object(Object::with_type(Type::String))))
        .build()
}

fn with_retry_after(response: Response) -> Response {
    let mut response = response;
    response.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::Integer)))
            .description(Some("Seconds to wait before trying again."))
            .build()
            .into(),
    );
    response
}

fn map(entries: Vec<(&str, Response)>) -> BTreeMap<String, RefOr<Response>> {
    entries
        .into_iter()
        .map(|(status, response)| (status.to_owned(), RefOr::T(response)))
        .collect()
}

/// What a confirmation link answers, whether it is opened (`GET`) or its
/// button pressed (`POST`).
pub struct ConfirmationAnswers;

impl IntoResponses for ConfirmationAnswers {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map(vec![
            (
                "200",
                page_or_plain(
                    "Confirmed, or already confirmed; or, on opening the link of an address with a past here (unsubscribed, suppressed, erased) or with `confirm_with_button`, the page with the button.",
                ),
            ),
            (
                "400",
                page_or_plain("The token is missing or not 32 letters and digits."),
            ),
            ("401", page_or_plain("No such token.")),
            ("410", page_or_plain("The link has expired.")),
        ])
        .into_iter()
        .chain(TooManyRequests::responses())
        .collect()
    }
}

/// A client over one of its budgets: a page saying when to come back for
/// browsers (`Accept: text/html`), a plain-text reason for other clients,
/// `Retry-After` for both (see [`crate::web::error::refusal_pages`]).
pub struct TooManyRequests;

impl IntoResponses for TooManyRequests {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map(vec![(
            "429",
            with_retry_after(page_or_plain(
                "Too many requests from this client: a page saying when to try again for browsers, the same in plain text for other clients.",
            )),
        )])
    }
}

/// Postgres could not be reached in time (or a statement ran past its
/// limits): retrying later may work.
pub struct Unavailable;

impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map(vec![(
            "503",
            with_retry_after(plain("The database is unavailable: try again later.")),
        )])
    }
}

/// What the form extractor refuses before a handler runs: a body over its
/// limit, a body that is not a URL-encoded form. (A form it cannot read is
/// a 400, which each handler documents with its own 400s.)
pub struct FormRefusals;

impl IntoResponses for FormRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map(vec![
            ("413", plain("The body is over this endpoint's limit.")),
            (
                "415",
                plain("The body is not application/x-www-form-urlencoded."),
            ),
        ])
    }
}

/// What the guard in front of every `/admin` route answers a request it
/// does not let through; and, once through, the database or the session
/// store failing.
pub struct AdminOnly;

impl IntoResponses for AdminOnly {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let see_other = ResponseBuilder::new()
            .description("A browser (`Accept: text/html`) without a signed-in session: to /login.")
            .header(
                "Location",
                HeaderBuilder::new()
                    .schema(Some(Object::with_type(Type::String)))
                    .build(),
            )
            .build();
        map(vec![
            ("303", see_other),
            (
                "401",
                plain("Any other client without a signed-in session."),
            ),
            (
                "503",
                with_retry_after(page_or_plain(
                    "The session store or the database is unavailable.",
                )),
            ),
        ])
    }
}

/// [`AdminOnly`], for a form: the form extractor's refusals, and 403 for
/// a form without the session's CSRF token, which is checked first.
pub struct AdminForm;

impl IntoResponses for AdminForm {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = AdminOnly::responses();
        responses.extend(FormRefusals::responses());
        responses.insert(
            "403".into(),
            RefOr::T(plain(
                "The form does not carry the session's CSRF token (`csrf_token`).",
            )),
        );
        responses
    }
}
