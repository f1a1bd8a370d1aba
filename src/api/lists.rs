//! `GET /api/v1/lists` (read): every list. `POST /api/v1/lists` (write):
//! makes one, with the admin form's rules, and writes it in the audit log
//! under the token's name.

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
use crate::subscribers::lists::{self, List, ListError, ListFields};
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
                audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
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
