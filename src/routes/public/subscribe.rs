//! `POST /subscriptions`: a person asks to join the list.
//!
//! The request reads as: parse the form, check the limits, store the
//! sign-up, answer. All but the first are [`super::sign_up`]'s, which the
//! "Subscribe again" button after unsubscribing goes through too.
//!
//! The answer is the same whether the address is new, pending or already
//! confirmed, and each case does the same amount of database work, so the
//! form cannot be used to find out who is subscribed.
//!
//! Two defences against using the form to flood someone's inbox keep that
//! same answer: a honeypot field (people never see it, bots fill it in) makes
//! the request a no-op, and past the per-address limit nothing is stored or
//! sent. Every submission counts against its client's per-IP limit, even
//! one refused for its fields; only one that would send email counts
//! against its address.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{NewSubscriber, SubscriberEmail, SubscriberName};
use crate::metrics::Suppressed;
use crate::pages::{ListChoice, SubscribePage, page};
use crate::routes::public::sign_up::SignUpDesk;
use crate::web::error::ApiError;

/// A subscription form is two short fields; anything much larger is not one.
pub const FORM_BODY_LIMIT_BYTES: usize = 4 * 1024;

/// What the confirmation flow needs from the configuration.
#[derive(Debug, Clone)]
pub struct SubscriptionOptions {
    /// Whether a confirmation link asks for a button press before confirming.
    pub confirm_with_button: bool,
}

/// Most lists one sign-up may name.
const MAX_LISTS: usize = 50;

/// The form as sent. Fields are optional here so that a missing one gets its
/// own message instead of a deserializer error.
#[derive(Default, Deserialize, utoipa::ToSchema)]
pub struct SubscribeForm {
    name: Option<String>,
    email: Option<String>,
    /// The honeypot: hidden from people, filled in by bots.
    #[serde(rename = "website")]
    honeypot: Option<String>,
    /// The ids of the lists chosen, one `list` field each; none means the
    /// default list.
    #[serde(default)]
    list: Vec<String>,
    /// Sent by the form when it shows the lists as checkboxes: then
    /// choosing none is a mistake to point out, not a wish for the default.
    lists_offered: Option<String>,
}

impl SubscribeForm {
    /// The form from its fields in the order sent. `list` may come many
    /// times (a checkbox each); any other field, the last time it comes.
    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = Self::default();
        for (key, value) in pairs {
            match key.as_str() {
                "name" => form.name = Some(value),
                "email" => form.email = Some(value),
                "website" => form.honeypot = Some(value),
                "list" => form.list.push(value),
                "lists_offered" => form.lists_offered = Some(value),
                _ => {}
            }
        }
        form
    }
}

impl SubscribeForm {
    fn is_from_a_bot(&self) -> bool {
        self.honeypot
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty())
    }
}

impl SubscribeForm {
    /// The lists chosen, each once, in the order chosen.
    fn lists(&self) -> Result<Vec<Uuid>, String> {
        if self.list.len() > MAX_LISTS {
            return Err(format!("At most {MAX_LISTS} lists can be chosen at once."));
        }
        let mut lists: Vec<Uuid> = Vec::new();
        for raw in &self.list {
            let id = Uuid::try_parse(raw.trim())
                .map_err(|_| "One of the lists chosen does not exist.".to_owned())?;
            if !lists.contains(&id) {
                lists.push(id);
            }
        }
        if lists.is_empty() && self.lists_offered.is_some() {
            return Err("Choose at least one list.".to_owned());
        }
        Ok(lists)
    }

    /// Parses the fields, collecting a reason for each one refused, so a
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
        match (name, email, self.lists()) {
            (Ok(name), Ok(email), Ok(lists)) => Ok(NewSubscriber { name, email, lists }),
            (name, email, lists) => Err(FormErrors {
                name: name.err(),
                email: email.err(),
                lists: lists.err(),
            }),
        }
    }
}

/// Why a form was refused, field by field.
#[derive(Debug, Default)]
struct FormErrors {
    name: Option<String>,
    email: Option<String>,
    lists: Option<String>,
}

impl std::fmt::Display for FormErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<&str> = [&self.name, &self.email, &self.lists]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        f.write_str(&reasons.join(" "))
    }
}

#[utoipa::path(post, path = "/subscriptions", tag = "public",
    request_body(content = inline(SubscribeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Accepted (whatever became of it): the check-your-inbox page for browsers, an empty text for other clients.", content((String = "text/html"), (String = "text/plain"))),
        (status = 400, description = "A field is missing or invalid: the form again with the reasons for browsers, the reasons for other clients.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::TooManyRequests,
        crate::web::openapi_responses::FormRefusals, crate::web::openapi_responses::Unavailable,
    ))]
#[tracing::instrument(name = "Subscribe", skip_all, fields(subscriber_id = tracing::field::Empty))]
pub async fn subscribe(
    desk: SignUpDesk,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let form = SubscribeForm::from_pairs(form.into_inner());
    let mut parsed = form.parse();
    if let Ok(new_subscriber) = &parsed
        && !desk.lists_are_offered(&new_subscriber.lists).await?
    {
        parsed = Err(FormErrors {
            lists: Some("One of the lists chosen does not exist.".to_owned()),
            ..FormErrors::default()
        });
    }
    let sends_email = match &parsed {
        Ok(new_subscriber) if !form.is_from_a_bot() => Some(&new_subscriber.email),
        _ => None,
    };
    let decision = desk.check_limits(sends_email).await?;
    if form.is_from_a_bot() {
        desk.metrics().signup_suppressed(Suppressed::honeypot);
        tracing::info!("Honeypot field filled in: nothing stored or sent");
        return Ok(desk.accepted());
    }
    let new_subscriber = match parsed {
        Ok(new_subscriber) => new_subscriber,
        Err(errors) if desk.wants_html() => {
            return form_again(&desk, &form, errors).await;
        }
        Err(errors) => return Err(ApiError::BadRequest(errors.to_string())),
    };
    desk.store(decision, new_subscriber).await
}

/// The form again, with what was typed and chosen and the reason next to
/// each refused field.
async fn form_again(
    desk: &SignUpDesk,
    form: &SubscribeForm,
    errors: FormErrors,
) -> Result<HttpResponse, ApiError> {
    let chosen: Vec<Uuid> = form
        .list
        .iter()
        .filter_map(|raw| Uuid::try_parse(raw.trim()).ok())
        .collect();
    let page_again = SubscribePage {
        newsletter: desk.newsletter(),
        name: form.name.as_deref().unwrap_or_default(),
        email: form.email.as_deref().unwrap_or_default(),
        name_error: errors.name,
        email_error: errors.email,
        lists: ListChoice::offered(desk.offered_lists().await, Some(&chosen)),
        lists_error: errors.lists,
    };
    Ok(page(StatusCode::BAD_REQUEST, &page_again))
}
