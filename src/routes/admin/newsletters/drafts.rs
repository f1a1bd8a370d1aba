//! Drafts in the newsroom. Save draft on the compose form keeps what it
//! holds as a draft ([`save`]) and leads to the draft's page,
//! `GET /admin/newsletters/drafts/{id}`: the compose form again, filled in
//! from the draft and sent to the draft's address, where its buttons do
//! what they do on the new issue's form ([`super::compose`], which takes
//! the draft page's form too), but Save
//! draft changes this draft and Publish publishes it as an issue with the
//! draft's id ([`publish`]), with the form as it stands saved onto it
//! first. `POST /admin/newsletters/drafts/{id}/delete` deletes it.
//!
//! Saving checks the text as publishing does, and the lists and segment
//! as far as a draft needs ([`targets::Targets::check_draft`]): lists may
//! be chosen later. A draft published or deleted meanwhile (in another
//! tab) is said so, with a link to the issue it became, and what was typed
//! kept on a new issue's form: saving or publishing it then makes a new
//! draft or issue, on purpose.
//!
//! The stores own the SQL: `crate::campaigns::drafts` the drafts, and
//! `crate::campaigns::publishing` the publish.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Timelike, Utc};
use uuid::Uuid;

use super::PublishSettings;
use super::form::{Shown, Targets, fresh_key, key_reused, show_form};
use super::issue::ActionForm;
use super::pages::{ComposeFields, DraftMissingPage, FormTarget, Refusal, draft_path};
use super::view::{issue_path, parse_issue_id};
use crate::admin::actor::actor_for;
use crate::admin::audit::{self, Action, Actor};
use crate::admin::guard::{Protected, SignedIn};
use crate::admin::pages::layout::nav;
use crate::campaigns::drafts::{self, Author, DraftFields};
use crate::campaigns::ledger::{self, IdempotencyKey, KeyOwner};
use crate::campaigns::publishing::{self, DraftPublished};
use crate::campaigns::targets::{self, Refused};
use crate::db::Db;
use crate::pages::page;
use crate::rate_limit::RateLimiter;
use crate::web::answers::see_other;
use crate::web::client::client_ip;
use crate::web::error::{ApiError, DatabaseStep};

/// Where the list of issues and drafts is.
const LIST_PATH: &str = "/admin/newsletters";

#[utoipa::path(get, path = "/admin/newsletters/drafts/{id}", tag = "admin",
    params(("id" = String, Path, description = "The draft's id.")),
    responses(
        (status = 200, description = "The draft's page: the compose form, filled in from the draft.", body = String, content_type = "text/html"),
        (status = 303, description = "The draft was published: to the issue's page (it has the draft's id).", headers(("Location" = String))),
        (status = 404, description = "No such draft.", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminOnly,
    ))]
pub async fn draft_page(
    admin: SignedIn,
    id: web::Path<String>,
    db: web::Data<Db>,
) -> Result<HttpResponse, ApiError> {
    let Some(id) = parse_issue_id(&id) else {
        return Ok(missing(&admin));
    };
    let found = db
        .transaction(async |tx| {
            let draft = drafts::find(tx, id).await?;
            let published = draft.is_none() && ledger::exists(tx, id).await?;
            Ok((draft, published))
        })
        .await
        .step("read the draft")?;
    let draft = match found {
        (Some(draft), _) => draft,
        // An old link or bookmark: the draft's id leads to its issue.
        (None, true) => return Ok(see_other(issue_path(id))),
        (None, false) => return Ok(missing(&admin)),
    };
    let targets = Targets::read(&db, Some(&draft.list_ids), draft.segment_id).await?;
    // A segment deleted or broken since the draft was saved: said, rather
    // than dropped from the form without a word.
    let refusal = targets
        .checked
        .segment
        .as_ref()
        .err()
        .map(|reason| Refusal {
            field: None,
            reason: format!("The segment this draft was saved with cannot be used: {reason}"),
        });
    let send_at = draft.send_at.map(form_time).unwrap_or_default();
    let fields = ComposeFields {
        target: FormTarget::Draft(id),
        title: &draft.title,
        content: &draft.content,
        send_at: &send_at,
        idempotency_key: fresh_key(),
        audience: targets.audience(),
        lists: targets.choices,
        segments: targets.segments,
        public: draft.public,
    };
    let shown = Shown {
        refusal,
        saved_at: Some(draft.updated_at.format("%Y-%m-%d %H:%M UTC").to_string()),
        ..Shown::default()
    };
    show_form(&admin, &db, StatusCode::OK, fields, shown).await
}

