//! `GET /api/v1/lists` (read): every list. `POST /api/v1/lists` (write):
//! makes one, with the admin form's rules. `PATCH /api/v1/lists/{id}`
//! (write): changes what the admin's page of the list changes (name,
//! description, public, double opt-in), only the fields sent.
//! `POST /api/v1/lists/{id}/archive` and `/unarchive` (write): as the
//! page's buttons, through the same store function; the default list stays
//! live. Every change is written in the audit log under the token's name,
//! in the transaction that makes it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::audit::{self, Action};
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::{ListDescription, ListName};
use crate::subscribers::lists::{self, Archived, List, ListError, ListFields};
use crate::web::error::DatabaseStep;

/// A list as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f",
    "name": "Weekly",
    "description": "The week's news, on Fridays.",
    "public": true,
    "double_opt_in": true,
    "is_default": true,
    "created_at": "2027-01-14T09:00:00Z",
    "archived_at": null
}))]
pub struct ListBody {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    /// Offered on the public sign-up form.
    pub public: bool,
    /// Joining asks for a confirmation by email.
    pub double_opt_in: bool,
    /// Where a sign-up that names no list goes.
    pub is_default: bool,
    pub created_at: DateTime<Utc>,
    /// Set when the list takes no new readers.
    pub archived_at: Option<DateTime<Utc>>,
}

impl From<List> for ListBody {
    fn from(list: List) -> Self {
        ListBody {
            id: list.id,
            name: list.name,
            description: list.description,
            public: list.public,
            double_opt_in: list.double_opt_in,
            is_default: list.is_default,
            created_at: list.created_at,
            archived_at: list.archived_at,
        }
    }
}

/// Every list.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Lists {
    /// Live lists first (the default one leading), then by name.
    pub data: Vec<ListBody>,
}

#[utoipa::path(get, path = "/api/v1/lists", tag = "api",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every list.", body = Lists, content_type = "application/json"),
        crate::api::openapi::ReadRefusals,
    ))]
pub async fn list_lists(token: ApiToken, db: web::Data<Db>) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let all = db
        .transaction(async |tx| lists::all(tx).await)
        .await
        .step("read the lists")?;
    Ok(HttpResponse::Ok().json(Lists {
        data: all.into_iter().map(ListBody::from).collect(),
    }))
}

#[utoipa::path(get, path = "/api/v1/lists/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The list's id.")),
    responses(
        (status = 200, description = "The list.", body = ListBody, content_type = "application/json"),
        crate::api::openapi::ReadOneRefusals,
    ))]
pub async fn get_list(
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Read)?;
    let missing = || Problem::NotFound("No list has this id.".into());
    let id = Uuid::try_parse(&id).map_err(|_| missing())?;
    let list = db
        .transaction(async |tx| lists::find(tx, id).await)
        .await
        .step("read a list")?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(ListBody::from(list)))
}

/// A new list. Only `name` is required.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"name": "Releases", "description": "One email per release.", "public": true, "double_opt_in": true}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct NewList {
    /// 1 to 100 characters, no control characters; no other list's.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Up to 1000 characters. Empty when absent.
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Offered on the public form. False when absent.
    public: Option<bool>,
    /// Joining asks for a confirmation by email. True when absent.
    double_opt_in: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/lists", tag = "api",
    security(("bearer" = [])),
    request_body(content = NewList, content_type = "application/json"),
    responses(
        (status = 201, description = "Made.", body = ListBody, content_type = "application/json",
         headers(("Location" = String, description = "The list's address in the API."))),
        crate::api::openapi::WriteRefusals,
    ))]
pub async fn create_list(
    request: HttpRequest,
    token: ApiToken,
    body: web::Bytes,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let fields = parse_new_list(&body)?;
    let actor = token.actor(&request);
    let created = db
        .transaction(async |tx| match lists::create(tx, &fields).await {
            Ok(list) => {
                let detail = format!("list {} ({}) made", list.name, list.id);
                audit::record(tx, &actor, Action::ListCreated, &detail).await?;
                Ok(Ok(list))
            }
            Err(ListError::Database(e)) => Err(e),
            Err(refused) => Ok(Err(refused.to_string())),
        })
        .await
        .step("make a list")?;
    let list = created.map_err(|reason| Problem::invalid("name", reason))?;
    Ok(HttpResponse::build(StatusCode::CREATED)
        .insert_header(("Location", format!("/api/v1/lists/{}", list.id)))
        .json(ListBody::from(list)))
}

fn parse_new_list(body: &[u8]) -> Result<ListFields, Problem> {
    let mut fields = Fields::parse(body)?;
    let name = fields
        .required_string("name")
        .and_then(|raw| fields.parsed("name", ListName::parse(&raw)));
    let description = fields
        .string("description")
        .and_then(|raw| fields.parsed("description", ListDescription::parse(&raw)));
    let public = fields.boolean("public").unwrap_or(false);
    let double_opt_in = fields.boolean("double_opt_in").unwrap_or(true);
    fields.finish()?;
    Ok(ListFields {
        name: name.expect("refused when absent").as_ref().to_owned(),
        description: description.map_or_else(String::new, |d| d.as_ref().to_owned()),
        public,
        double_opt_in,
    })
}

/// A list id from the path: anything that is not one names no list.
fn list_id(raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw).map_err(|_| Problem::NotFound("No list has this id.".into()))
}

