//! `/api/v1/drafts`: issues written and kept before they are published,
//! for a program that writes an issue in steps (an editor, a build that
//! stages the text and publishes later). `POST` (write) stores one and
//! answers 201 with its address; `GET` (read) lists them, newest first,
//! and reads one; `PATCH` (write) changes the fields sent; `DELETE`
//! (write) removes one; `GET /{id}/preview` (read) shows it as a reader
//! gets it.
//!
//! `POST /{id}/publish` (publish) publishes it with an `Idempotency-Key`,
//! as `POST /api/v1/issues/publish` does: the issue takes the draft's id
//! (its address is `/api/v1/issues/{id}`) and the draft is gone. A retry
//! with the same key gets the same answer; a publish of a draft that was
//! published already, under another key, is refused with 409.
//!
//! A draft's lists and segment are checked when they are saved (each must
//! exist and be usable) and again when it is published, when the lists
//! must also be named if there are two or more live ones. A `send_at` that
//! has passed by the time the draft is published sends it at once, as for
//! any publish. Saving a draft is not idempotent: a client that retries a
//! `POST` after an answer it did not get may store two.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::audit::{self, Action};
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::issues::{
    PreviewBody, answer_published, idempotency_key, issue_body, issue_location, key_reused,
    parse_new_issue, parse_segment, parse_send_at_field,
};
use crate::api::paging::parse_page;
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::campaigns::drafts::{self, Author, Cursor, DraftFields, StoredDraft};
use crate::campaigns::ledger::KeyOwner;
use crate::campaigns::publishing::{self, DraftPublished, PublishSettings, example_email};
use crate::campaigns::targets::{Refused, Targets};
use crate::db::Db;
use crate::domain::Newsletter;
use crate::newsletters::{Draft, render};
use crate::web::error::DatabaseStep;

/// A draft as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "5c0a7e1d-2b3f-4c5d-8e9f-a0b1c2d3e4f5",
    "title": "Release 2.0",
    "content": "# What is new\n\nVersion 2.0 is out.",
    "lists": ["0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f"],
    "segment": null,
    "send_at": null,
    "public": true,
    "created_at": "2027-01-18T09:00:00Z",
    "updated_at": "2027-01-18T09:30:00Z"
}))]
pub struct DraftBody {
    pub id: Uuid,
    pub title: String,
    pub content: String,
    /// The lists' ids; empty when none is named.
    pub lists: Vec<Uuid>,
    /// A saved segment's id.
    pub segment: Option<Uuid>,
    /// When the issue goes out once published; null: at once.
    pub send_at: Option<DateTime<Utc>>,
    /// Whether the issue goes in the public archive as it is published.
    pub public: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<StoredDraft> for DraftBody {
    fn from(draft: StoredDraft) -> Self {
        DraftBody {
            id: draft.id,
            title: draft.title,
            content: draft.content,
            lists: draft.list_ids,
            segment: draft.segment_id,
            send_at: draft.send_at,
            public: draft.public,
            created_at: draft.created_at,
            updated_at: draft.updated_at,
        }
    }
}

/// A page of drafts, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DraftPage {
    pub data: Vec<DraftBody>,
    /// Pass as `after` for the next page; null on the last one.
    #[schema(example = "1768726800123456.5c0a7e1d-2b3f-4c5d-8e9f-a0b1c2d3e4f5")]
    pub next: Option<String>,
}

/// A change to a draft: only the fields sent change. `lists`, `segment`
/// and `send_at` sent as null are cleared; `title` and `content` cannot be.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"content": "# What is new\n\nVersion 2.0 is out, with more.", "segment": null}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct DraftChange {
    #[schema(min_length = 1, max_length = 200)]
    title: Option<String>,
    content: Option<String>,
    lists: Option<Vec<Uuid>>,
    segment: Option<Uuid>,
    send_at: Option<DateTime<Utc>>,
    public: Option<bool>,
}

/// The query of the list: as for issues, with a cursor of the list's own.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by `parse_page`, documented here.
pub struct DraftPageParameters {
    /// The `next` of the page before.
    after: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

fn missing() -> Problem {
    Problem::NotFound("No draft has this id.".into())
}

fn draft_location(id: Uuid) -> String {
    format!("/api/v1/drafts/{id}")
}

/// An id from the path: anything that is not one names no draft.
fn parse_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| missing())
}

/// How a draft names itself in the audit log: by title and by id.
fn audited(draft: &StoredDraft) -> String {
    draft.audited()
}

fn refusal(refused: Refused) -> Problem {
    Problem::invalid(refused.field, refused.reason)
}