/// A moment as the form's `datetime-local` field shows it, in UTC: with
/// seconds only when it has some (a draft saved over the API may).
fn form_time(at: DateTime<Utc>) -> String {
    if at.second() == 0 {
        at.format("%Y-%m-%dT%H:%M").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S").to_string()
    }
}

/// What became of a save.
enum Saved {
    Stored(Uuid),
    Refused(Refused),
    /// The draft `id` is gone: published (`true`) or deleted.
    Gone {
        id: Uuid,
        published: bool,
    },
}

/// Save draft: a new draft from the new issue's form, on record; on a
/// draft's page, the draft changed, on record if anything did. Either way
/// the answer leads to the draft's page.
pub(super) async fn save(
    admin: &SignedIn,
    db: &Db,
    form: ComposeFields<'_>,
    draft: &DraftFields<'_>,
    actor: &Actor,
) -> Result<HttpResponse, ApiError> {
    let target = form.target;
    let author = Author::Admin(admin.admin.id);
    let saved = db
        .transaction(async |tx| {
            let targets = targets::Targets::read(tx, draft.segment_id).await?;
            if let Err(refused) = targets.check_draft(draft.list_ids) {
                return Ok(Saved::Refused(refused));
            }
            let id = match target {
                FormTarget::New => {
                    let created = drafts::create(tx, draft, author).await?;
                    audit::record(tx, actor, Action::DraftSaved, &created.audited()).await?;
                    created.id
                }
                FormTarget::Draft(id) => {
                    let Some(stored) = drafts::lock(tx, id).await? else {
                        let published = ledger::exists(tx, id).await?;
                        return Ok(Saved::Gone { id, published });
                    };
                    if !stored.holds(draft) {
                        let Some(changed) = drafts::update(tx, id, draft).await? else {
                            let published = false;
                            return Ok(Saved::Gone { id, published });
                        };
                        let detail = format!("{} changed", changed.audited());
                        audit::record(tx, actor, Action::DraftChanged, &detail).await?;
                    }
                    id
                }
            };
            Ok(Saved::Stored(id))
        })
        .await
        .step("save the draft")?;
    match saved {
        Saved::Stored(id) => Ok(see_other(draft_path(id))),
        Saved::Refused(refused) => refuse(admin, db, form, refused).await,
        Saved::Gone { id, published } => gone(admin, db, form, id, published).await,
    }
}

/// The draft page's Publish, once confirmed: the draft published as an
/// issue with its id, with `edit` (the form as it stands) saved onto it
/// first.
pub(super) struct Edit<'a> {
    pub id: Uuid,
    pub fields: DraftFields<'a>,
}

pub(super) async fn publish(
    admin: &SignedIn,
    db: &Db,
    settings: &PublishSettings,
    form: ComposeFields<'_>,
    key: &IdempotencyKey,
    edit: &Edit<'_>,
    actor: &Actor,
) -> Result<HttpResponse, ApiError> {
    let owner = KeyOwner::Admin(admin.admin.id);
    let newsletter = &admin.newsletter;
    let id = edit.id;
    let fields = Some(&edit.fields);
    match publishing::publish_draft(db, settings, newsletter, actor, owner, key, id, fields).await?
    {
        // Published now, or by this form's key before (a double submit).
        DraftPublished::Published(published) => Ok(see_other(issue_path(published.issue_id))),
        DraftPublished::KeyReused => key_reused(admin, db, form).await,
        DraftPublished::Missing => gone(admin, db, form, id, false).await,
        DraftPublished::AlreadyPublished => gone(admin, db, form, id, true).await,
        DraftPublished::Refused(refused) => refuse(admin, db, form, refused).await,
    }
}

