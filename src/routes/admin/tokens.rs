//! `GET /admin/tokens`: the API tokens, with the form that makes one
//! (`POST /admin/tokens`), and `POST /admin/tokens/{id}/revoke`.
//!
//! A new token is shown on the answer to the form itself, never behind a
//! redirect: its secret must not travel in an address, where it would stay
//! in the browser's history and in logs. It is shown this once; the store
//! keeps its hash only. Each change is in the audit log (never the secret),
//! written in the same transaction.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::api::cli::parse_days;
use crate::api::tokens::{self, CreateError, NewToken, Scopes, TokenName, TokenSecret};
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::routes::admin::pages::{CreatedToken, TokenRow, TokensPage};
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

const REVOKED_PATH: &str = "/admin/tokens?notice=revoked";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokensParameters {
    /// What the admin was sent here after; only known ones are shown, so
    /// that a link cannot put words on the page.
    notice: Option<String>,
}

#[utoipa::path(get, path = "/admin/tokens", tag = "admin",
    params(TokensParameters),
    responses(
        (status = 200, description = "The API tokens and the form to make one.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn tokens_page(
    admin: SignedIn,
    parameters: web::Query<TokensParameters>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let notice = match parameters.notice.as_deref() {
        Some("revoked") => Some("The token was revoked: it opens the API no more.".to_owned()),
        _ => None,
    };
    let shown = Shown {
        notice,
        ..Shown::default()
    };
    render(&db, &admin, StatusCode::OK, shown).await
}

/// What the page shows beyond the list: the form as typed, a token just
/// made, and why something was refused.
#[derive(Default)]
struct Shown<'a> {
    form: Option<&'a NewTokenForm>,
    created: Option<(&'a str, &'a TokenSecret)>,
    name_error: Option<String>,
    expires_error: Option<String>,
    revoke_error: Option<String>,
    notice: Option<String>,
}

fn when(at: Option<DateTime<Utc>>, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |at| at.format("%Y-%m-%d %H:%M").to_string(),
    )
}

async fn render(
    db: &Db,
    admin: &SignedIn,
    status: StatusCode,
    shown: Shown<'_>,
) -> Result<HttpResponse, ApiError> {
    let all = db
        .transaction(async |tx| tokens::all(tx).await)
        .await
        .step("read the API tokens")?;
    let now = Utc::now();
    let rows = all
        .into_iter()
        .map(|token| TokenRow {
            id: token.id,
            revocable: token.revoked_at.is_none(),
            scopes: token.scopes.to_string(),
            created: when(Some(token.created_at), ""),
            expires: match token.expires_at {
                Some(at) if at <= now => format!("expired {}", when(Some(at), "")),
                at => when(at, "never"),
            },
            last_used: when(token.last_used_at, "never"),
            revoked: when(token.revoked_at, "–"),
            created_by: token.created_by,
            name: token.name,
        })
        .collect();
    let form = shown.form;
    Ok(page(
        status,
        &TokensPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            tokens: rows,
            created: shown.created.map(|(name, secret)| CreatedToken {
                name,
                secret: secret.expose(),
            }),
            name: form.map_or("", |f| f.name.as_str()),
            name_error: shown.name_error,
            write: form.is_some_and(|f| f.write.is_some()),
            publish: form.is_some_and(|f| f.publish.is_some()),
            expires_in_days: form.map_or("", |f| f.expires_in_days.as_str()),
            expires_error: shown.expires_error,
            revoke_error: shown.revoke_error,
            notice: shown.notice,
        },
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewTokenForm {
    /// What will use the token: letters, digits, spaces, `-`, `_`, `.`.
    #[serde(default)]
    name: String,
    /// Present (any value) to give the token the write scope.
    write: Option<String>,
    /// Present (any value) to give the token the publish scope.
    publish: Option<String>,
    /// Days until it expires, 1 to 3650; empty for never.
    #[serde(default)]
    expires_in_days: String,
}

#[utoipa::path(post, path = "/admin/tokens", tag = "admin",
    request_body(content = inline(NewTokenForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Made: the page, showing the token this once.", body = String, content_type = "text/html"),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 422, description = "A name or lifetime refused, with the reason on the page.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn create_token(
    request: HttpRequest,
    form: Protected<NewTokenForm>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    let name = TokenName::parse(&form.name);
    let days = match form.expires_in_days.trim() {
        "" => Ok(None),
        raw => parse_days(raw).map(Some),
    };
    let (name, expires_in_days) = match (name, days) {
        (Ok(name), Ok(days)) => (name, days),
        (name, days) => {
            let shown = Shown {
                form: Some(&form),
                name_error: name.err(),
                expires_error: days.err(),
                ..Shown::default()
            };
            return render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await;
        }
    };
    let granted = [
        Some("read"),
        form.write.is_some().then_some("write"),
        form.publish.is_some().then_some("publish"),
    ];
    let scopes = Scopes::from_names(granted.into_iter().flatten())
        .expect("read, write and publish are scopes");
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let new = NewToken {
        name: &name,
        scopes: &scopes,
        created_by: &admin.admin.username,
        expires_in_days,
    };
    let created = db
        .transaction(async |tx| {
            let (token, secret) = match tokens::create(tx, &new).await {
                Err(CreateError::Database(e)) => return Err(e),
                Err(refused) => return Ok(Err(refused.to_string())),
                Ok(created) => created,
            };
            let detail = format!("token {} ({})", token.name, token.scopes);
            audit::record(tx, &actor, Action::ApiTokenCreated, &detail).await?;
            Ok(Ok(secret))
        })
        .await
        .step("make an API token")?;
    match created {
        Ok(secret) => {
            tracing::info!(name = %name, scopes = %scopes, "API token made");
            let shown = Shown {
                created: Some((name.as_str(), &secret)),
                ..Shown::default()
            };
            render(&db, &admin, StatusCode::OK, shown).await
        }
        Err(reason) => {
            let shown = Shown {
                form: Some(&form),
                name_error: Some(reason),
                ..Shown::default()
            };
            render(&db, &admin, StatusCode::UNPROCESSABLE_ENTITY, shown).await
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RevokeTokenForm {}

#[utoipa::path(post, path = "/admin/tokens/{id}/revoke", tag = "admin",
    params(("id" = String, Path, description = "The token's id.")),
    request_body(content = inline(RevokeTokenForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Revoked: to the tokens page.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such token, or it was revoked already.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn revoke_token(
    request: HttpRequest,
    form: Protected<RevokeTokenForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, .. } = form;
    let missing = || Shown {
        revoke_error: Some("No live token has this id: it may have been revoked already.".into()),
        ..Shown::default()
    };
    let Ok(id) = Uuid::try_parse(&id) else {
        return render(&db, &admin, StatusCode::NOT_FOUND, missing()).await;
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let revoked = db
        .transaction(async |tx| {
            let Some(token) = tokens::revoke(tx, id).await? else {
                return Ok(false);
            };
            let detail = format!("token {}", token.name);
            audit::record(tx, &actor, Action::ApiTokenRevoked, &detail).await?;
            Ok(true)
        })
        .await
        .step("revoke an API token")?;
    if revoked {
        tracing::info!(%id, "API token revoked");
        Ok(see_other(REVOKED_PATH))
    } else {
        render(&db, &admin, StatusCode::NOT_FOUND, missing()).await
    }
}
