//! `/api/v1/issues`: publishing, previewing and watching issues from a
//! program, such as a static site's build. `POST /api/v1/issues/publish`
//! (publish) takes the whole issue in one request (a draft stored first is
//! published from [`super::drafts`]), and `POST /api/v1/issues/preview`
//! (read) renders one without storing it. `GET /api/v1/issues` and `/{id}` (read) say where issues
//! stand, with the counts the issue page shows; `/{id}/preview` (read) is
//! a stored issue as a reader gets it; `/{id}/pause`, `/resume`, `/cancel`
//! (publish) act on it as the page's buttons do.
//!
//! Publishing requires an `Idempotency-Key` header: a build that retries
//! after a timeout, or runs twice, publishes once. The key is the token's
//! own ([`KeyOwner::Token`]): the same key and content within a day get the
//! first answer again (201, the same issue); the same key with other
//! content is refused (422). Two requests with one key at once publish one
//! issue: the ledger takes the key before it writes the issue.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::paging::{PageParameters, parse_page};
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::campaigns::actions::{self, IssueAction, Outcome};
use crate::campaigns::ledger::{
    self, Fingerprint, IdempotencyKey, IssueState, IssueSummary, KeyOwner,
};
use crate::campaigns::publishing::{self, PublishSettings, Submission, example_email};
use crate::campaigns::targets::Targets;
use crate::db::Db;
use crate::domain::Newsletter;
use crate::emails::EmailContent;
use crate::newsletters::{Draft, render};
use crate::web::error::DatabaseStep;

/// The body limit of the routes that take an issue's text: the longest
/// content a draft takes, with room for JSON's escapes and the other
/// fields. Larger bodies are refused with 413 before they are read whole.
pub const ISSUE_BODY_LIMIT_BYTES: usize = 2 * Draft::MAX_CONTENT_BYTES + 64 * 1024;

/// The header a publish carries.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The body of a route that takes an issue's text, up to
/// [`ISSUE_BODY_LIMIT_BYTES`]: past it, a 413 problem, read no further.
pub(super) async fn issue_body(payload: web::Payload) -> Result<web::Bytes, Problem> {
    match payload.to_bytes_limited(ISSUE_BODY_LIMIT_BYTES).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(Problem::BadRequest(format!(
            "The body could not be read: {e}."
        ))),
        Err(_) => Err(Problem::TooLarge(format!(
            "The body is over {ISSUE_BODY_LIMIT_BYTES} bytes: an issue's content is at most {} \
             bytes.",
            Draft::MAX_CONTENT_BYTES
        ))),
    }
}

/// An issue, where it stands: the figures its page shows.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6",
    "title": "Release 2.0",
    "state": "sending",
    "send_at": "2027-01-16T09:00:00Z",
    "created_at": "2027-01-16T09:00:00Z",
    "recipients": 1204,
    "queued": 204,
    "sent": 990,
    "failed": 4,
    "skipped": 6,
    "bounced": 2,
    "complained": 0,
    "paused_reason": null,
    "percent": 83,
    "audience_complete": true,
    "finished": false
}))]
pub struct IssueBody {
    pub id: Uuid,
    pub title: String,
    /// `scheduled`, `sending`, `paused`, `cancelled` or `done`.
    pub state: &'static str,
    pub send_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Recipients recorded so far; grows until `audience_complete`.
    pub recipients: i64,
    /// Recorded and not yet sent, failed or skipped.
    pub queued: i64,
    /// Accepted by the email API, bounces and complaints included.
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Of those sent, reported back as hard bounces.
    pub bounced: i64,
    /// Of those sent, marked as spam by their recipient.
    pub complained: i64,
    /// Why the issue paused itself (the complaint guard), while paused.
    pub paused_reason: Option<String>,
    /// Settled out of recorded, 0 to 100; 100 only once done.
    pub percent: u8,
    pub audience_complete: bool,
    /// Nothing changes any more: done or cancelled.
    pub finished: bool,
}

impl From<IssueSummary> for IssueBody {
    fn from(summary: IssueSummary) -> Self {
        let state = summary.state();
        let progress = ledger::Progress {
            summary,
            rate_per_second: None,
        };
        let percent = progress.percent();
        let summary = progress.summary;
        IssueBody {
            id: summary.id,
            state: summary.label(),
            recipients: summary.recipients,
            queued: summary.queued(),
            sent: summary.sent,
            failed: summary.failed,
            skipped: summary.skipped,
            bounced: summary.bounced,
            complained: summary.complained,
            // As on the page: once an admin acts, their decision stands.
            paused_reason: summary
                .paused_reason
                .filter(|_| state == IssueState::Paused),
            percent,
            audience_complete: summary.audience_complete,
            finished: matches!(state, IssueState::Done | IssueState::Cancelled),
            send_at: summary.send_at,
            created_at: summary.created_at,
            title: summary.title,
        }
    }
}

