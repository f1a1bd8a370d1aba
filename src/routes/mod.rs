//! HTTP handlers, one module per resource. Each handler parses its input into
//! domain types, runs its steps, and answers; failures go through
//! [`crate::web::error::ApiError`].

pub mod admin;
mod health_check;
pub(crate) mod openapi;
pub(crate) mod public;
mod readiness;
#[cfg(debug_assertions)]
mod self_test;
mod webhooks;

pub use health_check::health_check;
pub use public::{
    FORM_BODY_LIMIT_BYTES, SubscriptionOptions, confirm, confirm_with_button, home, stylesheet,
    subscribe,
};
pub use readiness::readiness;
pub use webhooks::{WEBHOOK_BODY_LIMIT_BYTES, postmark_webhook};

use actix_web::dev::HttpServiceFactory;
use actix_web::http::Method;
use actix_web::middleware::from_fn;
use actix_web::web::{self, resource};

use crate::admin::guard::require_admin;
use crate::admin::pages::{account, sign_in};
use crate::api::guard::require_token;

use public::limit_confirmations;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    /// Only a signed-in admin: registered inside the `/admin` scope, behind
    /// its guard, and nowhere else.
    Admin,
    /// Only a program with a live API token: registered inside the
    /// `/api/v1` scope, behind its guard ([`crate::api::guard`]), and
    /// nowhere else. The handler checks the scope it needs.
    Token,
}

/// One path the service answers, with the methods it takes.
pub struct Endpoint {
    pub path: &'static str,
    pub access: Access,
    pub methods: &'static [Method],
    /// Registers the resource at the path it is given (relative to the
    /// scope it is registered in).
    register: fn(&mut web::ServiceConfig, &str),
}

const GET: &[Method] = &[Method::GET];
const POST: &[Method] = &[Method::POST];
const GET_POST: &[Method] = &[Method::GET, Method::POST];
const GET_PATCH: &[Method] = &[Method::GET, Method::PATCH];
const GET_PATCH_DELETE: &[Method] = &[Method::GET, Method::PATCH, Method::DELETE];

