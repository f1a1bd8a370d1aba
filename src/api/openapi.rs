//! The API's part of the OpenAPI document: the `bearer` security scheme,
//! and the refusals its operations share, each an RFC 9457 problem
//! ([`super::problem`], its body the `ProblemBody` component) with an
//! example. Handlers name the set that fits
//! them in `#[utoipa::path(responses(...))]`: the guard's (401, 429, 503)
//! and the scope's (403) always; 404 for one thing by id; 400 and 422 for
//! input.

use std::collections::BTreeMap;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{IntoResponses, Modify};

use super::problem::CONTENT_TYPE;

/// A problem answer, with an example body.
fn problem(status: u16, title: &str, description: &str, detail: &str) -> Response {
    let example = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    problem_like(description, example)
}

/// A 422 naming `field`.
fn invalid(description: &str, field: &str, reason: &str) -> Response {
    let example = serde_json::json!({
        "type": "about:blank",
        "title": "Unprocessable Entity",
        "status": 422,
        "detail": reason,
        "errors": [{"name": field, "reason": reason}],
    });
    problem_like(description, example)
}

fn problem_like(description: &str, example: serde_json::Value) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(RefOr::<Schema>::Ref(Ref::from_schema_name(
                    "ProblemBody",
                ))))
                .example(Some(example))
                .build(),
        )
        .build()
}

fn with_header(mut response: Response, name: &str, description: &str, kind: Type) -> Response {
    response.headers.insert(
        name.into(),
        HeaderBuilder::new()
            .schema(Some(Object::with_type(kind)))
            .description(Some(description))
            .build()
            .into(),
    );
    response
}

fn guard() -> Vec<(&'static str, Response)> {
    vec![
        (
            "401",
            with_header(
                problem(
                    401,
                    "Unauthorized",
                    "No token, or one that is unknown, revoked or expired.",
                    "This token was revoked.",
                ),
                "WWW-Authenticate",
                "`Bearer realm=\"newsletter\"`, with `error=\"invalid_token\"` when a token was sent.",
                Type::String,
            ),
        ),
        (
            "403",
            problem(
                403,
                "Forbidden",
                "The token lacks the scope this operation needs.",
                "This token lacks the `write` scope.",
            ),
        ),
        (
            "405",
            problem(
                405,
                "Method Not Allowed",
                "A path of the API asked with a method it does not take there, such as `GET /api/v1/issues/publish`, whose path the `{id}` operations' match too.",
                "This address does not take this method.",
            ),
        ),
        (
            "429",
            with_header(
                problem(
                    429,
                    "Too Many Requests",
                    "The token or the client's address is over its budget (`rate_limit.api_per_token`, `rate_limit.api_per_ip`; for sign-ups `rate_limit.api_signups_per_token`).",
                    "Too many requests with this token. Try again in 1 second.",
                ),
                "Retry-After",
                "Seconds to wait before trying again.",
                Type::Integer,
            ),
        ),
        (
            "503",
            with_header(
                problem(
                    503,
                    "Service Unavailable",
                    "The database is unavailable, or (an import) the server runs as many imports as it takes at once (`imports.max_concurrent`): try again after `Retry-After`.",
                    "The service is temporarily unavailable. Please try again in a moment.",
                ),
                "Retry-After",
                "Seconds to wait before trying again.",
                Type::Integer,
            ),
        ),
    ]
}

fn map(entries: Vec<(&str, Response)>) -> BTreeMap<String, RefOr<Response>> {
    entries
        .into_iter()
        .map(|(status, response)| (status.to_owned(), RefOr::T(response)))
        .collect()
}

/// The refusals of an operation that reads and takes no input.
pub struct ReadRefusals;

impl IntoResponses for ReadRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        map(guard())
    }
}

/// [`ReadRefusals`], and 404 for an id that names nothing.
pub struct ReadOneRefusals;

impl IntoResponses for ReadOneRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push(not_found());
        map(all)
    }
}

/// The refusals of an action on one thing by id: [`ReadOneRefusals`], and
/// 409 when its state does not allow the action.
pub struct ActionRefusals;

impl IntoResponses for ActionRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = ReadOneRefusals::responses();
        all.insert(
            "409".into(),
            RefOr::T(problem(
                409,
                "Conflict",
                "The thing's state does not allow this action, with the reason.",
                "Only an issue that is sending can be paused; this one is done.",
            )),
        );
        all
    }
}

/// [`ReadRefusals`], and the refusals of a query.
pub struct ReadPageRefusals;

impl IntoResponses for ReadPageRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push((
            "400",
            problem(
                400,
                "Bad Request",
                "A query string that cannot be read (a parameter given twice).",
                "The query string could not be read: duplicate field `limit`.",
            ),
        ));
        all.push((
            "422",
            invalid(
                "Parameters refused; `errors` names each, with the reason.",
                "limit",
                "`limit` is a whole number from 1 to 500.",
            ),
        ));
        map(all)
    }
}

/// [`ReadRefusals`], and the refusals of a JSON body.
pub struct WriteRefusals;

