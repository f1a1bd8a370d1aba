//! `GET /subscriptions/confirm?subscription_token=...`: the link in the
//! confirmation email.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::SubscriptionToken;
use crate::routes::error::{ApiError, DatabaseStep};

#[derive(Deserialize)]
pub struct Parameters {
    subscription_token: Option<String>,
}

#[tracing::instrument(name = "Confirm a pending subscriber", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn confirm(
    parameters: web::Query<Parameters>,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, ApiError> {
    let raw = parameters.into_inner().subscription_token.ok_or_else(|| {
        ApiError::BadRequest("The subscription_token query parameter is missing.".into())
    })?;
    let token = SubscriptionToken::parse(&raw).map_err(ApiError::BadRequest)?;

    let subscriber_id = subscriber_id_from_token(&pool, &token)
        .await
        .step("look up the subscription token")?
        .ok_or_else(|| ApiError::Unauthorized("This confirmation link is not valid.".into()))?;
    tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber_id));
    confirm_subscriber(&pool, subscriber_id)
        .await
        .step("mark the subscriber as confirmed")?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Your subscription is confirmed. Thank you!"))
}

#[tracing::instrument(name = "Look up the subscription token", skip_all)]
async fn subscriber_id_from_token(
    pool: &PgPool,
    token: &SubscriptionToken,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT subscriber_id FROM subscription_tokens WHERE subscription_token = $1",
        token.as_ref()
    )
    .fetch_optional(pool)
    .await
}

#[tracing::instrument(name = "Mark the subscriber as confirmed", skip_all)]
async fn confirm_subscriber(pool: &PgPool, subscriber_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE subscriptions SET status = 'confirmed' WHERE id = $1",
        subscriber_id
    )
    .execute(pool)
    .await?;
    Ok(())
}
