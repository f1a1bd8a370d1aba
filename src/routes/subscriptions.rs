//! `POST /subscriptions`: a person asks to join the list.
//!
//! The subscriber and their confirmation token are written in one
//! transaction, so there is never a pending subscriber without a way to
//! confirm. The email goes out after the commit: if it fails, the person is
//! told so and can submit again, which issues a fresh token and email.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::confirmation_email::ConfirmationEmail;
use crate::domain::{NewSubscriber, SubscriberEmail, SubscriberName, SubscriptionToken};
use crate::email_client::EmailClient;
use crate::routes::error::{ApiError, DatabaseStep};
use crate::startup::ApplicationBaseUrl;

/// A subscription form is two short fields; anything much larger is not one.
pub const FORM_BODY_LIMIT_BYTES: usize = 4 * 1024;

/// The form as sent. Fields are optional here so that a missing one gets its
/// own message instead of a deserializer error.
#[derive(Deserialize)]
pub struct SubscribeForm {
    name: Option<String>,
    email: Option<String>,
}

impl TryFrom<SubscribeForm> for NewSubscriber {
    type Error = String;

    fn try_from(form: SubscribeForm) -> Result<Self, Self::Error> {
        let name = form.name.ok_or("The name field is missing.")?;
        let email = form.email.ok_or("The email field is missing.")?;
        Ok(NewSubscriber {
            name: SubscriberName::parse(&name)?,
            email: SubscriberEmail::parse(&email)?,
        })
    }
}

/// What the database already knew about the address.
enum Subscriber {
    Pending(Uuid),
    Confirmed,
}

#[tracing::instrument(name = "Subscribe", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn subscribe(
    form: web::Form<SubscribeForm>,
    pool: web::Data<PgPool>,
    email_client: web::Data<EmailClient>,
    base_url: web::Data<ApplicationBaseUrl>,
) -> Result<HttpResponse, ApiError> {
    let new_subscriber =
        NewSubscriber::try_from(form.into_inner()).map_err(ApiError::BadRequest)?;

    let mut transaction = pool.begin().await.step("begin a transaction")?;
    let subscriber_id = match upsert_pending_subscriber(&mut transaction, &new_subscriber)
        .await
        .step("store the subscriber")?
    {
        Subscriber::Pending(id) => id,
        // Already on the list: nothing to confirm, and the answer is the same
        // as for a new address.
        Subscriber::Confirmed => return Ok(HttpResponse::Ok().finish()),
    };
    tracing::Span::current().record("subscriber_id", tracing::field::display(subscriber_id));
    let token = SubscriptionToken::generate();
    store_token(&mut transaction, subscriber_id, &token)
        .await
        .step("store the subscription token")?;
    transaction.commit().await.step("commit the subscription")?;

    let email = ConfirmationEmail::new(&base_url.0, &token);
    email_client
        .send_email(
            &new_subscriber.email,
            email.subject,
            &email.html_body,
            &email.text_body,
        )
        .await
        .map_err(ApiError::ConfirmationEmailNotSent)?;
    Ok(HttpResponse::Ok().finish())
}

/// Inserts a pending subscriber, or finds the one that already has this
/// address. `ON CONFLICT DO NOTHING` makes two concurrent submissions of one
/// address both succeed: the second waits for the first to commit, then
/// reads its row.
#[tracing::instrument(name = "Store the pending subscriber", skip_all)]
async fn upsert_pending_subscriber(
    connection: &mut PgConnection,
    new_subscriber: &NewSubscriber,
) -> Result<Subscriber, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO subscriptions (id, email, name, subscribed_at, status)
        VALUES ($1, $2, $3, $4, 'pending_confirmation')
        ON CONFLICT (email) DO NOTHING
        RETURNING id
        "#,
        Uuid::new_v4(),
        new_subscriber.email.as_ref(),
        new_subscriber.name.as_ref(),
        Utc::now()
    )
    .fetch_optional(&mut *connection)
    .await?;
    if let Some(id) = inserted {
        return Ok(Subscriber::Pending(id));
    }
    let existing = sqlx::query!(
        "SELECT id, status FROM subscriptions WHERE email = $1",
        new_subscriber.email.as_ref()
    )
    .fetch_one(&mut *connection)
    .await?;
    Ok(if existing.status == "confirmed" {
        Subscriber::Confirmed
    } else {
        Subscriber::Pending(existing.id)
    })
}

#[tracing::instrument(name = "Store the subscription token", skip_all)]
async fn store_token(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    token: &SubscriptionToken,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO subscription_tokens (subscription_token, subscriber_id) VALUES ($1, $2)",
        token.as_ref(),
        subscriber_id
    )
    .execute(connection)
    .await?;
    Ok(())
}
