//! `GET /subscriptions/confirm?subscription_token=...`: the link in the
//! confirmation email.
//!
//! The token is looked up by its hash. An unknown token is refused, an
//! expired one is gone (the person can subscribe again for a new link), and a
//! token that was already used only confirms again what is confirmed, so a
//! second click is harmless.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::SubscriptionToken;
use crate::routes::error::{ApiError, DatabaseStep};

#[derive(Deserialize)]
pub struct Parameters {
    subscription_token: Option<String>,
}

struct TokenRecord {
    subscriber_id: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    subscriber_status: String,
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

    let mut transaction = pool.begin().await.step("begin a transaction")?;
    let record = find_token(&mut transaction, &token)
        .await
        .step("look up the confirmation token")?
        .ok_or_else(|| ApiError::Unauthorized("This confirmation link is not valid.".into()))?;
    tracing::Span::current().record(
        "subscriber_id",
        tracing::field::display(record.subscriber_id),
    );

    if record.used_at.is_some() {
        return if record.subscriber_status == "confirmed" {
            Ok(confirmed("Your subscription is already confirmed."))
        } else {
            Err(ApiError::Unauthorized(
                "This confirmation link is no longer valid.".into(),
            ))
        };
    }
    if record.expires_at <= Utc::now() {
        return Err(ApiError::Gone(
            "This confirmation link has expired. Subscribe again to get a new one.".into(),
        ));
    }
    confirm_subscriber(&mut transaction, record.subscriber_id, &token)
        .await
        .step("confirm the subscriber")?;
    transaction.commit().await.step("commit the confirmation")?;
    Ok(confirmed("Your subscription is confirmed. Thank you!"))
}

fn confirmed(message: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(message)
}

#[tracing::instrument(name = "Look up the confirmation token", skip_all)]
async fn find_token(
    connection: &mut PgConnection,
    token: &SubscriptionToken,
) -> Result<Option<TokenRecord>, sqlx::Error> {
    sqlx::query_as!(
        TokenRecord,
        r#"
        SELECT t.subscriber_id, t.expires_at, t.used_at, s.status AS subscriber_status
        FROM confirmation_tokens t
        JOIN subscriptions s ON s.id = t.subscriber_id
        WHERE t.token_hash = $1
        "#,
        token.hash()
    )
    .fetch_optional(connection)
    .await
}

/// Marks the subscriber confirmed (keeping the first confirmation time as
/// consent evidence) and the token used.
#[tracing::instrument(name = "Mark the subscriber as confirmed", skip_all)]
async fn confirm_subscriber(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    token: &SubscriptionToken,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE subscriptions
        SET status = 'confirmed', confirmed_at = COALESCE(confirmed_at, now())
        WHERE id = $1
        "#,
        subscriber_id
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "UPDATE confirmation_tokens SET used_at = now() WHERE token_hash = $1",
        token.hash()
    )
    .execute(connection)
    .await?;
    Ok(())
}
