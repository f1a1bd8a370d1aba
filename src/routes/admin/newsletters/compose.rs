//! `GET /admin/newsletters/new`: the form an issue is written in;
//! `POST /admin/newsletters`: what its three buttons do with it. Preview
//! shows the email as a recipient gets it; test sends it to the admin's own
//! address; publish stores it for every confirmed subscriber.
//!
//! Each form carries a key made when it was first shown, and kept through
//! previews and test sends: publishing twice with it (a double click, a
//! retry after a timeout, two tabs) publishes once, and the second answer
//! points to the same issue.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::PublishSettings;
use super::pages::{ComposeFields, ComposePage, Preview, Refusal};
use super::view::issue_path;
use crate::admin::audit::{self, Action};
use crate::campaigns::ledger::{self, IdempotencyKey, NewIssue, PublishError, Published};
use crate::campaigns::wake_senders_after_commit;
use crate::db::Db;
use crate::domain::SubscriberEmail;
use crate::emails::{Email, EmailContent};
use crate::newsletters::{Draft, RECIPIENT_NAME, UNSUBSCRIBE_URL, render};
use crate::outbox::{Outbox, Personalisation, personalise};
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::routes::ApiError;
use crate::routes::admin::account::nav;
use crate::routes::admin::guard::{Protected, SignedIn, no_store};
use crate::routes::admin::login::{actor_for, client_ip};
use crate::routes::error::DatabaseStep;

/// The compose form's body limit. Browsers percent-encode every byte of a
/// non-ASCII character as three, so the longest content a draft accepts
/// can take three times its length on the wire; the rest is room for the
/// title and the other fields. Larger bodies are refused with 413 before
/// they are read whole.
pub const COMPOSE_BODY_LIMIT_BYTES: usize = 3 * Draft::MAX_CONTENT_BYTES + 16 * 1024;

/// The name previews and test sends greet the reader with.
const EXAMPLE_NAME: &str = "Ada Lovelace";

/// The compose resource's own extractor settings: the app-wide limit is
/// sized for the public forms.
pub fn compose_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(COMPOSE_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

#[utoipa::path(get, path = "/admin/newsletters/new", tag = "admin",
    responses((status = 200, description = "The form to write an issue.", body = String, content_type = "text/html"), crate::routes::openapi::AdminOnly))]
pub async fn compose_page(admin: SignedIn) -> HttpResponse {
    let fields = ComposeFields {
        title: "",
        content: "",
        send_at: "",
        idempotency_key: fresh_key(),
    };
    compose_form(&admin, StatusCode::OK, fields, None, None)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ComposeForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    send_at: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    action: String,
}

/// Which button was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Preview,
    Test,
    Publish,
}

impl Step {
    fn parse(action: &str) -> Result<Self, String> {
        match action {
            "preview" => Ok(Step::Preview),
            "test" => Ok(Step::Test),
            "publish" => Ok(Step::Publish),
            other => Err(format!(
                "`{other}` is not something this form does: press Preview, Send a test or Publish."
            )),
        }
    }
}

#[utoipa::path(post, path = "/admin/newsletters", tag = "admin",
    request_body(content = inline(ComposeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A preview, or a test sent: the form again.", body = String, content_type = "text/html"),
        (status = 303, description = "Published: to the issue's page.", headers(("Location" = String))),
        (status = 400, description = "An unknown action, send time or form key: the form again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "A title or content refused, or a form that already published other text: the form again.", body = String, content_type = "text/html"),
        crate::routes::openapi::AdminForm,
    ))]
pub async fn submit_issue(
    request: HttpRequest,
    form: Protected<ComposeForm>,
    db: web::Data<Db>,
    outbox: web::Data<Outbox>,
    settings: web::Data<PublishSettings>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form } = form;
    // A malformed key is only refused when publishing: the other buttons
    // show the form again, and then with a good one.
    let key = IdempotencyKey::parse(&form.idempotency_key);
    let fields = ComposeFields {
        title: &form.title,
        content: &form.content,
        send_at: &form.send_at,
        idempotency_key: key
            .as_ref()
            .map_or_else(|_| fresh_key(), |key| key.as_str().to_owned()),
    };
    let refuse = |fields, status, field, reason: String| {
        let refusal = Refusal { field, reason };
        Ok(compose_form(&admin, status, fields, Some(refusal), None))
    };
    let step = match Step::parse(&form.action) {
        Ok(step) => step,
        Err(reason) => return refuse(fields, StatusCode::BAD_REQUEST, None, reason),
    };
    let draft = match Draft::parse(&form.title, &form.content) {
        Ok(draft) => draft,
        Err(e) => {
            let field = Some(e.field().name());
            return refuse(
                fields,
                StatusCode::UNPROCESSABLE_ENTITY,
                field,
                e.to_string(),
            );
        }
    };
    let send_at = match parse_send_at(&form.send_at) {
        Ok(send_at) => send_at,
        Err(reason) => {
            return refuse(fields, StatusCode::BAD_REQUEST, Some("send_at"), reason);
        }
    };
    let rendered = render(&admin.newsletter, &draft);
    match step {
        Step::Preview => Ok(preview(&admin, fields, &rendered, &settings)),
        Step::Test => send_test(&admin, fields, &rendered, &db, &outbox, &settings).await,
        Step::Publish => {
            let key = match key {
                Ok(key) => key,
                Err(reason) => return refuse(fields, StatusCode::BAD_REQUEST, None, reason),
            };
            let issue = Submitted {
                draft: &draft,
                rendered: &rendered,
                send_at,
            };
            let ip = client_ip(&request, &limiter);
            publish(&admin, fields, &db, &settings, &key, issue, ip).await
        }
    }
}

