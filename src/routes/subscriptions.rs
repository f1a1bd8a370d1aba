//! `POST /subscriptions`: a person asks to join the list.
//!
//! One transaction stores the subscriber (or finds the one with this address,
//! compared case-insensitively), a confirmation token, and the email to send
//! in the outbox. Once it commits the email will go out, whatever the email
//! API is doing right now; the answer does not wait for it. The email is
//! handed to a delivery task in this process, or else the doorbell wakes a
//! delivery worker.
//!
//! The answer is the same whether the address is new, pending or already
//! confirmed, and each case does the same amount of database work, so the
//! form cannot be used to find out who is subscribed. A confirmed address
//! gets a short "already subscribed" notice instead of a confirmation.
//!
//! Two defences against using the form to flood someone's inbox keep that
//! same answer: a honeypot field (people never see it, bots fill it in) makes
//! the request a no-op, and past the per-address limit nothing is stored or
//! sent. The per-IP limit is checked here too, in the same round trip to
//! Redis as the per-address one; an over-limit client gets 429.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::connections::Connections;
use crate::domain::{NewSubscriber, SubscriberEmail, SubscriberName, SubscriptionToken};
use crate::emails::{self, EmailContent};
use crate::outbox::{self, Handoff, OutgoingEmail};
use crate::pages::{CheckInboxPage, SubscribePage, page, wants_html};
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::routes::error::{ApiError, DatabaseStep};
use crate::startup::ApplicationBaseUrl;

/// A subscription form is two short fields; anything much larger is not one.
pub const FORM_BODY_LIMIT_BYTES: usize = 4 * 1024;

/// What the subscribe flow needs from the configuration.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    pub token_lifetime: chrono::Duration,
    /// Message stream for confirmations and notices.
    pub message_stream: String,
    /// Whether a confirmation link asks for a button press before confirming.
    pub confirm_with_button: bool,
}

/// The form as sent. Fields are optional here so that a missing one gets its
/// own message instead of a deserializer error.
#[derive(Deserialize)]
pub struct SubscribeForm {
    name: Option<String>,
    email: Option<String>,
    /// The honeypot: hidden from people, filled in by bots.
    #[serde(rename = "website")]
    honeypot: Option<String>,
}

impl SubscribeForm {
    fn is_from_a_bot(&self) -> bool {
        self.honeypot
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty())
    }
}

impl SubscribeForm {
    /// Parses both fields, collecting a reason for each one refused, so a
    /// person sees every problem at once.
    fn parse(&self) -> Result<NewSubscriber, FormErrors> {
        let name = match &self.name {
            Some(raw) => SubscriberName::parse(raw),
            None => Err("The name field is missing.".to_owned()),
        };
        let email = match &self.email {
            Some(raw) => SubscriberEmail::parse(raw),
            None => Err("The email field is missing.".to_owned()),
        };
        match (name, email) {
            (Ok(name), Ok(email)) => Ok(NewSubscriber { name, email }),
            (name, email) => Err(FormErrors {
                name: name.err(),
                email: email.err(),
            }),
        }
    }
}

/// Why a form was refused, field by field.
#[derive(Debug)]
struct FormErrors {
    name: Option<String>,
    email: Option<String>,
}

impl std::fmt::Display for FormErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<&str> = [&self.name, &self.email]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        f.write_str(&reasons.join(" "))
    }
}

/// What the database already knew about the address.
enum Subscriber {
    Pending(Uuid),
    Confirmed,
}

