//! The confirmation link: `GET /subscriptions/confirm?subscription_token=...`,
//! and `POST /subscriptions/confirm` for the "Confirm" button.
//!
//! The token is looked up by its hash. An unknown token is refused, an
//! expired one is gone (the person can subscribe again for a new link), and a
//! token that was already used only confirms again what is confirmed, so a
//! second click is harmless. Someone who unsubscribed and signed up again
//! stays unsubscribed until they press the new link's button; their older
//! links were deleted when they unsubscribed, so none of those can bring
//! them back.
//!
//! Mail systems' link scanners open links before people do, so opening a
//! link is no one's act. `GET` shows a page whose button `POST`s the token,
//! and only that `POST` confirms, whenever the address has a past here: it
//! was unsubscribed, confirmed before, suppressed or erased
//! ([`history`]). Anyone can type such an address into the form, and a
//! scanner opening the link must not bring its owner back. A first sign-up's
//! link confirms on `GET` unless `subscriptions.confirm_with_button` is set,
//! in which case every address needs the button.
//!
//! A link confirms the lists it was sent for, and queues the welcome email
//! of each of them that has one, in the same transaction
//! ([`crate::subscribers::welcome::queue_for`]).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use serde::Deserialize;

use crate::db::{Db, Transaction};
use crate::domain::{Newsletter, SubscriptionToken};
use crate::keys::Keys;
use crate::pages::{ConfirmButtonPage, ConfirmationPage, page, wants_html};
use crate::routes::SubscriptionOptions;
use crate::subscribers::confirmation::{TokenRecord, find_token, mark_confirmed};
use crate::subscribers::history;
use crate::subscribers::welcome::Welcomer;
use crate::web::error::{ApiError, DatabaseStep};

#[derive(Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Parameters {
    subscription_token: Option<String>,
}

impl Parameters {
    fn token(self) -> Result<SubscriptionToken, Outcome> {
        let raw = self.subscription_token.ok_or_else(|| {
            Outcome::Malformed("The subscription_token parameter is missing.".into())
        })?;
        SubscriptionToken::parse(&raw).map_err(Outcome::Malformed)
    }
}

/// What a confirmation link turned out to be.
enum Outcome {
    Confirmed,
    AlreadyConfirmed,
    /// Valid, waiting for the person to press "Confirm".
    AwaitingClick(SubscriptionToken),
    NotValid,
    Expired,
    Malformed(String),
}

/// What asked for the confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// The link was opened: a person, or a scanner on their behalf.
    Opened,
    /// The button was pressed: a person.
    Pressed,
}

/// The outcome for a token that cannot (or need not) confirm anything, or
/// `None` when it is valid and unused.
fn settled_outcome(record: &TokenRecord) -> Option<Outcome> {
    if record.used_at.is_some() {
        return Some(if record.subscriber_status == "confirmed" {
            Outcome::AlreadyConfirmed
        } else {
            Outcome::NotValid
        });
    }
    (record.expires_at <= Utc::now()).then_some(Outcome::Expired)
}

#[utoipa::path(
    get,
    path = "/subscriptions/confirm",
    tag = "public",
    params(Parameters),
    responses(
        crate::web::openapi_responses::ConfirmationAnswers,
        crate::web::openapi_responses::Unavailable,
    )
)]
#[tracing::instrument(name = "Open a confirmation link", skip_all)]
pub async fn confirm(
    request: HttpRequest,
    parameters: web::Query<Parameters>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    options: web::Data<SubscriptionOptions>,
    newsletter: web::Data<Newsletter>,
    welcomer: web::Data<Welcomer>,
) -> Result<HttpResponse, ApiError> {
    let outcome = match parameters.into_inner().token() {
        Err(outcome) => outcome,
        Ok(token) if options.confirm_with_button => inspect(&db, token).await?,
        Ok(token) => confirm_token(&db, &keys, &welcomer, &token, Act::Opened).await?,
    };
    respond(outcome, wants_html(&request), &newsletter)
}