impl IntoResponses for WriteRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push((
            "400",
            problem(
                400,
                "Bad Request",
                "A body that is not JSON.",
                "The body is not JSON: expected value at line 1 column 1.",
            ),
        ));
        all.push((
            "413",
            problem(
                413,
                "Payload Too Large",
                "The body is over the limit.",
                "The body is larger than this operation takes.",
            ),
        ));
        all.push((
            "422",
            invalid(
                "Fields refused; `errors` names each, with the reason.",
                "name",
                "`name` is required.",
            ),
        ));
        map(all)
    }
}

/// 404 for an id that names nothing.
fn not_found() -> (&'static str, Response) {
    (
        "404",
        problem(
            404,
            "Not Found",
            "Nothing has this id.",
            "No subscriber has this id.",
        ),
    )
}

/// [`WriteRefusals`], and 404 for an id that names nothing.
pub struct WriteOneRefusals;

impl IntoResponses for WriteOneRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = WriteRefusals::responses();
        let (status, response) = not_found();
        all.insert(status.to_owned(), RefOr::T(response));
        all
    }
}

/// [`WriteRefusals`] for a body read under a limit of the handler's own
/// (an issue's text), whose 413 is a problem too.
pub struct TextRefusals;

impl IntoResponses for TextRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = WriteRefusals::responses();
        all.insert(
            "413".into(),
            RefOr::T(problem(
                413,
                "Payload Too Large",
                "The body is over the limit for an issue's text.",
                "The body is over 464288 bytes: an issue's content is at most 200000 bytes.",
            )),
        );
        all
    }
}

/// [`TextRefusals`], and 404 for an id that names nothing.
pub struct TextOneRefusals;

impl IntoResponses for TextOneRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = TextRefusals::responses();
        let (status, response) = not_found();
        all.insert(status.to_owned(), RefOr::T(response));
        all
    }
}

/// The refusals of publishing a stored draft: [`ReadOneRefusals`], 409
/// for a draft published already, and 422 for the key or for lists and a
/// segment that cannot be used now.
pub struct PublishDraftRefusals;

impl IntoResponses for PublishDraftRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = ReadOneRefusals::responses();
        all.insert(
            "409".into(),
            RefOr::T(problem(
                409,
                "Conflict",
                "The draft was published already, under another key.",
                "This draft was published already, as the issue at /api/v1/issues/5c0a7e1d-2b3f-4c5d-8e9f-a0b1c2d3e4f5.",
            )),
        );
        all.insert(
            "422".into(),
            RefOr::T(invalid(
                "The key is missing or was used for other content, or the draft's lists or segment cannot be used now.",
                "lists",
                "Choose at least one list to send to.",
            )),
        );
        all
    }
}

/// The refusals of an action on one thing by id that takes no body: the
/// guard's, 404, and 422 when the thing's state refuses the action.
pub struct ArchiveRefusals;

impl IntoResponses for ArchiveRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push(not_found());
        all.push((
            "422",
            invalid(
                "The thing's state refuses the action.",
                "id",
                "The default list cannot be archived: sign-ups that name no list go to it.",
            ),
        ));
        map(all)
    }
}

/// The refusals of a file sent as the body: the guard's, a query or a
/// body that cannot be read (400), a file over the cap (413), a body that
/// is not CSV (415), a file already being started (409), and parameters or
/// a file refused (422).
pub struct UploadRefusals;

impl IntoResponses for UploadRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push((
            "400",
            problem(
                400,
                "Bad Request",
                "A query string or a body that cannot be read.",
                "The query string could not be read: duplicate field `list`.",
            ),
        ));
        all.push((
            "409",
            problem(
                409,
                "Conflict",
                "The same file is being started onto the same list by another request.",
                "This file is being imported onto this list right now, and its import has no id yet: try again in a moment.",
            ),
        ));
        all.push((
            "413",
            problem(
                413,
                "Payload Too Large",
                "The file is over `imports.max_upload_bytes`.",
                "The file is larger than the 52428800 bytes an upload may be (imports.max_upload_bytes).",
            ),
        ));
        all.push((
            "415",
            problem(
                415,
                "Unsupported Media Type",
                "The body is not sent as `text/csv`.",
                "Send the file as the body, with `Content-Type: text/csv`.",
            ),
        ));
        all.push((
            "422",
            invalid(
                "Parameters or the file refused; `errors` names each (`list`, `consent_source`, `welcome`, `body`), with the reason.",
                "list",
                "There is no list with the id 0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f.",
            ),
        ));
        map(all)
    }
}

/// The refusals of an erasure: the guard's and 404. Nothing is read from
/// the request but the id.
pub struct EraseRefusals;

impl IntoResponses for EraseRefusals {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut all = guard();
        all.push(not_found());
        map(all)
    }
}

/// The `bearer` scheme every `/api/v1` operation names.
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("nl_<base64url>")
                    .description(Some(
                        "An API token, made on /admin/tokens or with `newsletter admin token \
                         create`. A session cookie does not open the API.",
                    ))
                    .build(),
            ),
        );
    }
}