#[utoipa::path(post, path = "/api/v1/drafts", tag = "api",
    security(("bearer" = [])),
    request_body(content = crate::api::issues::NewIssueBody, content_type = "application/json",
        description = "As a publish takes it; with two or more live lists, `lists` may be left out until the draft is published."),
    responses(
        (status = 201, description = "Stored: the draft. Nothing is sent.", body = DraftBody, content_type = "application/json",
         headers(("Location" = String, description = "The draft's address in the API."))),
        crate::api::openapi::TextRefusals,
    ))]
pub async fn create_draft(
    request: HttpRequest,
    token: ApiToken,
    payload: web::Payload,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let parsed = parse_new_issue(&issue_body(payload).await?)?;
    let actor = token.actor(&request);
    let author = Author::Token(token.token().id);
    let fields = DraftFields {
        text: &parsed.draft,
        list_ids: &parsed.lists,
        segment_id: parsed.segment,
        send_at: parsed.send_at,
        public: parsed.public,
    };
    let created = db
        .transaction(async |tx| {
            let targets = Targets::read(tx, fields.segment_id).await?;
            if let Err(refused) = targets.check_draft(fields.list_ids) {
                return Ok(Err(refused));
            }
            let draft = drafts::create(tx, &fields, author).await?;
            audit::record(tx, &actor, Action::DraftSaved, &audited(&draft)).await?;
            Ok(Ok(draft))
        })
        .await
        .step("store the draft")?
        .map_err(refusal)?;
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header(("Location", draft_location(created.id)))
        .json(DraftBody::from(created)))
}

#[utoipa::path(get, path = "/api/v1/drafts", tag = "api",
    security(("bearer" = [])),
    params(DraftPageParameters),
    responses(
        (status = 200, description = "Drafts, newest first.", body = DraftPage, content_type = "application/json"),
        crate::api::openapi::ReadPageRefusals,
    ))]
pub async fn list_drafts(
    request: HttpRequest,
    token: ApiToken,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let (after, limit) = parse_page(request.query_string(), Cursor::parse)?;
    let rows = db
        .transaction(async |tx| drafts::page(tx, after, limit.ask()).await)
        .await
        .step("read the drafts")?;
    let (page, next) = limit.split(rows, |draft| Cursor::after(draft).to_string());
    Ok(HttpResponse::Ok().json(DraftPage {
        data: page.into_iter().map(DraftBody::from).collect(),
        next,
    }))
}

async fn read_draft(db: &Db, id: Uuid) -> Result<StoredDraft, Problem> {
    db.transaction(async |tx| drafts::find(tx, id).await)
        .await
        .step("read the draft")?
        .ok_or_else(missing)
}

