//! `GET /openapi.json`: the service's HTTP contract, an OpenAPI 3.1
//! document generated from the handlers' own `#[utoipa::path]` attributes.
//!
//! Each handler says, next to its code, what it takes and every status it
//! answers with, in the content type it really sends (pages for browsers,
//! plain text for other clients, JSON where it is JSON). What many
//! handlers share is said once here: the refusals of the form extractor
//! ([`FormRefusals`]), of the `/admin` guard ([`AdminOnly`]), of an
//! unreachable database ([`Unavailable`]) and of a client over its budget
//! ([`TooManyRequests`]). The CSRF field every admin form
//! must carry is added to each admin form's body by [`CsrfField`], as the
//! one extractor that checks it ([`super::admin::Protected`]) applies to
//! them all.
//!
//! The document cannot drift from the routes: `tests/api/openapi.rs`
//! compares it, method by method, with [`super::endpoints`], the list the
//! server registers, and `scripts/fuzz_api.sh` fuzzes a live service
//! against it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::ADMIN_PREFIX;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "newsletter",
        description = "A self-hostable newsletter subscription service. Pages under /admin \
                       need a signed-in session (the `session` cookie, or `__Host-session` \
                       where cookies are secure); their forms need the session's CSRF token.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::home::home,
        super::home::stylesheet,
        super::health_check::health_check,
        super::readiness::readiness,
        openapi_json,
        super::subscriptions::subscribe,
        super::subscriptions_confirm::confirm,
        super::subscriptions_confirm::confirm_with_button,
        super::unsubscribe::show,
        super::unsubscribe::one_click,
        super::unsubscribe::resubscribe,
        super::webhooks::postmark_webhook,
        super::admin::login::login_page,
        super::admin::login::log_in,
        super::admin::login::code_page,
        super::admin::login::submit_code,
        super::admin::login::log_out,
        super::admin::dashboard::dashboard,
        super::admin::account::change_email,
        super::admin::account::password_page,
        super::admin::account::change_password,
        super::admin::account::totp_page,
        super::admin::account::enrol_totp,
        super::admin::subscribers::list::subscribers,
        super::admin::subscribers::list::export_subscribers,
        super::admin::subscribers::page::subscriber_page,
        super::admin::subscribers::export::export_subscriber,
        super::admin::subscribers::erase::erase_subscriber,
        super::admin::newsletters::list::newsletters,
        super::admin::newsletters::compose::submit_issue,
        super::admin::newsletters::compose::compose_page,
        super::admin::newsletters::issue::issue_script,
        super::admin::newsletters::issue::issue_page,
        super::admin::newsletters::issue::act_on_issue,
        super::admin::newsletters::events::issue_events,
        super::admin::inbox::inbox,
        super::admin::inbox::inbox_email,
        super::admin::inbox::inbox_email_body,
    ),
    modifiers(&CsrfField, &WebhookCredentials),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| {
        #[allow(unused_mut)]
        let mut document = ApiDoc::openapi();
        #[cfg(debug_assertions)]
        if super::self_test::enabled() {
            document.merge(super::self_test::SelfTestDoc::openapi());
        }
        document
    });
    &DOCUMENT
}

/// The contract itself.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "This OpenAPI 3.1 document.", body = serde_json::Value,
         content_type = "application/json"),
    ),
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

/// A plain-text reason, as [`super::ApiError`] sends every refusal.
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
/// `Retry-After` for both (see `super::error::refusal_pages`).
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

/// Adds the required `csrf_token` field to the body of every `POST` under
/// `/admin` and of the sign-in code step, the forms
/// [`super::admin::Protected`] (or the code step's own check) reads it from.
struct CsrfField;

impl Modify for CsrfField {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !(path.starts_with(ADMIN_PREFIX) || path == "/login/code") {
                continue;
            }
            let Some(post) = item.post.as_mut() else {
                continue;
            };
            let Some(RefOr::T(body)) = post.request_body.as_mut() else {
                panic!("{path}: admin forms document their body inline");
            };
            for content in body.content.values_mut() {
                let RefOr::T(content) = content else {
                    panic!("{path}: admin forms document their body inline");
                };
                let Some(RefOr::T(Schema::Object(form))) = content.schema.as_mut() else {
                    panic!("{path}: admin forms are documented inline");
                };
                form.properties.insert(
                    "csrf_token".into(),
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some(
                            "The session's CSRF token, as the page's form holds it.",
                        ))
                        .into(),
                );
                form.required.push("csrf_token".into());
            }
            body.required = Some(Required::True);
        }
    }
}

/// Postmark's HTTP Basic credentials, which `/webhooks/postmark` checks.
struct WebhookCredentials;

impl Modify for WebhookCredentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "postmark",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "webhooks.postmark_username and webhooks.postmark_password",
                    ))
                    .build(),
            ),
        );
    }
}