#[tracing::instrument(name = "Subscribe", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn subscribe(
    request: HttpRequest,
    form: web::Form<SubscribeForm>,
    connections: web::Data<Connections>,
    base_url: web::Data<ApplicationBaseUrl>,
    options: web::Data<SubscriptionOptions>,
    limiter: web::Data<RateLimiter>,
    handoff: web::Data<Handoff>,
) -> Result<HttpResponse, ApiError> {
    let html = wants_html(&request);
    let form = form.into_inner();
    let client = request
        .peer_addr()
        .map(|peer| limiter.client_ip().resolve(peer.ip(), request.headers()));
    let parsed = form.parse();
    // Only a submission that would send email is checked against its
    // address; every submission counts against its client.
    let email = match &parsed {
        Ok(new_subscriber) if !form.is_from_a_bot() => Some(&new_subscriber.email),
        _ => None,
    };
    let decision = limiter.check_subscription(client, email).await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(ApiError::TooManyRequests(retry_after));
    }
    if form.is_from_a_bot() {
        tracing::info!("Honeypot field filled in: nothing stored or sent");
        return Ok(accepted(html));
    }
    let new_subscriber = match parsed {
        Ok(new_subscriber) => new_subscriber,
        Err(errors) if html => {
            let form_again = SubscribePage {
                name: form.name.as_deref().unwrap_or_default(),
                email: form.email.as_deref().unwrap_or_default(),
                name_error: errors.name,
                email_error: errors.email,
            };
            return Ok(page(StatusCode::BAD_REQUEST, &form_again));
        }
        Err(errors) => return Err(ApiError::BadRequest(errors.to_string())),
    };
    if decision == SubscriptionDecision::AddressLimited {
        let suppressed_total = limiter.count_suppressed_email();
        tracing::warn!(
            suppressed_total,
            "Per-address email limit reached: nothing stored or sent"
        );
        return Ok(accepted(html));
    }

    let slot = handoff.reserve();
    let mut connection = connections.acquire().await.step("get a connection")?;
    let mut transaction = connection.begin().await.step("begin a transaction")?;
    let content = match upsert_pending_subscriber(&mut transaction, &new_subscriber)
        .await
        .step("store the subscriber")?
    {
        Subscriber::Pending(subscriber_id) => {
            tracing::Span::current()
                .record("subscriber_id", tracing::field::display(subscriber_id));
            let token = SubscriptionToken::generate();
            let expires_at = Utc::now() + options.token_lifetime;
            store_token(&mut transaction, subscriber_id, &token, expires_at)
                .await
                .step("store the confirmation token")?;
            emails::confirmation(&base_url.0, &new_subscriber.name, &token)
        }
        Subscriber::Confirmed => emails::already_subscribed(&base_url.0, &new_subscriber.name),
    };
    let email = outgoing(new_subscriber.email, content, &options);
    let outbox_id = outbox::enqueue(&mut transaction, &email, slot.claim())
        .await
        .step("enqueue the email")?;
    transaction.commit().await.step("commit the subscription")?;
    connection.give_back();
    slot.committed(outbox_id, email);
    Ok(accepted(html))
}

/// The answer to every accepted submission, whatever became of it.
fn accepted(html: bool) -> HttpResponse {
    if html {
        page(StatusCode::OK, &CheckInboxPage)
    } else {
        HttpResponse::Ok().finish()
    }
}

fn outgoing(
    recipient: SubscriberEmail,
    content: EmailContent,
    options: &SubscriptionOptions,
) -> OutgoingEmail {
    OutgoingEmail {
        recipient,
        subject: content.subject.to_owned(),
        html_body: content.html_body,
        text_body: content.text_body,
        message_stream: options.message_stream.clone(),
    }
}

/// Inserts a pending subscriber, or finds the one that already has this
/// address in any letter case. `ON CONFLICT DO NOTHING` without a target
/// covers every unique index, whichever the schema step has (the address as
/// typed, its lower-case form, or both), so concurrent submissions of one
/// address all succeed: each waits for the first to commit, then reads its
/// row.
#[tracing::instrument(name = "Store the pending subscriber", level = "debug", skip_all)]
async fn upsert_pending_subscriber(
    connection: &mut PgConnection,
    new_subscriber: &NewSubscriber,
) -> Result<Subscriber, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO subscriptions (id, email, name, subscribed_at, status)
        VALUES ($1, $2, $3, $4, 'pending_confirmation')
        ON CONFLICT DO NOTHING
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
        "SELECT id, status FROM subscriptions WHERE lower(email) = lower($1)",
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

/// Stores the token's hash, never the token: a copy of the database cannot
/// confirm anyone.
#[tracing::instrument(name = "Store the confirmation token", level = "debug", skip_all)]
async fn store_token(
    connection: &mut PgConnection,
    subscriber_id: Uuid,
    token: &SubscriptionToken,
    expires_at: chrono::DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at)
        VALUES ($1, $2, $3)
        "#,
        token.hash(),
        subscriber_id,
        expires_at
    )
    .execute(connection)
    .await?;
    Ok(())
}