#[utoipa::path(get, path = "/api/v1/drafts/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The draft's id.")),
    responses(
        (status = 200, description = "The draft.", body = DraftBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_draft(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = parse_id(&id)?;
    Ok(HttpResponse::Ok().json(DraftBody::from(read_draft(&db, id).await?)))
}

#[utoipa::path(get, path = "/api/v1/drafts/{id}/preview", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The draft's id.")),
    responses(
        (status = 200, description = "The draft as a reader named Ada Lovelace would get it.", body = PreviewBody, content_type = "application/json"),
        (status = 422, description = "The draft's text is over a limit lowered since it was saved: change it first.", body = crate::api::problem::ProblemBody, content_type = "application/problem+json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn preview_draft(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let draft = read_draft(&db, id).await?;
    let text = draft
        .text()
        .map_err(|e| Problem::invalid(e.field().name(), e.to_string()))?;
    let email = example_email(&render(&newsletter, &text), &settings);
    Ok(HttpResponse::Ok().json(PreviewBody::from(email)))
}

/// What a `PATCH` asks to change; `None`: left as it is.
struct Change {
    title: Option<String>,
    content: Option<String>,
    lists: Option<Vec<Uuid>>,
    segment: Option<Option<Uuid>>,
    send_at: Option<Option<DateTime<Utc>>>,
    public: Option<bool>,
}

/// A new title or content: a string, which null cannot clear.
fn text_change(fields: &mut Fields, name: &str) -> Option<String> {
    if fields.given(name) && !fields.present(name) {
        fields.refuse(name, format!("`{name}` cannot be removed from a draft."));
    }
    fields.string(name)
}

fn parse_change(body: &[u8]) -> Result<Change, Problem> {
    let mut fields = Fields::parse(body)?;
    let title = text_change(&mut fields, "title");
    let content = text_change(&mut fields, "content");
    let lists = fields.given("lists").then(|| fields.list_ids("lists"));
    let segment = fields.given("segment").then(|| parse_segment(&mut fields));
    let send_at = fields
        .given("send_at")
        .then(|| parse_send_at_field(&mut fields));
    let public = fields.boolean("public");
    fields.finish()?;
    Ok(Change {
        title,
        content,
        lists,
        segment,
        send_at,
        public,
    })
}

#[utoipa::path(patch, path = "/api/v1/drafts/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The draft's id.")),
    request_body(content = DraftChange, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed: the draft.", body = DraftBody, content_type = "application/json"),
        crate::api::openapi::TextOneRefusals,
    ))]
pub async fn update_draft(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    payload: web::Payload,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = parse_id(&id)?;
    let change = parse_change(&issue_body(payload).await?)?;
    let actor = token.actor(&request);
    let updated = db
        .transaction(async |tx| {
            let Some(draft) = drafts::lock(tx, id).await? else {
                return Ok(Err(missing()));
            };
            let title = change.title.as_deref().unwrap_or(&draft.title);
            let content = change.content.as_deref().unwrap_or(&draft.content);
            let text = match Draft::parse(title, content) {
                Ok(text) => text,
                Err(e) => return Ok(Err(Problem::invalid(e.field().name(), e.to_string()))),
            };
            let list_ids = change.lists.as_deref().unwrap_or(&draft.list_ids);
            let segment_id = change.segment.unwrap_or(draft.segment_id);
            // Checked when they change: an edit of the text is not held up
            // by a list archived since, which publishing refuses anyway.
            if change.lists.is_some() || change.segment.is_some() {
                let targets = Targets::read(tx, segment_id).await?;
                if let Err(refused) = targets.check_draft(list_ids) {
                    return Ok(Err(refusal(refused)));
                }
            }
            let fields = DraftFields {
                text: &text,
                list_ids,
                segment_id,
                send_at: change.send_at.unwrap_or(draft.send_at),
                public: change.public.unwrap_or(draft.public),
            };
            let Some(updated) = drafts::update(tx, id, &fields).await? else {
                return Ok(Err(missing()));
            };
            let detail = format!("{} changed", audited(&updated));
            audit::record(tx, &actor, Action::DraftChanged, &detail).await?;
            Ok(Ok(updated))
        })
        .await
        .step("change the draft")??;
    Ok(HttpResponse::Ok().json(DraftBody::from(updated)))
}

#[utoipa::path(delete, path = "/api/v1/drafts/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The draft's id.")),
    responses(
        (status = 204, description = "Deleted. Nothing had been sent."),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn delete_draft(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = parse_id(&id)?;
    let actor = token.actor(&request);
    let deleted = db
        .transaction(async |tx| {
            let Some(draft) = drafts::lock(tx, id).await? else {
                return Ok(false);
            };
            drafts::delete(tx, id).await?;
            let detail = format!("{} deleted", audited(&draft));
            audit::record(tx, &actor, Action::DraftDeleted, &detail).await?;
            Ok(true)
        })
        .await
        .step("delete the draft")?;
    if deleted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(missing())
    }
}

#[utoipa::path(post, path = "/api/v1/drafts/{id}/publish", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The draft's id."),
        ("Idempotency-Key" = String, Header,
        description = "16 to 128 letters, digits, `-` or `_`; the same for every retry. The same key for the same draft within a day answers as the first time; the key with another draft, or with an issue published otherwise, is refused (422).")),
    responses(
        (status = 201, description = "Published, or published before with this key: the issue, which has the draft's id. The draft is gone.", body = crate::api::issues::IssueBody, content_type = "application/json",
         headers(("Location" = String, description = "The issue's address in the API."))),
        crate::api::openapi::PublishDraftRefusals,
    ))]
pub async fn publish_draft(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    newsletter: web::Data<Newsletter>,
    settings: web::Data<PublishSettings>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Publish)?;
    let id = parse_id(&id)?;
    let key = idempotency_key(&request)?;
    let owner = KeyOwner::Token(token.token().id);
    let actor = token.actor(&request);
    match publishing::publish_draft(&db, &settings, &newsletter, &actor, owner, &key, id, None)
        .await?
    {
        DraftPublished::Published(published) => answer_published(&db, published.issue_id).await,
        DraftPublished::KeyReused => Err(key_reused()),
        DraftPublished::Missing => Err(missing()),
        DraftPublished::AlreadyPublished => Err(Problem::Conflict(format!(
            "An issue has this id already: the draft was published, as {}.",
            issue_location(id)
        ))),
        DraftPublished::Refused(refused) => Err(refusal(refused)),
    }
}