/// The form, with what was typed, and maybe a refusal, a notice or a preview.
fn compose_form(
    admin: &SignedIn,
    status: StatusCode,
    fields: ComposeFields<'_>,
    refusal: Option<Refusal>,
    preview: Option<Preview>,
) -> HttpResponse {
    compose_form_with_notice(admin, status, fields, refusal, None, preview)
}

fn compose_form_with_notice(
    admin: &SignedIn,
    status: StatusCode,
    fields: ComposeFields<'_>,
    refusal: Option<Refusal>,
    notice: Option<String>,
    preview: Option<Preview>,
) -> HttpResponse {
    page(
        status,
        &ComposePage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            fields,
            refusal,
            notice,
            preview,
        },
    )
}

/// A key for a form shown for the first time.
fn fresh_key() -> String {
    Uuid::new_v4().to_string()
}

/// `send_at` as a `datetime-local` field sends it (`2026-12-24T09:30`,
/// seconds optional), read as UTC; empty means now, and so does a moment
/// already past (the ledger sends those at once).
fn parse_send_at(raw: &str) -> Result<Option<DateTime<Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let unreadable = || {
        format!(
            "“{raw}” is not a date and time the form understands: \
             use YYYY-MM-DDTHH:MM, in UTC, or leave it empty to send now."
        )
    };
    let local = NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S"))
        .map_err(|_| unreadable())?;
    // Postgres stores years far beyond this, but no issue waits 8,000
    // years, and a year that long is a typing slip.
    if local.year() > 9999 {
        return Err(unreadable());
    }
    Ok(Some(local.and_utc()))
}

/// The values previews and test sends fill the placeholders with. The
/// link has the shape of a real one, but names nobody: opened, it says so.
fn example_values(settings: &PublishSettings) -> Personalisation {
    Personalisation::from([
        (RECIPIENT_NAME.to_owned(), EXAMPLE_NAME.to_owned()),
        (
            UNSUBSCRIBE_URL.to_owned(),
            format!(
                "{}/unsubscribe/example",
                settings.base_url.trim_end_matches('/')
            ),
        ),
    ])
}

/// The rendered email filled in as it would be for a subscriber named
/// [`EXAMPLE_NAME`], and the form again to go on from.
fn preview(
    admin: &SignedIn,
    fields: ComposeFields<'_>,
    rendered: &EmailContent,
    settings: &PublishSettings,
) -> HttpResponse {
    let email = personalise(rendered, &example_values(settings));
    let preview = Preview {
        subject: email.subject,
        html: email.html_body,
        text: email.text_body,
    };
    let mut answer = compose_form(admin, StatusCode::OK, fields, None, Some(preview));
    // The frame's document inherits this page's policy: images in the
    // issue load from the web for the reader, and so they do here. Nothing
    // in the frame can run (it is sandboxed without scripts).
    answer.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src http: https:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    answer
}

/// Queues the email, filled in as the preview shows it, to the admin's own
/// address on the stream issues go out on.
#[tracing::instrument(name = "Send a test of an issue", skip_all)]
async fn send_test(
    admin: &SignedIn,
    fields: ComposeFields<'_>,
    rendered: &EmailContent,
    db: &Db,
    outbox: &Outbox,
    settings: &PublishSettings,
) -> Result<HttpResponse, ApiError> {
    let address = admin.admin.email.as_deref().unwrap_or_default();
    let Ok(to) = SubscriberEmail::parse(address) else {
        let refusal = Refusal {
            field: None,
            reason: "You have no address for test sends yet. Set one under “Your account” \
                     on the dashboard, then send the test again."
                .into(),
        };
        return Ok(compose_form(
            admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            fields,
            Some(refusal),
            None,
        ));
    };
    let email = Email {
        to: to.clone(),
        content: personalise(rendered, &example_values(settings)),
        message_stream: settings.message_stream.clone(),
        delivery: None,
        unsubscribe: None,
    };
    db.transaction(async |tx| outbox.enqueue(tx, vec![email.clone()]).await)
        .await
        .step("queue the test email")?;
    let notice = format!("Test sent to {}.", to.as_ref());
    Ok(compose_form_with_notice(
        admin,
        StatusCode::OK,
        fields,
        None,
        Some(notice),
        None,
    ))
}

