//! `GET /admin/lists`: every list, live ones first, with whether it is
//! public, asks for double opt-in, is the default or is archived, and how
//! many readers are confirmed, waiting or gone on it; below, the form that
//! makes a list. `POST /admin/lists`: makes it, then to its page.
//!
//! A form that cannot be stored (a name that is empty, too long, holds a
//! control character, or is another list's) comes back with `422`, as it
//! was typed, with the reason beside the field.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::form::{FormView, ListForm, name_taken};
use super::pages::{ListView, ListsPage};
use super::{audited, list_path};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::subscribers::lists::{self, List, ListError, ListFields};
use crate::subscribers::memberships;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

#[utoipa::path(get, path = "/admin/lists", tag = "admin",
    responses(
        (status = 200, description = "Every list, with its counts, and the form that makes one.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn lists(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    render(&db, &admin, StatusCode::OK, FormView::blank()).await
}

#[utoipa::path(post, path = "/admin/lists", tag = "admin",
    request_body(content = inline(ListForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Made: to the list's page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 422, description = "A name or description that cannot be stored, or a name another list has: the page again, with the reason.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn create_list(
    request: HttpRequest,
    form: Protected<ListForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let fields = match form.parse() {
        Ok(fields) => fields,
        Err(refused) => {
            return render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, refused).await;
        }
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    match create(&db, &actor, &fields).await? {
        Ok(list) => Ok(see_other(format!("{}?notice=created", list_path(list.id)))),
        Err(reason) => {
            let refused = name_taken(fields, reason);
            render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, refused).await
        }
    }
}

/// Stores the list and its audit entry; the reason it was refused, if it
/// was (the name is another list's).
#[tracing::instrument(name = "Create a list", skip(db, actor))]
async fn create(
    db: &Db,
    actor: &Actor,
    fields: &ListFields,
) -> Result<Result<List, String>, ApiError> {
    db.transaction(async |tx| match lists::create(tx, fields).await {
        Ok(list) => {
            audit::record(tx, actor, Action::ListCreated, &audited(&list)).await?;
            Ok(Ok(list))
        }
        Err(ListError::Database(e)) => Err(e),
        // The failed insert ended the transaction: it commits nothing.
        Err(refused) => Ok(Err(refused.to_string())),
    })
    .await
    .step("create the list")
}

/// Every list and its counts, in one transaction so that they agree.
#[tracing::instrument(name = "Read the lists", skip(db))]
async fn read(db: &Db) -> Result<Vec<ListView>, ApiError> {
    let (all, mut counts) = db
        .transaction(async |tx| {
            let all = lists::all(tx).await?;
            let counts = memberships::counts_by_list(tx).await?;
            Ok((all, counts))
        })
        .await
        .step("read the lists")?;
    Ok(all
        .into_iter()
        .map(|list| {
            let counts = counts.remove(&list.id).unwrap_or_default();
            ListView::of(list, counts)
        })
        .collect())
}

async fn render(
    db: &Db,
    admin: &SignedIn,
    status: StatusCode,
    form: FormView,
) -> Result<HttpResponse, ApiError> {
    let lists = read(db).await?;
    Ok(page(
        status,
        &ListsPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            lists,
            form,
        },
    ))
}
