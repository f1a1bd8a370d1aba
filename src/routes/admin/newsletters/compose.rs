//! `GET /admin/newsletters/new`: the form an issue is written in;
//! `POST /admin/newsletters`: what its buttons do with it. Preview shows
//! the email as a recipient gets it; test sends it to the admin's own
//! address; publish stores it for every confirmed subscriber; save keeps
//! it as a draft, whose page ([`super::drafts`]) is this form again, sent
//! to the draft's address.
//!
//! Publishing asks first, naming how many it sends to ("Send to 1,204
//! subscribers?"): the page's script in a dialog, which adds
//! `confirmed=yes` to the form when the answer is yes; without scripts, a
//! page of its own whose button publishes (and another goes back to the
//! form, with what was typed). A publish without `confirmed=yes` only asks.
//! The count is a convenience: every answer that shows the form or the
//! question counts, within a short limit, and when the database cannot
//! count in time the question asks without a number ("Send to every
//! confirmed subscriber?") and the answer keeps its own status.
//!
//! Each form carries a key made when it was first shown, and kept through
//! previews and test sends: publishing twice with it (a double click, a
//! retry after a timeout, two tabs) publishes once, and the second answer
//! points to the same issue.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::PublishSettings;
use super::drafts::{self as draft_page, Edit};
use super::form::{
    Targets, audience_size, compose_form, compose_form_with_notice, fresh_key, key_reused,
};
use super::pages::{ComposeFields, FormTarget, Preview, PublishConfirmPage, Refusal};
use super::view::{audience_text, issue_path, parse_issue_id, publish_question};
use crate::admin::actor::actor_for;
use crate::admin::audit::Actor;
use crate::admin::guard::{Protected, SignedIn, parse_fields};
use crate::admin::pages::layout::nav;
use crate::campaigns::drafts::DraftFields;
use crate::campaigns::ledger::{IdempotencyKey, KeyOwner, Published};
use crate::campaigns::publishing::{self, KeyReused, Submission, example_email};
use crate::db::Db;
use crate::domain::SubscriberEmail;
use crate::emails::{Email, EmailContent};
use crate::newsletters::{Draft, render};
use crate::outbox::Outbox;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::ApiError;
use crate::web::error::DatabaseStep;

/// The compose form's body limit. Browsers percent-encode every byte of a
/// non-ASCII character as three, so the longest content a draft accepts
/// can take three times its length on the wire; the rest is room for the
/// title and the other fields. Larger bodies are refused with 413 before
/// they are read whole.
pub const COMPOSE_BODY_LIMIT_BYTES: usize = 3 * Draft::MAX_CONTENT_BYTES + 16 * 1024;

/// What a test send's subject starts with, so that it is not taken for
/// the issue itself in the inbox it lands in.
const TEST_SUBJECT_PREFIX: &str = "[Test] ";

/// The compose resource's own extractor settings: the app-wide limit is
/// sized for the public forms.
pub fn compose_form_config() -> web::FormConfig {
    web::FormConfig::default()
        .limit(COMPOSE_BODY_LIMIT_BYTES)
        .error_handler(|e, _| ApiError::from(e).into())
}

#[utoipa::path(get, path = "/admin/newsletters/new", tag = "admin",
    responses((status = 200, description = "The form to write an issue.", body = String, content_type = "text/html"), crate::web::openapi_responses::AdminOnly))]
pub async fn compose_page(admin: SignedIn, db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    let targets = Targets::read(&db, None, None).await?;
    let fields = ComposeFields {
        target: FormTarget::New,
        title: "",
        content: "",
        send_at: "",
        idempotency_key: fresh_key(),
        audience: targets.audience(),
        lists: targets.choices,
        segments: targets.segments,
        public: false,
    };
    compose_form(&admin, &db, StatusCode::OK, fields, None, None).await
}

/// The form's fields besides `list`, which comes once per list ticked and
/// is read from the pairs as they are.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ComposeForm {
    /// Sent by the form when it shows the lists: then ticking none is a
    /// mistake, not a wish for every confirmed subscriber.
    #[serde(default)]
    lists_offered: String,
    /// The id of a saved segment that narrows the lists' readers, or empty.
    #[serde(default)]
    segment: String,
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
    /// `yes` once the admin answered the publish question; anything but
    /// empty or `yes` is refused.
    #[serde(default)]
    confirmed: String,
    /// `yes` to put the issue in the public archive as it is published;
    /// anything but empty or `yes` is refused.
    #[serde(default)]
    public: String,
}