/// What the form asks to publish, parsed.
struct Submitted<'a> {
    draft: &'a Draft,
    rendered: &'a EmailContent,
    send_at: Option<DateTime<Utc>>,
}

/// Stores the issue and its audit entry in one transaction, unless the
/// form's key published it already; either way the answer sends the admin
/// to the issue's page.
#[tracing::instrument(name = "Publish an issue", skip_all)]
async fn publish(
    admin: &SignedIn,
    fields: ComposeFields<'_>,
    db: &Db,
    settings: &PublishSettings,
    key: &IdempotencyKey,
    issue: Submitted<'_>,
    ip: Option<std::net::IpAddr>,
) -> Result<HttpResponse, ApiError> {
    let actor = actor_for(&admin.admin, ip);
    let published = db
        .transaction(async |tx| {
            let new = NewIssue {
                title: issue.draft.title(),
                content: issue.draft.content(),
                rendered: issue.rendered,
                message_stream: &settings.message_stream,
                send_at: issue.send_at,
                created_by: admin.admin.id,
            };
            match ledger::publish(tx, key, new).await {
                Ok(published) => {
                    if !published.replayed {
                        wake_senders_after_commit(tx, &settings.senders);
                        let detail = format!("{} ({})", issue.draft.title(), published.issue_id);
                        audit::record(tx, &actor, Action::IssuePublished, &detail).await?;
                    }
                    Ok(Some(published))
                }
                Err(PublishError::KeyReused) => Ok(None),
                Err(PublishError::Sql(e)) => Err(e),
            }
        })
        .await
        .step("publish the issue")?;
    let Some(Published { issue_id, .. }) = published else {
        // The form is shown with a new key: publishing what it holds now
        // is a second issue, and takes a deliberate press.
        let fields = ComposeFields {
            idempotency_key: fresh_key(),
            ..fields
        };
        let refusal = Refusal {
            field: None,
            reason: "This form already published an issue, with other text. Check the \
                     newsletters list before going on: pressing Publish again now publishes \
                     this text as a new issue."
                .into(),
        };
        return Ok(compose_form(
            admin,
            StatusCode::UNPROCESSABLE_ENTITY,
            fields,
            Some(refusal),
            None,
        ));
    };
    let mut answer = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, issue_path(issue_id)))
        .finish();
    no_store(answer.headers_mut());
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_at_is_read_as_utc_with_or_without_seconds_and_empty_is_now() {
        assert_eq!(parse_send_at(""), Ok(None));
        assert_eq!(parse_send_at("  "), Ok(None));
        let at = parse_send_at("2030-01-02T03:04").unwrap().unwrap();
        assert_eq!(at.to_rfc3339(), "2030-01-02T03:04:00+00:00");
        let at = parse_send_at("2030-01-02T03:04:05").unwrap().unwrap();
        assert_eq!(at.to_rfc3339(), "2030-01-02T03:04:05+00:00");
    }

    #[test]
    fn an_unreadable_send_at_is_refused_with_the_format_expected() {
        for raw in [
            "tomorrow",
            "2030-13-01T00:00",
            "2030-01-01",
            "+12345-01-01T00:00",
        ] {
            let reason = parse_send_at(raw).unwrap_err();
            assert!(reason.contains("YYYY-MM-DDTHH:MM"), "{raw}: {reason}");
        }
    }

    #[test]
    fn a_body_limit_fits_the_longest_content_a_draft_takes_percent_encoded() {
        let longest = "é".repeat(Draft::MAX_CONTENT_BYTES / 2);
        let encoded = serde_urlencoded::to_string([
            ("title", "T".repeat(Draft::MAX_TITLE_CHARS)),
            ("content", longest),
            ("send_at", "2030-01-02T03:04".into()),
            ("idempotency_key", fresh_key()),
            ("action", "publish".into()),
            ("csrf_token", "0".repeat(64)),
        ])
        .unwrap();
        assert!(
            encoded.len() <= COMPOSE_BODY_LIMIT_BYTES,
            "{}",
            encoded.len()
        );
    }
}