/// Every route of the service: the one list both the server and the tests
/// read, so a test can check each of them against its access rule.
/// Resources rather than bare routes: a wrong method gets 405.
pub fn endpoints() -> Vec<Endpoint> {
    use Access::{Admin, Anyone, Token};
    let endpoint = |path, access, methods, register| Endpoint {
        path,
        access,
        methods,
        register,
    };
    #[allow(unused_mut)]
    let mut endpoints = vec![
        endpoint("/", Anyone, GET, |c, p| add(c, resource(p).get(home))),
        endpoint("/style.css", Anyone, GET, |c, p| {
            add(c, resource(p).get(stylesheet))
        }),
        endpoint("/health_check", Anyone, GET, |c, p| {
            add(c, resource(p).get(health_check))
        }),
        endpoint("/ready", Anyone, GET, |c, p| {
            add(c, resource(p).get(readiness))
        }),
        endpoint("/openapi.json", Anyone, GET, |c, p| {
            add(c, resource(p).get(openapi::openapi_json))
        }),
        // The handler checks the per-IP limit with the per-address one, in
        // a single call to Redis.
        endpoint("/subscriptions", Anyone, POST, |c, p| {
            add(c, resource(p).post(subscribe))
        }),
        // On a budget of its own: signing up does not spend the clicks
        // that confirm.
        endpoint("/subscriptions/confirm", Anyone, GET_POST, |c, p| {
            let limited = resource(p).wrap(from_fn(limit_confirmations));
            add(c, limited.get(confirm).post(confirm_with_button))
        }),
        endpoint("/login", Anyone, GET_POST, |c, p| {
            add(
                c,
                resource(p).get(sign_in::login_page).post(sign_in::log_in),
            )
        }),
        endpoint("/login/code", Anyone, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(sign_in::code_page)
                    .post(sign_in::submit_code),
            )
        }),
        endpoint("/admin/dashboard", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::dashboard))
        }),
        endpoint("/admin/email", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::change_email))
        }),
        endpoint("/admin/subscribers", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::subscribers))
        }),
        endpoint("/admin/subscribers.csv", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::export_subscribers))
        }),
        endpoint("/admin/subscribers/{id}", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::subscriber_page))
        }),
        endpoint("/admin/subscribers/{id}/export", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::export_subscriber))
        }),
        endpoint("/admin/subscribers/{id}/erase", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::erase_subscriber))
        }),
        // Its own body limit: room for every attribute's longest value.
        endpoint("/admin/subscribers/{id}/attributes", Admin, POST, |c, p| {
            let form = resource(p).app_data(admin::attributes_form_config());
            add(c, form.post(admin::change_attributes))
        }),
        endpoint("/admin/attributes", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(admin::attributes_page)
                    .post(admin::create_attribute),
            )
        }),
        endpoint("/admin/attributes/{name}/delete", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::delete_attribute))
        }),
        // Their own body limit: a description is longer than the public
        // forms' fields.
        endpoint("/admin/lists", Admin, GET_POST, |c, p| {
            let form = resource(p).app_data(admin::list_form_config());
            add(c, form.get(admin::lists).post(admin::create_list))
        }),
        endpoint("/admin/lists/{id}", Admin, GET_POST, |c, p| {
            let form = resource(p).app_data(admin::list_form_config());
            add(c, form.get(admin::list_page).post(admin::update_list))
        }),
        // Its own body limit: a welcome email is far longer than a list's name.
        endpoint("/admin/lists/{id}/welcome", Admin, POST, |c, p| {
            let form = resource(p).app_data(admin::welcome_form_config());
            add(c, form.post(admin::update_welcome))
        }),
        endpoint("/admin/lists/{id}/archive", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::archive_list))
        }),
        endpoint("/admin/lists/{id}/unarchive", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::unarchive_list))
        }),
        // Its own body limit: an issue is far longer than the public forms.
        endpoint("/admin/newsletters", Admin, GET_POST, |c, p| {
            let compose = resource(p).app_data(admin::compose_form_config());
            add(c, compose.get(admin::newsletters).post(admin::submit_issue))
        }),
        endpoint("/admin/newsletters.js", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::issue_script))
        }),
        // Before `{id}`, which would match it too.
        endpoint("/admin/newsletters/new", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::compose_page))
        }),
        // A draft's page, and its compose form (under the form's body
        // limit). Before `{id}` and `{id}/{action}`, which would match
        // them too.
        endpoint("/admin/newsletters/drafts/{id}", Admin, GET_POST, |c, p| {
            let compose = resource(p).app_data(admin::compose_form_config());
            add(c, compose.get(admin::draft_page).post(admin::submit_draft))
        }),
        endpoint(
            "/admin/newsletters/drafts/{id}/delete",
            Admin,
            POST,
            |c, p| add(c, resource(p).post(admin::delete_draft)),
        ),
        endpoint("/admin/newsletters/{id}", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::issue_page))
        }),
        endpoint("/admin/newsletters/{id}/events", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::issue_events))
        }),
        // pause, resume, cancel or requeue
        endpoint("/admin/newsletters/{id}/{action}", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::act_on_issue))
        }),
        // A multipart upload, streamed to disk under its own cap
        // (`imports.max_upload_bytes`), not a form the form limit applies to.
        endpoint("/admin/imports", Admin, GET_POST, |c, p| {
            add(c, resource(p).get(admin::imports).post(admin::upload))
        }),
        endpoint("/admin/imports.js", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::import_script))
        }),
        endpoint("/admin/imports/{id}", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::import_page))
        }),
        endpoint("/admin/imports/{id}/events", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::import_events))
        }),
        endpoint("/admin/imports/{id}/refusals.csv", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::import_refusals))
        }),
        // Their own body limit: the JSON box holds a whole filter.
        endpoint("/admin/segments", Admin, GET_POST, |c, p| {
            let form = resource(p).app_data(admin::segment_form_config());
            add(c, form.get(admin::segments).post(admin::create_segment))
        }),
        endpoint("/admin/segments/{id}", Admin, GET_POST, |c, p| {
            let form = resource(p).app_data(admin::segment_form_config());
            add(c, form.get(admin::segment_page).post(admin::update_segment))
        }),
        endpoint("/admin/segments/{id}/delete", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::delete_segment))
        }),
        endpoint("/admin/tokens", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(admin::tokens_page)
                    .post(admin::create_token),
            )
        }),
        endpoint("/admin/tokens/{id}/revoke", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::revoke_token))
        }),
        endpoint("/admin/webhooks", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(admin::webhooks_page)
                    .post(admin::create_webhook),
            )
        }),
        endpoint("/admin/webhooks/{id}", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(admin::webhook_page)
                    .post(admin::update_webhook),
            )
        }),
        endpoint("/admin/webhooks/{id}/enable", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::enable_webhook))
        }),
        endpoint("/admin/webhooks/{id}/disable", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::disable_webhook))
        }),
        endpoint("/admin/webhooks/{id}/delete", Admin, POST, |c, p| {
            add(c, resource(p).post(admin::delete_webhook))
        }),
        endpoint(
            "/admin/webhooks/{id}/deliveries/{delivery_id}/retry",
            Admin,
            POST,
            |c, p| add(c, resource(p).post(admin::retry_webhook_delivery)),
        ),
        // Answer 404 with the reason where the inbox is not a provider.
        endpoint("/admin/inbox", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::inbox))
        }),
        endpoint("/admin/inbox/{id}", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::inbox_email))
        }),
        endpoint("/admin/inbox/{id}/body", Admin, GET, |c, p| {
            add(c, resource(p).get(admin::inbox_email_body))
        }),
        endpoint("/admin/password", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(account::password_page)
                    .post(account::change_password),
            )
        }),
        endpoint("/admin/totp", Admin, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(account::totp_page)
                    .post(account::enrol_totp),
            )
        }),
        endpoint("/admin/logout", Admin, POST, |c, p| {
            add(c, resource(p).post(sign_in::log_out))
        }),
        endpoint("/api/v1/lists", Token, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::lists::list_lists)
                    .post(crate::api::lists::create_list),
            )
        }),
        endpoint("/api/v1/lists/{id}", Token, GET_PATCH, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::lists::get_list)
                    .patch(crate::api::lists::update_list),
            )
        }),
        endpoint("/api/v1/lists/{id}/archive", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::lists::archive_list))
        }),
        endpoint("/api/v1/lists/{id}/unarchive", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::lists::unarchive_list))
        }),
        endpoint("/api/v1/subscribers", Token, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::subscribers::list_subscribers)
                    .post(crate::api::subscribers::sign_up::create_subscriber),
            )
        }),
        endpoint(
            "/api/v1/subscribers/{id}",
            Token,
            GET_PATCH_DELETE,
            |c, p| {
                add(
                    c,
                    resource(p)
                        .get(crate::api::subscribers::get_subscriber)
                        .patch(crate::api::subscribers::change::update_subscriber)
                        .delete(crate::api::subscribers::leave::erase_subscriber),
                )
            },
        ),
        endpoint(
            "/api/v1/subscribers/{id}/unsubscribe",
            Token,
            POST,
            |c, p| {
                add(
                    c,
                    resource(p).post(crate::api::subscribers::leave::unsubscribe),
                )
            },
        ),
        endpoint("/api/v1/issues", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::issues::list_issues))
        }),
        // Before `{id}`, which would match them too. Their handlers read
        // the body under a limit of their own: an issue's text is far
        // longer than a list's fields.
        endpoint("/api/v1/issues/publish", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::issues::publish_issue))
        }),
        endpoint("/api/v1/issues/preview", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::issues::preview_text))
        }),
        endpoint("/api/v1/issues/{id}", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::issues::get_issue))
        }),
        endpoint("/api/v1/issues/{id}/preview", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::issues::preview_issue))
        }),
        endpoint("/api/v1/issues/{id}/pause", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::issues::pause_issue))
        }),
        endpoint("/api/v1/issues/{id}/resume", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::issues::resume_issue))
        }),
        endpoint("/api/v1/issues/{id}/cancel", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::issues::cancel_issue))
        }),
        // Their handlers read the body under the issue text's limit.
        endpoint("/api/v1/drafts", Token, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::drafts::list_drafts)
                    .post(crate::api::drafts::create_draft),
            )
        }),
        endpoint("/api/v1/drafts/{id}", Token, GET_PATCH_DELETE, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::drafts::get_draft)
                    .patch(crate::api::drafts::update_draft)
                    .delete(crate::api::drafts::delete_draft),
            )
        }),
        endpoint("/api/v1/drafts/{id}/preview", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::drafts::preview_draft))
        }),
        endpoint("/api/v1/drafts/{id}/publish", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::drafts::publish_draft))
        }),
        // The file is the body, streamed to disk under its own cap
        // (`imports.max_upload_bytes`), as on the upload page.
        endpoint("/api/v1/imports", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::imports::start_import))
        }),
        endpoint("/api/v1/imports/{id}", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::imports::get_import))
        }),
        endpoint("/api/v1/webhooks", Token, GET_POST, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::webhooks::list_webhooks)
                    .post(crate::api::webhooks::create_webhook),
            )
        }),
        endpoint("/api/v1/webhooks/{id}", Token, GET_PATCH_DELETE, |c, p| {
            add(
                c,
                resource(p)
                    .get(crate::api::webhooks::get_webhook)
                    .patch(crate::api::webhooks::update_webhook)
                    .delete(crate::api::webhooks::delete_webhook),
            )
        }),
        endpoint("/api/v1/webhooks/{id}/enable", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::webhooks::enable_webhook))
        }),
        endpoint("/api/v1/webhooks/{id}/disable", Token, POST, |c, p| {
            add(c, resource(p).post(crate::api::webhooks::disable_webhook))
        }),
        endpoint("/api/v1/webhooks/{id}/deliveries", Token, GET, |c, p| {
            add(c, resource(p).get(crate::api::webhooks::list_deliveries))
        }),
        endpoint(
            "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
            Token,
            POST,
            |c, p| add(c, resource(p).post(crate::api::webhooks::retry_delivery)),
        ),
        // Answered from memory for a few seconds (`crate::archive`): no
        // per-IP limit, as for the home page.
        endpoint("/archive", Anyone, GET, |c, p| {
            add(c, resource(p).get(public::archive::archive))
        }),
        endpoint("/archive/{slug}", Anyone, GET, |c, p| {
            add(c, resource(p).get(public::archive::issue))
        }),
        endpoint("/feed.xml", Anyone, GET, |c, p| {
            add(c, resource(p).get(public::archive::feed))
        }),
        // GET shows a button; POST is the one-click unsubscribe. No per-IP
        // limit: see `unsubscribe::resource`.
        endpoint("/unsubscribe/{token}", Anyone, GET_POST, |c, p| {
            add(c, public::unsubscribe::resource(p))
        }),
        // A reader's lists, from the link in an issue. No per-IP limit, as
        // for unsubscribing: the link's token is checked before anything.
        endpoint("/preferences/{token}", Anyone, GET_POST, |c, p| {
            add(c, public::preferences::resource(p))
        }),
        // The page's "Subscribe again": the sign-up path, with its limits.
        endpoint("/unsubscribe/{token}/resubscribe", Anyone, POST, |c, p| {
            add(c, public::unsubscribe::resubscribe_resource(p))
        }),
        // Postmark's own credentials, checked by the handler before it
        // reads the body, under a limit of its own (bounce records carry
        // the message's headers).
        endpoint("/webhooks/postmark", Anyone, POST, |c, p| {
            add(c, resource(p).post(postmark_webhook))
        }),
    ];
    #[cfg(debug_assertions)]
    if self_test::enabled() {
        endpoints.push(endpoint("/fuzz-self-test/broken", Anyone, GET, |c, p| {
            add(c, resource(p).get(self_test::broken))
        }));
    }
    endpoints
}

