//! `GET /openapi.json`: the service's HTTP contract, an OpenAPI 3.1
//! document generated from the handlers' own `#[utoipa::path]` attributes.
//!
//! Each handler says, next to its code, what it takes and every status it
//! answers with, in the content type it really sends (pages for browsers,
//! plain text for other clients, JSON where it is JSON). What many
//! handlers share is said once, in [`crate::web::openapi_responses`]: the
//! refusals of the form extractor (`FormRefusals`), of the `/admin` guard
//! (`AdminOnly`), of an unreachable database (`Unavailable`) and of a
//! client over its budget (`TooManyRequests`). The CSRF field every admin form
//! must carry is added to each admin form's body by [`CsrfField`], as the
//! one extractor that checks it ([`crate::admin::guard::Protected`]) applies to
//! them all.
//!
//! The document cannot drift from the routes: `tests/api/openapi.rs`
//! compares it, method by method, with [`super::endpoints`], the list the
//! server registers, and `scripts/fuzz_api.sh` fuzzes a live service
//! against it.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi};

use super::ADMIN_PREFIX;
use crate::api::openapi::BearerScheme;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "newsletter",
        description = "A self-hostable newsletter subscription service. Pages under /admin \
                       need a signed-in session (the `session` cookie, or `__Host-session` \
                       where cookies are secure); their forms need the session's CSRF token. \
                       Operations under /api/v1 need an API token (`Authorization: Bearer`) \
                       and answer refusals as RFC 9457 problems (application/problem+json).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::public::home::home,
        super::public::home::stylesheet,
        super::health_check::health_check,
        super::readiness::readiness,
        openapi_json,
        super::public::subscribe::subscribe,
        super::public::confirm::confirm,
        super::public::confirm::confirm_with_button,
        super::public::preferences::show,
        super::public::preferences::save,
        super::public::unsubscribe::show,
        super::public::unsubscribe::one_click,
        super::public::unsubscribe::resubscribe,
        super::public::archive::archive,
        super::public::archive::issue,
        super::public::archive::feed,
        super::webhooks::postmark_webhook,
        crate::admin::pages::sign_in::login_page,
        crate::admin::pages::sign_in::log_in,
        crate::admin::pages::sign_in::code_page,
        crate::admin::pages::sign_in::submit_code,
        crate::admin::pages::sign_in::log_out,
        super::admin::dashboard::dashboard,
        super::admin::email::change_email,
        crate::admin::pages::account::password_page,
        crate::admin::pages::account::change_password,
        crate::admin::pages::account::totp_page,
        crate::admin::pages::account::enrol_totp,
        super::admin::subscribers::list::subscribers,
        super::admin::subscribers::list::export_subscribers,
        super::admin::subscribers::page::subscriber_page,
        super::admin::subscribers::export::export_subscriber,
        super::admin::subscribers::erase::erase_subscriber,
        super::admin::subscribers::attributes::change_attributes,
        super::admin::attributes::attributes_page,
        super::admin::attributes::create_attribute,
        super::admin::attributes::delete_attribute,
        super::admin::lists::index::lists,
        super::admin::lists::index::create_list,
        super::admin::lists::edit::list_page,
        super::admin::lists::edit::update_list,
        super::admin::lists::welcome::update_welcome,
        super::admin::lists::archive::archive_list,
        super::admin::lists::archive::unarchive_list,
        super::admin::newsletters::list::newsletters,
        super::admin::newsletters::compose::submit_issue,
        super::admin::newsletters::compose::compose_page,
        super::admin::newsletters::drafts::draft_page,
        super::admin::newsletters::compose::submit_draft,
        super::admin::newsletters::drafts::delete_draft,
        super::admin::newsletters::issue::issue_script,
        super::admin::newsletters::issue::issue_page,
        super::admin::newsletters::issue::act_on_issue,
        super::admin::newsletters::events::issue_events,
        super::admin::imports::list::imports,
        super::admin::imports::upload::upload,
        super::admin::imports::import::import_script,
        super::admin::imports::import::import_page,
        super::admin::imports::events::import_events,
        super::admin::imports::refusals::import_refusals,
        super::admin::segments::list::segments,
        super::admin::segments::list::create_segment,
        super::admin::segments::segment::segment_page,
        super::admin::segments::segment::update_segment,
        super::admin::segments::segment::delete_segment,
        super::admin::tokens::tokens_page,
        super::admin::tokens::create_token,
        super::admin::tokens::revoke_token,
        super::admin::webhooks::webhooks_page,
        super::admin::webhooks::create_webhook,
        super::admin::webhooks::webhook_page,
        super::admin::webhooks::update_webhook,
        super::admin::webhooks::enable_webhook,
        super::admin::webhooks::disable_webhook,
        super::admin::webhooks::delete_webhook,
        super::admin::webhooks::retry_webhook_delivery,
        super::admin::inbox::inbox,
        super::admin::inbox::inbox_email,
        super::admin::inbox::inbox_email_body,
        crate::api::lists::list_lists,
        crate::api::lists::create_list,
        crate::api::lists::get_list,
        crate::api::lists::update_list,
        crate::api::lists::archive_list,
        crate::api::lists::unarchive_list,
        crate::api::subscribers::list_subscribers,
        crate::api::subscribers::sign_up::create_subscriber,
        crate::api::subscribers::get_subscriber,
        crate::api::subscribers::change::update_subscriber,
        crate::api::subscribers::leave::erase_subscriber,
        crate::api::subscribers::leave::unsubscribe,
        crate::api::issues::list_issues,
        crate::api::issues::publish_issue,
        crate::api::issues::preview_text,
        crate::api::issues::get_issue,
        crate::api::issues::preview_issue,
        crate::api::issues::pause_issue,
        crate::api::issues::resume_issue,
        crate::api::issues::cancel_issue,
        crate::api::drafts::list_drafts,
        crate::api::drafts::create_draft,
        crate::api::drafts::get_draft,
        crate::api::drafts::update_draft,
        crate::api::drafts::delete_draft,
        crate::api::drafts::preview_draft,
        crate::api::drafts::publish_draft,
        crate::api::imports::start_import,
        crate::api::imports::get_import,
        crate::api::webhooks::list_webhooks,
        crate::api::webhooks::create_webhook,
        crate::api::webhooks::get_webhook,
        crate::api::webhooks::update_webhook,
        crate::api::webhooks::delete_webhook,
        crate::api::webhooks::enable_webhook,
        crate::api::webhooks::disable_webhook,
        crate::api::webhooks::list_deliveries,
        crate::api::webhooks::retry_delivery,
    ),
    // The problem answers are built by hand (`crate::api::openapi`) and
    // refer to these by name.
    components(schemas(crate::api::problem::ProblemBody, crate::api::problem::FieldError)),
    modifiers(&CsrfField, &WebhookCredentials, &BearerScheme),
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

/// Adds the required `csrf_token` field to the body of every `POST` under
/// `/admin` and of the sign-in code step, the forms
/// [`crate::admin::guard::Protected`] (or the code step's own check) reads it from.
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
