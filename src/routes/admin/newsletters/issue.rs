//! `GET /admin/newsletters/{id}`: one issue, where it stands, who did not
//! get it and why; and the actions on it, each a `POST` that answers with
//! the issue's page again: pause, resume, cancel, queue the failed
//! deliveries again, and put the issue in the public archive or take it
//! out (`make-public`, `make-private`).
//!
//! An action the issue's state does not allow (pausing a paused issue,
//! cancelling a done one: two admins, or a stale tab) answers 409 with the
//! issue's page as it is now and the reason on top. An address that names
//! no issue answers 404, malformed or not.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use super::PublishSettings;
use super::pages::{IssueMissingPage, IssuePage, UndeliveredRow};
use super::view::{ProgressView, issue_path, parse_issue_id};
use crate::admin::actor::actor_for;
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
pub use crate::campaigns::actions::IssueAction;
use crate::campaigns::actions::{self, Outcome};
use crate::campaigns::archive as public_archive;
use crate::campaigns::ledger;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

/// Undelivered recipients on a page.
const PAGE_SIZE: i64 = 50;

/// The newsletter pages' script: it asks before publishing, on the compose
/// form, and follows an issue's live updates, on its page.
const SCRIPT: &str = include_str!("../../../templates/admin/newsletter.js");

/// This page runs its own script, which listens to this site: the
/// service's policy, with those two allowed.
const PAGE_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                           connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                           base-uri 'none'";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParameters {
    after: Option<String>,
}

#[utoipa::path(get, path = "/admin/newsletters/{id}", tag = "admin",
    params(("id" = String, Path, description = "The issue's id."), PageParameters),
    responses(
        (status = 200, description = "The issue's page.", body = String, content_type = "text/html"),
        (status = 400, description = "A page address that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such issue.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn issue_page(
    admin: SignedIn,
    id: web::Path<String>,
    parameters: web::Query<PageParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_issue_id(&id) else {
        return Ok(missing(&admin));
    };
    let after = match parameters.after.as_deref() {
        None => 0,
        Some(raw) => raw
            .parse::<i32>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| ApiError::BadRequest("The page address is malformed.".into()))?,
    };
    render_issue(&db, &admin, id, after, StatusCode::OK, None).await
}

/// The issue's page with `status`, its undelivered list starting after
/// `after`, and why an action was refused, if one was.
async fn render_issue(
    db: &Db,
    admin: &SignedIn,
    id: Uuid,
    after: i32,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let read = db
        .transaction(async |tx| {
            let Some(issue) = ledger::find(tx, id).await? else {
                return Ok(None);
            };
            let Some(progress) = ledger::progress(tx, id).await? else {
                return Ok(None);
            };
            // One more than a page: whether it exists says whether a next
            // page does.
            let undelivered = ledger::undelivered(tx, id, after, PAGE_SIZE + 1).await?;
            let providers = ledger::sent_by_provider(tx, id).await?;
            let publicity = public_archive::publicity_of(tx, id).await?;
            Ok(Some((issue, progress, undelivered, providers, publicity)))
        })
        .await
        .step("read the issue")?;
    let Some((issue, progress, mut undelivered, providers, publicity)) = read else {
        return Ok(missing(admin));
    };
    let more = undelivered.len() as i64 > PAGE_SIZE;
    undelivered.truncate(PAGE_SIZE as usize);
    let path = issue_path(id);
    let next_page = more
        .then(|| undelivered.last())
        .flatten()
        .map(|last| format!("{path}?after={}#undelivered", last.seq));
    let undelivered = undelivered
        .into_iter()
        .map(|row| UndeliveredRow {
            email: row.email.unwrap_or_default(),
            status: row.status,
            reason: row.reason.unwrap_or_default(),
            attempts: row.attempts,
        })
        .collect();
    let mut answer = page(
        status,
        &IssuePage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            path,
            title: issue.summary.title.clone(),
            subject: issue.subject.clone(),
            text_body: issue.text_body.clone(),
            send_at: issue
                .summary
                .send_at
                .format("%Y-%m-%d %H:%M UTC")
                .to_string(),
            created_at: issue
                .summary
                .created_at
                .format("%Y-%m-%d %H:%M UTC")
                .to_string(),
            progress: ProgressView::new(&progress),
            providers,
            undelivered,
            later_page: after > 0,
            next_page,
            error,
            web_path: match publicity {
                Some((true, Some(slug))) => Some(format!("/archive/{slug}")),
                _ => None,
            },
        },
    );
    answer.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    Ok(answer)
}

fn missing(admin: &SignedIn) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &IssueMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
        },
    )
}

#[utoipa::path(get, path = "/admin/newsletters.js", tag = "admin",
    responses((status = 200, description = "The newsletter pages' script: the publish question and an issue's live updates.", body = String, content_type = "text/javascript"), crate::web::openapi_responses::AdminOnly))]
pub async fn issue_script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType(
            "text/javascript; charset=utf-8"
                .parse()
                .expect("a valid media type"),
        ))
        .body(SCRIPT)
}

/// An action's form carries nothing but its CSRF token.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ActionForm {}

/// `POST /admin/newsletters/{id}/{action}`: pause, resume, cancel or
/// requeue. Any other action names no route: 404.
#[utoipa::path(post, path = "/admin/newsletters/{id}/{action}", tag = "admin",
    params(("id" = String, Path, description = "The issue's id."), ("action" = inline(IssueAction), Path)),
    request_body(content = inline(ActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Done: to the issue's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such issue, or no such action.", content((String = "text/html"), (String = "text/plain"))),
        (status = 409, description = "The issue's state does not allow the action: its page, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn act_on_issue(
    request: HttpRequest,
    form: Protected<ActionForm>,
    path: web::Path<(String, IssueAction)>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let admin = &form.admin;
    let Some(id) = parse_issue_id(&id) else {
        return Ok(missing(admin));
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match actions::act(&db, &settings, &actor, action, id).await? {
        Outcome::Done => Ok(see_other(issue_path(id))),
        Outcome::Missing => Ok(missing(admin)),
        Outcome::Refused(issue) => {
            // Read before the action was tried: the page reads it again.
            let reason = action.refusal(&issue);
            render_issue(&db, admin, id, 0, StatusCode::CONFLICT, Some(reason)).await
        }
    }
}