/// A page of issues, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuePage {
    pub data: Vec<IssueBody>,
    /// Pass as `after` for the next page; null on the last one.
    #[schema(example = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6")]
    pub next: Option<Uuid>,
}

/// An email as a reader gets it, filled in for an example reader.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "subject": "Release 2.0",
    "html": "<!doctype html><html>…</html>",
    "text": "Release 2.0\n\nHello Ada Lovelace, …"
}))]
pub struct PreviewBody {
    pub subject: String,
    pub html: String,
    pub text: String,
}

impl From<EmailContent> for PreviewBody {
    fn from(email: EmailContent) -> Self {
        PreviewBody {
            subject: email.subject,
            html: email.html_body,
            text: email.text_body,
        }
    }
}

/// An issue to publish. `title` and `content` are required.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "title": "Release 2.0",
    "content": "# What is new\n\nVersion 2.0 is out.",
    "lists": ["0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f"],
    "public": true
}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct NewIssueBody {
    /// 1 to 200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    /// Markdown, up to 200,000 bytes, the same for every reader: each
    /// email greets its reader by name above it. Text that looks like a
    /// placeholder (`{{name}}`) is shown as written.
    content: String,
    /// The lists' ids. Required when there are two or more live lists;
    /// with one, the issue goes to every confirmed subscriber.
    lists: Option<Vec<Uuid>>,
    /// A saved segment's id, narrowing the lists' readers (of every live
    /// list when `lists` is absent).
    segment: Option<Uuid>,
    /// RFC 3339; absent or past: now.
    send_at: Option<DateTime<Utc>>,
    /// Put it in the public archive as it is published. False when absent.
    public: Option<bool>,
}

/// Text to preview.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"title": "Release 2.0", "content": "Version 2.0 is out."}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct PreviewRequest {
    #[schema(min_length = 1, max_length = 200)]
    title: String,
    content: String,
}

/// What a publish asks for, parsed, before the lists and segment are
/// checked against the database.
pub(super) struct Parsed {
    pub draft: Draft,
    pub lists: Vec<Uuid>,
    pub segment: Option<Uuid>,
    pub send_at: Option<DateTime<Utc>>,
    pub public: bool,
}

pub(super) fn parse_draft(fields: &mut Fields) -> Option<Draft> {
    let title = fields.required_string("title");
    let content = fields.required_string("content");
    let (title, content) = (title?, content?);
    match Draft::parse(&title, &content) {
        Ok(draft) => Some(draft),
        Err(e) => {
            fields.refuse(e.field().name(), e.to_string());
            None
        }
    }
}

pub(super) fn parse_new_issue(body: &[u8]) -> Result<Parsed, Problem> {
    let mut fields = Fields::parse(body)?;
    let draft = parse_draft(&mut fields);
    let lists = fields.list_ids("lists");
    let segment = parse_segment(&mut fields);
    let send_at = parse_send_at_field(&mut fields);
    let public = fields.boolean("public").unwrap_or(false);
    fields.finish()?;
    Ok(Parsed {
        draft: draft.expect("refused when absent"),
        lists,
        segment,
        send_at,
        public,
    })
}

/// `segment`, a saved segment's id; `None` when absent, null or refused.
pub(super) fn parse_segment(fields: &mut Fields) -> Option<Uuid> {
    fields.string("segment").and_then(|raw| {
        let parsed = Uuid::try_parse(raw.trim())
            .map_err(|_| format!("“{}” is not a segment's id.", raw.escape_debug()));
        fields.parsed("segment", parsed)
    })
}

/// `send_at`; `None` when absent, null or refused.
pub(super) fn parse_send_at_field(fields: &mut Fields) -> Option<DateTime<Utc>> {
    fields
        .string("send_at")
        .and_then(|raw| fields.parsed("send_at", parse_send_at(&raw)))
}

/// An RFC 3339 moment, such as `2027-01-16T09:00:00Z`.
fn parse_send_at(raw: &str) -> Result<DateTime<Utc>, String> {
    let unreadable = || {
        format!(
            "“{}” is not an RFC 3339 date and time, such as 2027-01-16T09:00:00Z.",
            raw.escape_debug()
        )
    };
    let at = DateTime::parse_from_rfc3339(raw.trim()).map_err(|_| unreadable())?;
    // As on the form: no issue waits past the year 9999, in UTC, as it is
    // stored.
    let at = at.with_timezone(&Utc);
    if at.year() > 9999 {
        return Err(unreadable());
    }
    Ok(at)
}

