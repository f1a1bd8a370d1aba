//! `GET /admin/attributes`: the subscribers' custom attributes, with the
//! form that adds one (`POST /admin/attributes`), and
//! `POST /admin/attributes/{name}/delete`, which deletes one and every
//! subscriber's value for it.
//!
//! Deleting cannot be undone and reaches every subscriber, so its form
//! must carry the attribute's name, typed again, as erasing a subscriber
//! needs their address. Each change is in the audit log, written in the
//! same transaction.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::routes::admin::pages::{AttributesPage, DefinitionRow};
use crate::subscribers::attributes::{self, AttributeName, DefinitionError, Kind};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// Where the forms send the admin back to, saying what was done.
const ADDED_PATH: &str = "/admin/attributes?notice=added";
const DELETED_PATH: &str = "/admin/attributes?notice=deleted";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttributesParameters {
    /// What the admin was sent here after; only known ones are shown, so
    /// that a link cannot put words on the page.
    notice: Option<String>,
}

#[utoipa::path(get, path = "/admin/attributes", tag = "admin",
    params(AttributesParameters),
    responses(
        (status = 200, description = "The attributes and the form to add one.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn attributes_page(
    admin: SignedIn,
    parameters: web::Query<AttributesParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let notice = match parameters.notice.as_deref() {
        Some("added") => Some("The attribute was added.".to_owned()),
        Some("deleted") => Some(
            "The attribute was deleted, and with it every subscriber's value for it.".to_owned(),
        ),
        _ => None,
    };
    let shown = Shown {
        notice,
        ..Shown::default()
    };
    render(&db, &admin, StatusCode::OK, shown).await
}

/// What the page shows beyond the definitions: the new attribute's form as
/// typed, and why something was refused.
#[derive(Default)]
struct Shown<'a> {
    name: &'a str,
    kind: Option<Kind>,
    name_error: Option<String>,
    kind_error: Option<String>,
    /// The definition whose delete was refused, and why.
    delete_error: Option<(String, String)>,
    notice: Option<String>,
}

async fn render(
    db: &Db,
    admin: &SignedIn,
    status: StatusCode,
    shown: Shown<'_>,
) -> Result<HttpResponse, ApiError> {
    let definitions = db
        .transaction(async |tx| attributes::definitions(tx).await)
        .await
        .step("read the attributes")?;
    let refused = shown.delete_error.as_ref().map(|(name, _)| name.as_str());
    let definitions = definitions
        .into_iter()
        .map(|definition| DefinitionRow {
            open: refused == Some(definition.name.as_str()),
            kind: definition.kind.as_str(),
            kind_label: definition.kind.label(),
            created_at: definition.created_at.format("%Y-%m-%d").to_string(),
            name: definition.name,
        })
        .collect();
    let kind = shown.kind.unwrap_or(Kind::Text);
    Ok(page(
        status,
        &AttributesPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            definitions,
            name: shown.name,
            name_error: shown.name_error,
            kinds: Kind::ALL
                .into_iter()
                .map(|k| (k.as_str(), k.label(), k == kind))
                .collect(),
            kind_error: shown.kind_error,
            delete_error: shown.delete_error.map(|(_, reason)| reason),
            notice: shown.notice,
        },
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewAttributeForm {
    /// Lower-case letters, digits and underscores, starting with a letter.
    #[serde(default)]
    name: String,
    /// `text`, `number`, `date` or `boolean`.
    #[serde(default)]
    kind: String,
}

#[utoipa::path(post, path = "/admin/attributes", tag = "admin",
    request_body(content = inline(NewAttributeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Added: to the attributes page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 422, description = "A name or kind refused, with the reason on the page.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn create_attribute(
    request: HttpRequest,
    form: Protected<NewAttributeForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let kind = Kind::parse(form.kind.trim());
    let refuse = |name_error: Option<String>, kind_error: Option<String>| Shown {
        name: form.name.as_str(),
        kind,
        name_error,
        kind_error,
        ..Shown::default()
    };
    let name = AttributeName::parse(&form.name);
    let (name, kind) = match (name, kind) {
        (Ok(name), Some(kind)) => (name, kind),
        (name, kind) => {
            let kind_error = kind
                .is_none()
                .then(|| "Choose a kind: text, number, date or yes or no.".to_owned());
            let shown = refuse(name.err(), kind_error);
            return render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let created = db
        .transaction(async |tx| {
            match attributes::create(tx, &name, kind).await {
                Err(DefinitionError::Database(e)) => return Err(e),
                Err(refused) => return Ok(Err(refused.to_string())),
                Ok(_) => {}
            }
            let detail = format!("attribute {name} ({})", kind.as_str());
            audit::record(tx, &actor, Action::AttributeDefined, &detail).await?;
            Ok(Ok(()))
        })
        .await
        .step("add an attribute")?;
    match created {
        Ok(()) => Ok(see_other(ADDED_PATH)),
        Err(reason) => {
            let shown = refuse(Some(reason), None);
            render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct DeleteAttributeForm {
    /// The attribute's name, typed by the admin to confirm.
    #[serde(default)]
    confirm_name: String,
}

#[utoipa::path(post, path = "/admin/attributes/{name}/delete", tag = "admin",
    params(("name" = String, Path, description = "The attribute's name.")),
    request_body(content = inline(DeleteAttributeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted, with every value: to the attributes page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such attribute.", body = String, content_type = "text/html"),
        (status = 422, description = "The typed name is not the attribute's: nothing was deleted.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn delete_attribute(
    request: HttpRequest,
    form: Protected<DeleteAttributeForm>,
    name: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let missing = |name: &str| Shown {
        delete_error: Some((
            name.to_owned(),
            "No attribute is called that: it may have been deleted already.".to_owned(),
        )),
        ..Shown::default()
    };
    // The address names the attribute exactly as stored, or nothing.
    let name = match AttributeName::parse(&name) {
        Ok(parsed) if parsed.as_str() == name.as_str() => parsed,
        _ => return render(&db, &admin, StatusCode::NOT_FOUND, missing("")).await,
    };
    if form.confirm_name.trim() != name.as_str() {
        let reason =
            format!("Nothing was deleted: to confirm, type the attribute's name, {name}, exactly.");
        let shown = Shown {
            delete_error: Some((name.to_string(), reason)),
            ..Shown::default()
        };
        return render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
    }
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let deleted = db
        .transaction(async |tx| {
            let Some(cleared) = attributes::delete(tx, &name).await? else {
                return Ok(false);
            };
            let detail = format!("attribute {name}; its values removed from {cleared} subscribers");
            audit::record(tx, &actor, Action::AttributeDeleted, &detail).await?;
            Ok(true)
        })
        .await
        .step("delete an attribute")?;
    if deleted {
        tracing::info!(%name, "Attribute deleted");
        Ok(see_other(DELETED_PATH))
    } else {
        render(&db, &admin, StatusCode::NOT_FOUND, missing(name.as_str())).await
    }
}