/// Which button was pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Show the form again, with the audience of the lists ticked counted.
    Count,
    Preview,
    Test,
    /// Keep the form as a draft: a new one, or the draft whose page it is.
    Save,
    /// Publish, asked for and not yet confirmed: the question, on a page.
    AskToPublish,
    Publish,
    /// Back from the publish question to the form.
    Edit,
}

impl Step {
    fn parse(action: &str, confirmed: &str) -> Result<Self, String> {
        let confirmed = match confirmed {
            "" => false,
            "yes" => true,
            other => {
                return Err(format!(
                    "`{other}` is not an answer this form takes: confirmed is `yes` or empty."
                ));
            }
        };
        match action {
            "count" => Ok(Step::Count),
            "preview" => Ok(Step::Preview),
            "test" => Ok(Step::Test),
            "save" => Ok(Step::Save),
            "publish" if confirmed => Ok(Step::Publish),
            "publish" => Ok(Step::AskToPublish),
            "edit" => Ok(Step::Edit),
            other => Err(format!(
                "`{other}` is not something this form does: press Save draft, Preview, Send a test \
                 or Publish."
            )),
        }
    }
}

#[utoipa::path(post, path = "/admin/newsletters", tag = "admin",
    request_body(content = inline(ComposeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A preview, a test sent, or back from the publish question: the form again. A publish not yet confirmed: the question, naming how many it sends to.", body = String, content_type = "text/html"),
        (status = 303, description = "Published: to the issue's page. Saved as a draft: to the draft's page.", headers(("Location" = String))),
        (status = 400, description = "An unknown action or answer, send time or form key: the form again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 422, description = "A title or content refused, lists or a segment that cannot be used, or a form that already published other text: the form again.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn submit_issue(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    db: web::Data<Db>,
    outbox: web::Data<Outbox>,
    settings: web::Data<PublishSettings>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    submit(
        request,
        form,
        FormTarget::New,
        db,
        outbox,
        settings,
        limiter,
    )
    .await
}

/// `POST /admin/newsletters/drafts/{id}`: the compose form's buttons, on a
/// draft.
#[utoipa::path(post, path = "/admin/newsletters/drafts/{id}", tag = "admin",
    params(("id" = String, Path, description = "The draft's id.")),
    request_body(content = inline(ComposeForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A preview, a test sent, or back from the publish question: the form again. A publish not yet confirmed: the question, naming how many it sends to.", body = String, content_type = "text/html"),
        (status = 303, description = "Saved: to the draft's page. Published: to the issue's page, which has the draft's id.", headers(("Location" = String))),
        (status = 400, description = "An unknown action or answer, send time or form key: the form again; or a form that cannot be read.", content((String = "text/html"), (String = "text/plain"))),
        (status = 404, description = "No such draft; or it was deleted meanwhile: the form again, as a new issue's, with what was typed.", content((String = "text/html"), (String = "text/plain"))),
        (status = 409, description = "The draft was published meanwhile: the form again, as a new issue's, with what was typed and a link to the issue.", body = String, content_type = "text/html"),
        (status = 422, description = "A title or content refused, lists or a segment that cannot be used, or a form that already published something else: the form again.", body = String, content_type = "text/html"),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn submit_draft(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    id: web::Path<String>,
    db: web::Data<Db>,
    outbox: web::Data<Outbox>,
    settings: web::Data<PublishSettings>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_issue_id(&id) else {
        return Ok(draft_page::missing(&form.admin));
    };
    let target = FormTarget::Draft(id);
    submit(request, form, target, db, outbox, settings, limiter).await
}

/// What the form's buttons do, sent to `target`: the new issue's address
/// or a draft's.
pub(super) async fn submit(
    request: HttpRequest,
    form: Protected<Vec<(String, String)>>,
    target: FormTarget,
    db: web::Data<Db>,
    outbox: web::Data<Outbox>,
    settings: web::Data<PublishSettings>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let Protected { admin, form: pairs } = form;
    // `list` comes once per list ticked, which the struct cannot hold.
    let (list_pairs, other_pairs): (Vec<_>, Vec<_>) =
        pairs.into_iter().partition(|(key, _)| key == "list");
    let form: ComposeForm = parse_fields(&other_pairs)?;
    let chosen = match chosen_lists(&list_pairs, !form.lists_offered.is_empty()) {
        Ok(chosen) => chosen,
        Err(reason) => return Err(ApiError::BadRequest(reason)),
    };
    let segment_id = match form.segment.trim() {
        "" => None,
        raw => Some(Uuid::try_parse(raw).map_err(|_| {
            ApiError::BadRequest(format!("“{}” is not a segment's id.", raw.escape_debug()))
        })?),
    };
    let targets = Targets::read(&db, chosen.as_deref(), segment_id).await?;
    // A malformed key is only refused when publishing: the other buttons
    // show the form again, and then with a good one.
    let key = IdempotencyKey::parse(&form.idempotency_key);
    let public = match form.public.as_str() {
        "" => false,
        "yes" => true,
        other => {
            return Err(ApiError::BadRequest(format!(
                "`{}` is not an answer this form takes: public is `yes` or empty.",
                other.escape_debug()
            )));
        }
    };
    let fields = ComposeFields {
        target,
        title: &form.title,
        content: &form.content,
        send_at: &form.send_at,
        idempotency_key: key
            .as_ref()
            .map_or_else(|_| fresh_key(), |key| key.as_str().to_owned()),
        audience: targets.audience(),
        lists: targets.choices.clone(),
        segments: targets.segments.clone(),
        public,
    };
    let admin = &admin;
    let db = &db;
    let refuse = async |fields, status, field, reason: String| {
        let refusal = Refusal { field, reason };
        compose_form(admin, db, status, fields, Some(refusal), None).await
    };
    let step = match Step::parse(&form.action, &form.confirmed) {
        Ok(step) => step,
        Err(reason) => return refuse(fields, StatusCode::BAD_REQUEST, None, reason).await,
    };
    let draft = match Draft::parse(&form.title, &form.content) {
        Ok(draft) => draft,
        Err(e) => {
            let field = Some(e.field().name());
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return refuse(fields, status, field, e.to_string()).await;
        }
    };
    let send_at = match parse_send_at(&form.send_at) {
        Ok(send_at) => send_at,
        Err(reason) => {
            return refuse(fields, StatusCode::BAD_REQUEST, Some("send_at"), reason).await;
        }
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    // What a draft keeps of the form: the lists as ticked, none for none.
    let draft_fields = DraftFields {
        text: &draft,
        list_ids: chosen.as_deref().unwrap_or_default(),
        segment_id,
        send_at,
        public,
    };
    if step == Step::Save {
        // Saving decides nothing about the audience yet: lists may wait.
        return draft_page::save(admin, db, fields, &draft_fields, &actor).await;
    }
    let audience = match targets.checked.audience(chosen.clone()) {
        Ok(audience) => audience,
        Err(refused) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return refuse(fields, status, Some(refused.field), refused.reason).await;
        }
    };
    let rendered = render(&admin.newsletter, &draft);
    match step {
        Step::Save => unreachable!("saved above"),
        Step::Count => compose_form(admin, db, StatusCode::OK, fields, None, None).await,
        Step::Preview => preview(admin, db, fields, &rendered, &settings).await,
        Step::Test => send_test(admin, db, fields, &rendered, &outbox, &settings).await,
        Step::Edit => compose_form(admin, db, StatusCode::OK, fields, None, None).await,
        Step::AskToPublish | Step::Publish => {
            let key = match key {
                Ok(key) => key,
                Err(reason) => {
                    return refuse(fields, StatusCode::BAD_REQUEST, None, reason).await;
                }
            };
            if step == Step::AskToPublish {
                return ask_to_publish(admin, db, fields, send_at).await;
            }
            if let FormTarget::Draft(id) = target {
                let edit = Edit {
                    id,
                    fields: draft_fields,
                };
                return draft_page::publish(admin, db, &settings, fields, &key, &edit, &actor)
                    .await;
            }
            let issue = Submission {
                id: Uuid::new_v4(),
                draft: &draft,
                rendered: &rendered,
                send_at,
                list_ids: audience.list_ids,
                segment: audience.segment,
                public,
                fingerprint: None,
            };
            publish(admin, fields, db, &settings, &key, issue, &actor).await
        }
    }
}

/// The publish question as a page, for a form sent without scripts: its
/// button publishes what the form held, with the form's key; the other
/// goes back to the form.
async fn ask_to_publish(
    admin: &SignedIn,
    db: &Db,
    fields: ComposeFields<'_>,
    send_at: Option<DateTime<Utc>>,
) -> Result<HttpResponse, ApiError> {
    let audience = audience_size(db, &fields.audience).await;
    Ok(page(
        StatusCode::OK,
        &PublishConfirmPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            fields,
            question: publish_question(audience),
            audience: audience_text(audience),
            counted: audience.is_some(),
            // A moment already past is sent at once, as no moment is.
            send_at: send_at
                .filter(|at| *at > Utc::now())
                .map(|at| at.format("%Y-%m-%d %H:%M UTC").to_string()),
        },
    ))
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

/// The rendered email filled in as it would be for a subscriber named
/// [`EXAMPLE_NAME`], and the form again to go on from.
async fn preview(
    admin: &SignedIn,
    db: &Db,
    fields: ComposeFields<'_>,
    rendered: &EmailContent,
    settings: &PublishSettings,
) -> Result<HttpResponse, ApiError> {
    let email = example_email(rendered, settings);
    let preview = Preview {
        subject: email.subject,
        html: email.html_body,
        text: email.text_body,
    };
    compose_form(admin, db, StatusCode::OK, fields, None, Some(preview)).await
}

/// Queues the email, filled in as the preview shows it and its subject
/// marked as a test, to the admin's own address on the stream issues go
/// out on.
#[tracing::instrument(name = "Send a test of an issue", skip_all)]
async fn send_test(
    admin: &SignedIn,
    db: &Db,
    fields: ComposeFields<'_>,
    rendered: &EmailContent,
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
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return compose_form(admin, db, status, fields, Some(refusal), None).await;
    };
    let mut content = example_email(rendered, settings);
    content.subject.insert_str(0, TEST_SUBJECT_PREFIX);
    let email = Email {
        to: to.clone(),
        content,
        message_stream: settings.message_stream.clone(),
        delivery: None,
        outbox_id: None,
        unsubscribe: None,
    };
    db.transaction(async |tx| outbox.enqueue(tx, vec![email.clone()]).await)
        .await
        .step("queue the test email")?;
    let notice = format!("Test sent to {}.", to.as_ref());
    compose_form_with_notice(admin, db, StatusCode::OK, fields, None, Some(notice), None).await
}

/// The ids of the `list` pairs, each once; `None` when the form showed no
/// lists and ticked none (an installation with one list).
fn chosen_lists(
    pairs: &[(String, String)],
    lists_offered: bool,
) -> Result<Option<Vec<Uuid>>, String> {
    if pairs.is_empty() && !lists_offered {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for (_, raw) in pairs {
        let id = Uuid::try_parse(raw.trim())
            .map_err(|_| format!("“{}” is not a list's id.", raw.escape_debug()))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(Some(ids))
}

/// Publishes the issue, unless the form's key published it already; either
/// way the answer sends the admin to the issue's page.
async fn publish(
    admin: &SignedIn,
    fields: ComposeFields<'_>,
    db: &Db,
    settings: &PublishSettings,
    key: &IdempotencyKey,
    issue: Submission<'_>,
    actor: &Actor,
) -> Result<HttpResponse, ApiError> {
    let owner = KeyOwner::Admin(admin.admin.id);
    let published = publishing::publish_issue(db, settings, actor, owner, key, issue).await?;
    let Ok(Published { issue_id, .. }) = published else {
        let KeyReused = published.unwrap_err();
        return key_reused(admin, db, fields).await;
    };
    Ok(see_other(issue_path(issue_id)))
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
