//! `POST /api/v1/subscribers` (write): signs a reader up through the
//! form's own path, double opt-in: they are on no list until they confirm
//! by email. With `consent_source`, the token's owner attests the reader's
//! consent, and they are added confirmed at once, as an attested import
//! adds them.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::audit;
use crate::admin::audit::Action;
use crate::api::body::Fields;
use crate::api::guard::ApiToken;
use crate::api::problem::Problem;
use crate::api::tokens::Scope;
use crate::db::Db;
use crate::domain::{ConsentSource, NewSubscriber, SubscriberEmail, SubscriberName};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimiter, SubscriptionDecision};
use crate::signups::Signups;
use crate::subscribers::lists;
use crate::subscribers::sign_ups::{self, Attested};
use crate::subscribers::welcome::Welcomer;
use crate::web::error::DatabaseStep;

use super::{SubscriberDetail, missing, read_detail, subscriber_path};

/// A sign-up. `email` and `name` are required.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"email": "ursula@example.com", "name": "Ursula", "lists": []}))]
#[allow(dead_code)] // Read field by field ([`Fields`]), documented as a whole.
pub struct NewSignUp {
    /// The reader's address.
    #[schema(format = Email)]
    email: String,
    /// The reader's name, 1 to 256 characters.
    #[schema(min_length = 1, max_length = 256)]
    name: String,
    /// The ids of public, live lists to join, at most 50; none for the
    /// default list.
    #[schema(max_items = 50)]
    lists: Option<Vec<Uuid>>,
    /// Where the reader's consent came from, as the token's owner attests
    /// it ("signed up at our stand, 2027-01-14"), 1 to 500 characters.
    /// With it, the reader is added confirmed at once, on any live lists
    /// named (private ones too), with no confirmation email, as an
    /// attested import adds them; the attestation is kept in the audit
    /// log. Without it, the form's double opt-in.
    #[schema(min_length = 1, max_length = 500)]
    consent_source: Option<String>,
}

/// What became of a sign-up.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignUpAccepted {
    /// The pending subscriber a confirmation email was sent to; null when
    /// the address was confirmed already (it gets a notice instead), is on
    /// the suppression list, or has had its share of email for now.
    pub subscriber_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/subscribers", tag = "api",
    security(("bearer" = [])),
    request_body(content = NewSignUp, content_type = "application/json"),
    responses(
        (status = 201, description = "With `consent_source`: added, confirmed, on the lists named.", body = SubscriberDetail, content_type = "application/json",
         headers(("Location" = String, description = "The subscriber's address in the API."))),
        (status = 202, description = "Accepted: the reader is asked to confirm by email, as from the form.", body = SignUpAccepted, content_type = "application/json",
         headers(("Location" = String, description = "The pending subscriber's address in the API, when `subscriber_id` is not null."))),
        crate::api::openapi::WriteRefusals,
    ))]
pub async fn create_subscriber(
    request: HttpRequest,
    token: ApiToken,
    body: web::Bytes,
    db: web::Data<Db>,
    signups: web::Data<Signups>,
    limiter: web::Data<RateLimiter>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, Problem> {
    token.require(Scope::Write)?;
    let (new_subscriber, consent) = parse_sign_up(&body)?;
    if let Some(consent) = consent {
        return create_attested(&request, &token, &db, &limiter, new_subscriber, consent).await;
    }
    if !new_subscriber.lists.is_empty() {
        let offered = db
            .transaction(async |tx| lists::offered_among(tx, &new_subscriber.lists).await)
            .await
            .step("look up the lists chosen")?;
        if offered.len() != new_subscriber.lists.len() {
            return Err(Problem::invalid(
                "lists",
                "One of the lists is not a public, live list.",
            ));
        }
    }
    let actor = token.actor(&request);
    // The same budget as the form's for the address: a token must not be
    // a way to flood an inbox either. The token's sign-up budget stands in
    // for the form's per-IP one, and bounds what a leaked token can send.
    let decision = limiter
        .check_api_signup(token.token().id, &new_subscriber.email)
        .await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(Problem::TooManyRequests(retry_after));
    }
    let subscriber_id = signups
        .store_within_limit(&limiter, &metrics, decision, new_subscriber)
        .await
        .step("store the sign-up")?
        .and_then(|stored| stored.subscriber_id);
    // The log outlives the reader: it names them by id, never by address.
    // Written after the sign-up's commit, not in it: sign-ups commit in
    // batches shared with the form's (`crate::signups`), a transaction this
    // request does not own, and an address over its limit or suppressed
    // commits nothing at all, yet the token's call is still recorded.
    let detail = match subscriber_id {
        Some(id) => format!("sign-up of subscriber {id}, asked to confirm"),
        None => "sign-up with no confirmation sent".to_owned(),
    };
    crate::admin::actor::record(&db, &actor, Action::ApiWrite, &detail).await?;
    let mut answer = HttpResponse::Accepted();
    if let Some(id) = subscriber_id {
        answer.insert_header(("Location", subscriber_path(id)));
    }
    Ok(answer.json(SignUpAccepted { subscriber_id }))
}