/// The form again, 422, with the reason beside the field refused, or on
/// top when the form does not show that field (no lists to choose, no
/// segments saved).
async fn refuse(
    admin: &SignedIn,
    db: &Db,
    form: ComposeFields<'_>,
    refused: Refused,
) -> Result<HttpResponse, ApiError> {
    let shown_beside = match refused.field {
        "lists" => !form.lists.is_empty(),
        "segment" => !form.segments.is_empty(),
        _ => true,
    };
    let shown = Shown {
        refusal: Some(Refusal {
            field: shown_beside.then_some(refused.field),
            reason: refused.reason,
        }),
        ..Shown::default()
    };
    show_form(admin, db, StatusCode::UNPROCESSABLE_ENTITY, form, shown).await
}

/// The form again when its draft was published (409, with a link to the
/// issue) or deleted (404) meanwhile: as a new issue's form, with a fresh
/// key and what was typed, so that nothing typed is lost and saving or
/// publishing it now is a new draft or issue, on purpose.
async fn gone(
    admin: &SignedIn,
    db: &Db,
    form: ComposeFields<'_>,
    id: Uuid,
    published: bool,
) -> Result<HttpResponse, ApiError> {
    let form = ComposeFields {
        target: FormTarget::New,
        idempotency_key: fresh_key(),
        ..form
    };
    let (status, shown) = if published {
        let shown = Shown {
            published: Some(issue_path(id)),
            ..Shown::default()
        };
        (StatusCode::CONFLICT, shown)
    } else {
        let reason = "This draft was deleted meanwhile, perhaps in another tab. What you typed \
                      is kept below: Save draft keeps it as a new draft.";
        let shown = Shown {
            refusal: Some(Refusal {
                field: None,
                reason: reason.into(),
            }),
            ..Shown::default()
        };
        (StatusCode::NOT_FOUND, shown)
    };
    show_form(admin, db, status, form, shown).await
}

#[utoipa::path(post, path = "/admin/newsletters/drafts/{id}/delete", tag = "admin",
    params(("id" = String, Path, description = "The draft's id.")),
    request_body(content = inline(ActionForm), content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Deleted: to the list of issues and drafts.", headers(("Location" = String))),
        (status = 400, description = "A form that cannot be read.", body = String, content_type = "text/plain"),
        (status = 404, description = "No such draft (deleted or published already).", content((String = "text/html"), (String = "text/plain"))),
        crate::web::openapi_responses::AdminForm,
    ))]
pub async fn delete_draft(
    request: HttpRequest,
    form: Protected<ActionForm>,
    id: web::Path<String>,
    db: web::Data<Db>,
    limiter: web::Data<RateLimiter>,
) -> Result<HttpResponse, ApiError> {
    let admin = &form.admin;
    let Some(id) = parse_issue_id(&id) else {
        return Ok(missing(admin));
    };
    let actor = actor_for(&admin.admin, client_ip(&request, &limiter));
    let deleted = db
        .transaction(async |tx| {
            let Some(draft) = drafts::lock(tx, id).await? else {
                return Ok(false);
            };
            drafts::delete(tx, id).await?;
            let detail = format!("{} deleted", draft.audited());
            audit::record(tx, &actor, Action::DraftDeleted, &detail).await?;
            Ok(true)
        })
        .await
        .step("delete the draft")?;
    if deleted {
        Ok(see_other(LIST_PATH))
    } else {
        Ok(missing(admin))
    }
}

pub(super) fn missing(admin: &SignedIn) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &DraftMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_send_time_shows_seconds_in_the_form_only_when_it_has_some() {
        let whole = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 0).unwrap();
        let odd = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap();

        assert_eq!(form_time(whole), "2030-01-02T03:04");
        assert_eq!(form_time(odd), "2030-01-02T03:04:05");
    }
}