pub(super) fn idempotency_key(request: &HttpRequest) -> Result<IdempotencyKey, Problem> {
    let refused = |reason: &str| Problem::invalid(IDEMPOTENCY_KEY, reason);
    let Some(raw) = request.headers().get(IDEMPOTENCY_KEY) else {
        return Err(refused(
            "Send an `Idempotency-Key` header: 16 to 128 letters, digits, `-` or `_`, the same \
             for every retry of this publish (a UUID, or the build's commit and issue).",
        ));
    };
    raw.to_str()
        .ok()
        .and_then(|raw| IdempotencyKey::parse(raw).ok())
        .ok_or_else(|| {
            refused("The `Idempotency-Key` header is 16 to 128 letters, digits, `-` or `_`.")
        })
}

#[utoipa::path(post, path = "/api/v1/issues/publish", tag = "api",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header,
        description = "16 to 128 letters, digits, `-` or `_`; the same for every retry. The same key and content within a day answer as the first time; other content with it is refused (422).")),
    request_body(content = NewIssueBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Published, or published before with this key and this content: the issue.", body = IssueBody, content_type = "application/json",
         headers(("Location" = String, description = "The issue's address in the API."))),
        crate::api::openapi::TextRefusals,
    ))]
pub async fn publish_issue(
    request: HttpRequest,
    token: ApiToken,
    payload: web::Payload,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let key = idempotency_key(&request)?;
    let parsed = parse_new_issue(&issue_body(payload).await?)?;
    let owner = KeyOwner::Token(token.token().id);
    // A retry replays before anything is resolved: the lists or the
    // segment may have changed since the first try published it.
    let fingerprint = Fingerprint::of_request(
        parsed.draft.title(),
        parsed.draft.content(),
        parsed.send_at,
        &parsed.lists,
        parsed.segment,
        parsed.public,
    );
    if let Some(earlier) = publishing::published_with(&db, owner, &key, &fingerprint)
        .await?
        .map_err(|_| key_reused())?
    {
        return answer_published(&db, earlier.issue_id).await;
    }
    let targets = db
        .transaction(async |tx| Targets::read(tx, parsed.segment).await)
        .await
        .step("read the lists and segments")?;
    let audience = targets
        .audience(Some(parsed.lists))
        .map_err(|refused| Problem::invalid(refused.field, refused.reason))?;
    let rendered = render(&newsletter, &parsed.draft);
    let submission = Submission {
        id: Uuid::new_v4(),
        draft: &parsed.draft,
        rendered: &rendered,
        send_at: parsed.send_at,
        list_ids: audience.list_ids,
        segment: audience.segment,
        public: parsed.public,
        fingerprint: Some(fingerprint),
    };
    let actor = token.actor(&request);
    let published = publishing::publish_issue(&db, &settings, &actor, owner, &key, submission)
        .await?
        .map_err(|_| key_reused())?;
    answer_published(&db, published.issue_id).await
}

/// A publish whose key published other content before.
pub(super) fn key_reused() -> Problem {
    Problem::invalid(
        IDEMPOTENCY_KEY,
        "This key published an issue with other content: nothing was published. \
         Use a new key to publish this content as another issue.",
    )
}

/// The answer to a publish, the first and every replay alike.
pub(super) async fn answer_published(db: &Db, id: Uuid) -> Result<HttpResponse, Problem> {
    let issue = read_issue(db, id).await?;
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header(("Location", issue_location(id)))
        .json(issue))
}

#[utoipa::path(post, path = "/api/v1/issues/preview", tag = "api",
    security(("bearer" = [])),
    request_body(content = PreviewRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The email as a reader named Ada Lovelace would get it. Nothing is stored.", body = PreviewBody, content_type = "application/json"),
        crate::api::openapi::TextRefusals,
    ))]
pub async fn preview_text(
    token: ApiToken,
    payload: web::Payload,
    newsletter: web::Data<Newsletter>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let mut fields = Fields::parse(&issue_body(payload).await?)?;
    let draft = parse_draft(&mut fields);
    fields.finish()?;
    let draft = draft.expect("refused when absent");
    let email = example_email(&render(&newsletter, &draft), &settings);
    Ok(HttpResponse::Ok().json(PreviewBody::from(email)))
}

