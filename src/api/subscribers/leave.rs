//! `POST /api/v1/subscribers/{id}/unsubscribe` (write): off some lists or
//! everything, as the one-click link of an issue does it. `DELETE
//! /api/v1/subscribers/{id}` (write): the admin page's erasure, through
//! the same store function.

use actix_web::{HttpRequest, HttpResponse, web};
use uuid::Uuid;

use crate::admin::audit;
use crate::admin::audit::Action;
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::keys::Keys;
use crate::subscribers::erasure::{self, Erasure};
use crate::subscribers::leaving::{self, Left};
use crate::subscribers::lists;
use crate::web::error::DatabaseStep;

use super::{SubscriberDetail, missing, read_detail, subscriber_id};

#[utoipa::path(delete, path = "/api/v1/subscribers/{id}", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    responses(
        (status = 204, description = "Erased, as from the admin's page: nothing holds their address or name any more, but the keyed hashes that keep a suppressed or departed address from being mailed again."),
        crate::api::openapi::EraseRefusals,
    ))]
pub async fn erase_subscriber(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = subscriber_id(&id)?;
    let actor = token.actor(&request);
    // The request is the confirmation: a program has no address to type.
    let outcome = db
        .transaction(async |tx| erasure::erase(tx, &keys, &actor, id, |_| true).await)
        .await
        .step("erase the subscriber")?;
    match outcome {
        Erasure::Erased { hash_kept } => {
            tracing::info!(%id, hash_kept, "Subscriber erased");
            Ok(HttpResponse::NoContent().finish())
        }
        Erasure::Missing | Erasure::NotConfirmed => Err(missing()),
    }
}

/// What to unsubscribe from.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"lists": ["0b9d5a0e-3c1f-4a53-9f0e-6f1b3c2d4e5f"]}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct Unsubscription {
    /// The ids of the lists to leave, at least one; leaving the last list
    /// the reader is on unsubscribes them. Absent (or an empty body):
    /// everything.
    #[schema(max_items = 50)]
    lists: Option<Vec<Uuid>>,
}

#[utoipa::path(post, path = "/api/v1/subscribers/{id}/unsubscribe", tag = "api",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscriber's id.")),
    request_body(content = Option<Unsubscription>, content_type = "application/json"),
    responses(
        (status = 200, description = "Off the lists asked, or off everything: the subscriber as they are now.", body = SubscriberDetail, content_type = "application/json"),
        crate::api::openapi::WriteOneRefusals,
    ))]
pub async fn unsubscribe(
    request: HttpRequest,
    token: ApiToken,
    id: web::Path<String>,
    body: web::Bytes,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let id = subscriber_id(&id)?;
    let lists = parse_unsubscription(&body)?;
    let actor = token.actor(&request);
    let done = db
        .transaction(async |tx| {
            if let Some(lists) = &lists
                && lists::names(tx, lists).await?.len() != lists.len()
            {
                return Ok(Err(Problem::invalid(
                    "lists",
                    "No list has one of these ids.",
                )));
            }
            let detail = match leaving::leave(tx, &keys, id, lists.as_deref()).await? {
                Left::Nobody => return Ok(Err(missing())),
                Left::Lists { .. } => format!(
                    "subscriber {id} left {} lists",
                    lists.as_ref().map_or(0, Vec::len)
                ),
                Left::Everything { .. } => format!("subscriber {id} unsubscribed from everything"),
            };
            audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
            Ok(Ok(read_detail(tx, id).await?))
        })
        .await
        .step("unsubscribe a subscriber")??;
    Ok(HttpResponse::Ok().json(done.ok_or_else(missing)?))
}

/// The lists to leave; `None` for everything.
fn parse_unsubscription(body: &[u8]) -> Result<Option<Vec<Uuid>>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut fields = Fields::parse(body)?;
    let given = fields.present("lists");
    let lists = fields.list_ids("lists");
    // An empty array, not one refused already for what it holds.
    if given && lists.is_empty() && !fields.has_refusals() {
        fields.refuse(
            "lists",
            "Name at least one list, or leave `lists` out to unsubscribe from everything.",
        );
    }
    fields.finish()?;
    Ok(given.then_some(lists))
}