/// How a list names itself in the audit log: by name and by id, which
/// stays when the name changes.
fn audited(list: &List) -> String {
    format!("list {} ({})", list.name, list.id)
}

/// A change to a list: only the fields sent change.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"description": "One email per release, and no more.", "public": false}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct ListChange {
    /// 1 to 100 characters, no control characters; no other list's.
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// Up to 1000 characters.
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// Offered on the public form.
    public: Option<bool>,
    /// Joining asks for a confirmation by email.
    double_opt_in: Option<bool>,
}

/// A parsed [`ListChange`].
struct Change {
    name: Option<ListName>,
    description: Option<ListDescription>,
    public: Option<bool>,
    double_opt_in: Option<bool>,
}

impl Change {
    /// The list's fields with this change made to them.
    fn applied_to(&self, list: &List) -> ListFields {
        ListFields {
            name: self
                .name
                .as_ref()
                .map_or_else(|| list.name.clone(), |n| n.as_ref().to_owned()),
            description: self
                .description
                .as_ref()
                .map_or_else(|| list.description.clone(), |d| d.as_ref().to_owned()),
            public: self.public.unwrap_or(list.public),
            double_opt_in: self.double_opt_in.unwrap_or(list.double_opt_in),
        }
    }
}

fn parse_change(body: &[u8]) -> Result<Change, Problem> {
    let mut fields = Fields::parse(body)?;
    let name = fields
        .string("name")
        .and_then(|raw| fields.parsed("name", ListName::parse(&raw)));
    let description = fields
        .string("description")
        .and_then(|raw| fields.parsed("description", ListDescription::parse(&raw)));
    let public = fields.boolean("public");
    let double_opt_in = fields.boolean("double_opt_in");
    fields.finish()?;
    Ok(Change {
        name,
        description,
        public,
        double_opt_in,
    })
}

#[utoipa::path(patch, path = "/api/v1/lists/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The list's id.")),
    request_body(content = ListChange, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed: the list as it is now.", body = ListBody, content_type = "application/json"),
        crate::api::openapi::WriteOneRefusals,
    ))]
pub async fn update_list(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    body: web::Bytes,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = list_id(&id)?;
    let change = parse_change(&body)?;
    let actor = token.actor(&request);
    let updated = db
        .transaction(async |tx| {
            // Locked, so that two changes at once each apply to the other's
            // result rather than undo it.
            let Some(list) = lists::find_for_update(tx, id).await? else {
                return Ok(Ok(None));
            };
            match lists::update(tx, id, &change.applied_to(&list)).await {
                Ok(Some(list)) => {
                    let detail = format!("{} changed", audited(&list));
                    audit::record(tx, &actor, Action::ListUpdated, &detail).await?;
                    Ok(Ok(Some(list)))
                }
                Ok(None) => Ok(Ok(None)),
                Err(ListError::Database(e)) => Err(e),
                // The failed update ended the transaction: it commits nothing.
                Err(refused) => Ok(Err(refused.to_string())),
            }
        })
        .await
        .step("change a list")?;
    let list = updated
        .map_err(|reason| Problem::invalid("name", reason))?
        .ok_or_else(|| Problem::NotFound("No list has this id.".into()))?;
    Ok(HttpResponse::Ok().json(ListBody::from(list)))
}

#[utoipa::path(post, path = "/api/v1/lists/{id}/archive", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The list's id.")),
    responses(
        (status = 200, description = "Archived (or it already was): the list as it is now. Its readers stay on it; it takes no one new.", body = ListBody, content_type = "application/json"),
        crate::api::openapi::ArchiveRefusals,
    ))]
pub async fn archive_list(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    set_archived(request, token, &id, &db, true).await
}

#[utoipa::path(post, path = "/api/v1/lists/{id}/unarchive", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The list's id.")),
    responses(
        (status = 200, description = "Live again (or it already was): the list as it is now.", body = ListBody, content_type = "application/json"),
        crate::api::openapi::ArchiveRefusals,
    ))]
pub async fn unarchive_list(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, Problem> {
    set_archived(request, token, &id, &db, false).await
}

async fn set_archived(
    request: HttpRequest,
    token: ApiToken,
    id: &str,
    db: &Db,
    archived: bool,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = list_id(id)?;
    let actor = token.actor(&request);
    let verb = if archived { "archived" } else { "unarchived" };
    let changed = db
        .transaction(async |tx| match lists::archive(tx, id, archived).await {
            Ok(Archived::Changed(list)) => {
                let detail = format!("{} {verb}", audited(&list));
                let action = if archived {
                    Action::ListArchived
                } else {
                    Action::ListUnarchived
                };
                audit::record(tx, &actor, action, &detail).await?;
                Ok(Ok(Some(list)))
            }
            Ok(Archived::Unchanged(list)) => Ok(Ok(Some(list))),
            Ok(Archived::Missing) => Ok(Ok(None)),
            Err(ListError::Database(e)) => Err(e),
            Err(refused) => Ok(Err(refused.to_string())),
        })
        .await
        .step("archive a list")?;
    let list = changed
        .map_err(|reason| Problem::invalid("id", reason))?
        .ok_or_else(|| Problem::NotFound("No list has this id.".into()))?;
    Ok(HttpResponse::Ok().json(ListBody::from(list)))
}