/// Any path that names no route: a plain-text 404, like every other
/// refusal, rather than an empty body of no type.
pub async fn not_found() -> actix_web::HttpResponse {
    actix_web::HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("There is nothing at this address.")
}

fn add(config: &mut web::ServiceConfig, service: impl HttpServiceFactory + 'static) {
    config.service(service);
}

/// Registers [`endpoints`]: the public ones as they are, the admin ones in
/// the `/admin` scope, whose guard also answers any path under `/admin`
/// that names no route.
pub fn configure(config: &mut web::ServiceConfig) {
    let mut newsroom = web::scope(ADMIN_PREFIX).wrap(from_fn(require_admin));
    // The guard first, so that only a caller with a token learns which
    // paths and methods exist; then every refusal answered as a problem.
    let mut api = web::scope(API_PREFIX)
        .wrap(from_fn(require_token))
        .wrap(from_fn(crate::api::problem::answer_in_kind))
        .default_service(web::to(crate::api::problem::no_such_operation));
    for endpoint in endpoints() {
        match endpoint.access {
            Access::Anyone => {
                assert!(
                    !endpoint.path.starts_with(ADMIN_PREFIX)
                        && !endpoint.path.starts_with(API_PREFIX),
                    "{} is under {ADMIN_PREFIX} or {API_PREFIX} but open to anyone",
                    endpoint.path
                );
                (endpoint.register)(config, endpoint.path);
            }
            Access::Admin => {
                let path = endpoint
                    .path
                    .strip_prefix(ADMIN_PREFIX)
                    .expect("admin paths start with /admin");
                newsroom = newsroom.configure(|config| (endpoint.register)(config, path));
            }
            Access::Token => {
                let path = endpoint
                    .path
                    .strip_prefix(API_PREFIX)
                    .expect("API paths start with /api/v1");
                api = api.configure(|config| (endpoint.register)(config, path));
            }
        }
    }
    config.service(newsroom);
    config.service(api);
}

pub const ADMIN_PREFIX: &str = "/admin";
pub const API_PREFIX: &str = "/api/v1";