#[utoipa::path(post, path = "/subscriptions/confirm", tag = "public",
    request_body(content = inline(Parameters), content_type = "application/x-www-form-urlencoded"),
    responses(
        crate::web::openapi_responses::ConfirmationAnswers,
        crate::web::openapi_responses::FormRefusals, crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Press the confirm button", skip_all)]
pub async fn confirm_with_button(
    request: HttpRequest,
    form: web::Form<Parameters>,
    db: web::Data<Db>,
    keys: web::Data<Keys>,
    newsletter: web::Data<Newsletter>,
    welcomer: web::Data<Welcomer>,
) -> Result<HttpResponse, ApiError> {
    let outcome = match form.into_inner().token() {
        Err(outcome) => outcome,
        Ok(token) => confirm_token(&db, &keys, &welcomer, &token, Act::Pressed).await?,
    };
    respond(outcome, wants_html(&request), &newsletter)
}

/// Looks at a token without using it.
async fn inspect(db: &Db, token: SubscriptionToken) -> Result<Outcome, ApiError> {
    let record = db
        .transaction(async |transaction| find_token(transaction, &token).await)
        .await
        .step("look up the confirmation token")?;
    Ok(match record {
        None => Outcome::NotValid,
        Some(record) => settled_outcome(&record).unwrap_or(Outcome::AwaitingClick(token)),
    })
}

/// Uses a token: confirms its subscriber if it is valid and unused, and
/// `act` is enough for their address.
#[tracing::instrument(name = "Confirm the subscriber", skip_all, fields(subscriber_id = tracing::field::Empty))]
async fn confirm_token(
    db: &Db,
    keys: &Keys,
    welcomer: &Welcomer,
    token: &SubscriptionToken,
    act: Act,
) -> Result<Outcome, ApiError> {
    db.transaction(async |transaction| confirm_in(transaction, keys, welcomer, token, act).await)
        .await
        .step("confirm the subscriber")
}

/// Looks the token up and, if it is valid and unused, marks its subscriber
/// confirmed and the token used; or, for a link opened for an address with
/// a past here, leaves everything as it is and asks for the button. Read in
/// the same transaction as the confirmation, so the answer and the change
/// agree; so are the welcome emails of the lists it confirms.
async fn confirm_in(
    transaction: &mut Transaction<'_>,
    keys: &Keys,
    welcomer: &Welcomer,
    token: &SubscriptionToken,
    act: Act,
) -> Result<Outcome, sqlx::Error> {
    let Some(record) = find_token(transaction, token).await? else {
        return Ok(Outcome::NotValid);
    };
    tracing::Span::current().record(
        "subscriber_id",
        tracing::field::display(record.subscriber_id),
    );
    if let Some(outcome) = settled_outcome(&record) {
        return Ok(outcome);
    }
    if act == Act::Opened
        && history::was_here_before(transaction, keys, record.subscriber_id).await?
    {
        tracing::info!("A returning address: the link asks for the button");
        return Ok(Outcome::AwaitingClick(token.clone()));
    }
    let Some(lists) = mark_confirmed(transaction, record.subscriber_id, token).await? else {
        // Someone else used or deleted the token since it was read (a
        // second click, or the subscriber unsubscribing): say what it is now.
        return Ok(match find_token(transaction, token).await? {
            Some(record) => settled_outcome(&record).unwrap_or(Outcome::NotValid),
            None => Outcome::NotValid,
        });
    };
    let joined: Vec<_> = lists
        .into_iter()
        .map(|list_id| (record.subscriber_id, list_id))
        .collect();
    welcomer.queue_for(transaction, &joined).await?;
    Ok(Outcome::Confirmed)
}

/// A page for browsers, plain text for everyone else. Refusals go through
/// [`ApiError`], which picks their status for both.
fn respond(
    outcome: Outcome,
    html: bool,
    newsletter: &Newsletter,
) -> Result<HttpResponse, ApiError> {
    let (heading, refusal) = match outcome {
        Outcome::AwaitingClick(token) => {
            return Ok(page(
                StatusCode::OK,
                &ConfirmButtonPage {
                    newsletter,
                    token: token.as_ref(),
                },
            ));
        }
        Outcome::Confirmed => {
            return Ok(success(
                html,
                newsletter,
                "Subscription confirmed",
                "Your subscription is confirmed. Thank you!",
            ));
        }
        Outcome::AlreadyConfirmed => {
            return Ok(success(
                html,
                newsletter,
                "Already confirmed",
                "Your subscription is already confirmed.",
            ));
        }
        Outcome::NotValid => (
            "Link not valid",
            ApiError::Unauthorized("This confirmation link is not valid.".into()),
        ),
        Outcome::Expired => (
            "Link expired",
            ApiError::Gone(
                "This confirmation link has expired. Subscribe again to get a new one.".into(),
            ),
        ),
        Outcome::Malformed(reason) => ("Link not valid", ApiError::BadRequest(reason)),
    };
    if !html {
        return Err(refusal);
    }
    let message = refusal.to_string();
    Ok(page(
        refusal.status_code(),
        &ConfirmationPage {
            newsletter,
            heading,
            message: &message,
            offer_to_subscribe: true,
        },
    ))
}

fn success(
    html: bool,
    newsletter: &Newsletter,
    heading: &str,
    message: &'static str,
) -> HttpResponse {
    if html {
        page(
            StatusCode::OK,
            &ConfirmationPage {
                newsletter,
                heading,
                message,
                offer_to_subscribe: false,
            },
        )
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(message)
    }
}