/// Adds a confirmed subscriber on the token's attestation of their
/// consent ([`sign_ups::add_attested`]), with their lists' welcomes, and
/// the attestation in the audit log, in one transaction. The token's
/// sign-up budget bounds how many welcomes a leaked token can send.
async fn create_attested(
    request: &HttpRequest,
    token: &ApiToken,
    db: &Db,
    limiter: &RateLimiter,
    new_subscriber: NewSubscriber,
    consent: ConsentSource,
) -> Result<HttpResponse, Problem> {
    let decision = limiter
        .check_api_signup(token.token().id, &new_subscriber.email)
        .await;
    if let SubscriptionDecision::IpLimited { retry_after } = decision {
        return Err(Problem::TooManyRequests(retry_after));
    }
    let keys = request
        .app_data::<web::Data<Keys>>()
        .expect("the keys are registered as app data");
    let welcomer = request
        .app_data::<web::Data<Welcomer>>()
        .expect("the welcomer is registered as app data");
    let actor = token.actor(request);
    let added = db
        .transaction(async |tx| {
            let lists = &new_subscriber.lists;
            if !lists.is_empty() && lists::live_among(tx, lists).await?.len() != lists.len() {
                let reason = "One of the lists does not exist or is archived.";
                return Ok(Err(Problem::invalid("lists", reason)));
            }
            let (id, joined) = match sign_ups::add_attested(tx, keys, &new_subscriber).await? {
                Attested::Added { id, joined } => (id, joined),
                Attested::Refused(reason) => return Ok(Err(Problem::invalid("email", reason))),
            };
            let welcomes: Vec<(Uuid, Uuid)> = joined.iter().map(|&list| (id, list)).collect();
            welcomer.queue_for(tx, &welcomes).await?;
            // By id, never by address: the log outlives the reader.
            let detail = format!(
                "subscriber {id} added confirmed on {} lists, consent attested: {}",
                joined.len(),
                consent.as_ref()
            );
            audit::record(tx, &actor, Action::ApiWrite, &detail).await?;
            Ok(Ok(read_detail(tx, id).await?))
        })
        .await
        .step("add an attested subscriber")??
        .ok_or_else(missing)?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", subscriber_path(added.subscriber.id)))
        .json(added))
}

fn parse_sign_up(body: &[u8]) -> Result<(NewSubscriber, Option<ConsentSource>), Problem> {
    let mut fields = Fields::parse(body)?;
    let email = fields
        .required_string("email")
        .and_then(|raw| fields.parsed("email", SubscriberEmail::parse(&raw)));
    let name = fields
        .required_string("name")
        .and_then(|raw| fields.parsed("name", SubscriberName::parse(&raw)));
    let lists = fields.list_ids("lists");
    let consent = fields
        .string("consent_source")
        .and_then(|raw| fields.parsed("consent_source", ConsentSource::parse(&raw)));
    fields.finish()?;
    let new_subscriber = NewSubscriber {
        email: email.expect("refused when absent"),
        name: name.expect("refused when absent"),
        lists,
    };
    Ok((new_subscriber, consent))
}