#[utoipa::path(get, path = "/api/v1/issues", tag = "api",
    security(("bearer" = [])),
    params(PageParameters),
    responses(
        (status = 200, description = "Issues, newest first.", body = IssuePage, content_type = "application/json"),
        crate::api::openapi::ReadPageRefusals,
    ))]
pub async fn list_issues(
    request: HttpRequest,
    token: ApiToken,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let (after, limit) = parse_page(request.query_string(), |raw| Uuid::try_parse(raw).ok())?;
    let rows = db
        .transaction(async |tx| ledger::page(tx, after, limit.ask()).await)
        .await
        .step("read the issues")?;
    let (issues, next) = limit.split(rows, |issue| issue.id);
    Ok(HttpResponse::Ok().json(IssuePage {
        data: issues.into_iter().map(IssueBody::from).collect(),
        next,
    }))
}

fn missing() -> Problem {
    Problem::NotFound("No issue has this id.".into())
}

pub(super) fn issue_location(id: Uuid) -> String {
    format!("/api/v1/issues/{id}")
}

/// An id from the path: anything that is not one names no issue.
fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| missing())
}

async fn read_issue(db: &Db, id: Uuid) -> Result<IssueBody, Problem> {
    let progress = db
        .transaction(async |tx| ledger::progress(tx, id).await)
        .await
        .step("read the issue")?
        .ok_or_else(missing)?;
    Ok(IssueBody::from(progress.summary))
}

#[utoipa::path(get, path = "/api/v1/issues/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "The issue, where it stands.", body = IssueBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_issue(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(read_issue(&db, id).await?))
}

#[utoipa::path(get, path = "/api/v1/issues/{id}/preview", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "The issue as a reader named Ada Lovelace gets it.", body = PreviewBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn preview_issue(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let issue = db
        .transaction(async |tx| ledger::find(tx, id).await)
        .await
        .step("read the issue")?
        .ok_or_else(missing)?;
    let email = example_email(&issue.rendered(), &settings);
    Ok(HttpResponse::Ok().json(PreviewBody::from(email)))
}

/// Pause, resume or cancel, as the issue page's buttons do; refused with
/// 409 and the page's reason when the issue's state does not allow it.
async fn act(
    action: IssueAction,
    request: HttpRequest,
    token: ApiToken,
    id: &str,
    db: &Db,
    settings: &PublishSettings,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = parse_id(id)?;
    let actor = token.actor(&request);
    match actions::act(db, settings, &actor, action, id).await? {
        Outcome::Done => Ok(HttpResponse::Ok().json(read_issue(db, id).await?)),
        Outcome::Missing => Err(missing()),
        Outcome::Refused(issue) => Err(Problem::Conflict(action.refusal(&issue))),
    }
}

#[utoipa::path(post, path = "/api/v1/issues/{id}/pause", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "Paused: the issue.", body = IssueBody, content_type = "application/json"),
        crate::api::openapi::ActionRefusals,
    ))]
pub async fn pause_issue(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    act(IssueAction::Pause, request, token, &id, &db, &settings).await
}

#[utoipa::path(post, path = "/api/v1/issues/{id}/resume", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "Sending again: the issue.", body = IssueBody, content_type = "application/json"),
        crate::api::openapi::ActionRefusals,
    ))]
pub async fn resume_issue(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    act(IssueAction::Resume, request, token, &id, &db, &settings).await
}

#[utoipa::path(post, path = "/api/v1/issues/{id}/cancel", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The issue's id.")),
    responses(
        (status = 200, description = "Cancelled: the issue. Deliveries not yet sent are skipped.", body = IssueBody, content_type = "application/json"),
        crate::api::openapi::ActionRefusals,
    ))]
pub async fn cancel_issue(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    act(IssueAction::Cancel, request, token, &id, &db, &settings).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_at_is_rfc_3339_in_any_offset_and_read_as_utc() {
        let at = parse_send_at("2030-01-02T04:04:05+01:00").unwrap();
        assert_eq!(at.to_rfc3339(), "2030-01-02T03:04:05+00:00");
        for raw in ["tomorrow", "2030-01-02T03:04", "2030-01-02", ""] {
            let reason = parse_send_at(raw).unwrap_err();
            assert!(reason.contains("RFC 3339"), "{raw}: {reason}");
        }
    }

    #[test]
    fn a_body_limit_fits_the_longest_content_a_draft_takes_as_json() {
        let body = serde_json::json!({
            "title": "T".repeat(Draft::MAX_TITLE_CHARS),
            "content": "é\"".repeat(Draft::MAX_CONTENT_BYTES / 3),
        })
        .to_string();
        assert!(body.len() <= ISSUE_BODY_LIMIT_BYTES, "{}", body.len());
    }
}
