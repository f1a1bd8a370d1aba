//! The compose form as a page: what it shows besides the fields typed
//! (a refusal, a notice, a preview, the publish question with the audience
//! counted), and the lists and segments it offers. The new issue's form
//! ([`super::compose`]) and a draft's page ([`super::drafts`]) both show it.

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::{StatusCode, header};
use uuid::Uuid;

use super::pages::{AudienceChoice, ComposeFields, ComposePage, Preview, Refusal, SegmentChoice};
use super::view::publish_question;
use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::campaigns::ledger;
use crate::campaigns::targets;
use crate::db::Db;
use crate::pages::{ListChoice, page};
use crate::subscribers::segments;
use crate::telemetry::error_chain_line;
use crate::web::error::{ApiError, DatabaseStep};

/// The form runs the newsletter pages' script (the publish dialog); the
/// preview's frame inherits the page's policy, and the images load
/// from the web for the reader, so they do in it. Nothing in the frame can
/// run: it is sandboxed without scripts.
const FORM_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
                           img-src http: https:; form-action 'self'; frame-ancestors 'none'; \
                           base-uri 'none'";

/// How long Postgres counts the publish question's audience before giving
/// up: a full read of the confirmed subscribers, which on a large list may
/// take longer than an admin should wait for a form.
const COUNT_LIMIT: Duration = Duration::from_secs(1);

/// How long the page waits for that count, a connection included. A little
/// longer than [`COUNT_LIMIT`], so that Postgres' own cancel, which keeps
/// the connection usable, normally comes first, and this deadline only
/// catches a pool with no connection free or a connection gone silent.
const COUNT_WAIT: Duration = Duration::from_millis(1500);

/// The form, with what was typed, and maybe a refusal or a preview.
pub(super) async fn compose_form(
    admin: &SignedIn,
    db: &Db,
    status: StatusCode,
    fields: ComposeFields<'_>,
    refusal: Option<Refusal>,
    preview: Option<Preview>,
) -> Result<HttpResponse, ApiError> {
    compose_form_with_notice(admin, db, status, fields, refusal, None, preview).await
}

/// The form, as [`compose_form`], with a notice on top.
pub(super) async fn compose_form_with_notice(
    admin: &SignedIn,
    db: &Db,
    status: StatusCode,
    fields: ComposeFields<'_>,
    refusal: Option<Refusal>,
    notice: Option<String>,
    preview: Option<Preview>,
) -> Result<HttpResponse, ApiError> {
    let shown = Shown {
        refusal,
        notice,
        preview,
        ..Shown::default()
    };
    show_form(admin, db, status, fields, shown).await
}

/// What the form is shown with, besides its fields.
#[derive(Default)]
pub(super) struct Shown {
    pub refusal: Option<Refusal>,
    pub notice: Option<String>,
    pub preview: Option<Preview>,
    /// When the draft shown was last saved.
    pub saved_at: Option<String>,
    /// The page, when the draft was published meanwhile.
    pub published: Option<String>,
}

/// The form, with what was typed and what goes with it. The publish button
/// carries the question its dialog asks, with the audience as it is now.
pub(super) async fn show_form(
    admin: &SignedIn,
    db: &Db,
    status: StatusCode,
    fields: ComposeFields<'_>,
    shown: Shown,
) -> Result<HttpResponse, ApiError> {
    let audience = audience_size(db, &fields.audience).await;
    let mut answer = page(
        status,
        &ComposePage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            fields,
            refusal: shown.refusal,
            notice: shown.notice,
            preview: shown.preview,
            publish_question: publish_question(audience),
            saved_at: shown.saved_at,
            published: shown.published,
        },
    );
    answer.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(FORM_POLICY),
    );
    Ok(answer)
}

/// How many an issue published now goes to, if the database counts them
/// within [`COUNT_LIMIT`]. Not a reason to fail the answer it goes in: a
/// refusal stays a refusal, and the question asks without a number.
#[tracing::instrument(name = "Count the audience", skip_all)]
pub(super) async fn audience_size(db: &Db, audience: &AudienceChoice) -> Option<i64> {
    db.transaction_within(COUNT_WAIT, async |tx| {
        match (&audience.segment, &audience.lists) {
            (Some(filter), Some(lists)) => match segments::count(tx, filter, lists).await? {
                segments::Count::Counted(n) => Ok(Some(n)),
                segments::Count::Unavailable => Ok(None),
            },
            (_, lists) => ledger::audience_size(tx, COUNT_LIMIT, lists.as_deref())
                .await
                .map(Some),
        }
    })
    .await
    .inspect_err(|e| {
        tracing::warn!(
            error = %error_chain_line(e),
            "The audience could not be counted; the publish question asks without a number"
        );
    })
    .ok()
    .flatten()
}

/// A key for a form shown for the first time.
pub(super) fn fresh_key() -> String {
    Uuid::new_v4().to_string()
}

/// Who an issue may go to ([`targets::Targets`]), with the live lists as
/// the form's checkboxes and the saved segments as its choices.
pub(super) struct Targets {
    pub choices: Vec<ListChoice>,
    pub segments: Vec<SegmentChoice>,
    pub checked: targets::Targets,
}

impl Targets {
    /// The live lists, with `chosen` ticked (the default list when the
    /// form is new), and the segments, with `segment` selected. With one
    /// live list there is nothing to choose.
    pub async fn read(
        db: &Db,
        chosen: Option<&[Uuid]>,
        segment: Option<Uuid>,
    ) -> Result<Self, ApiError> {
        let checked = db
            .transaction(async |tx| targets::Targets::read(tx, segment).await)
            .await
            .step("read the lists and segments")?;
        Ok(Self {
            choices: ListChoice::offered(checked.live.clone(), chosen),
            segments: checked
                .saved
                .iter()
                .map(|s| SegmentChoice {
                    selected: segment == Some(s.id),
                    id: s.id.to_string(),
                    name: s.name.clone(),
                })
                .collect(),
            checked,
        })
    }

    /// Who the form's choices send to, for the count.
    pub fn audience(&self) -> AudienceChoice {
        let segment = self
            .checked
            .segment
            .as_ref()
            .ok()
            .and_then(|s| s.as_ref())
            .map(|(filter, _)| filter.clone());
        let lists = match (ticked(&self.choices), &segment) {
            (None, Some(_)) => Some(self.checked.live_ids()),
            (lists, _) => lists,
        };
        AudienceChoice { lists, segment }
    }
}

/// The ids of the ticked checkboxes; `None` when there are none to tick.
fn ticked(lists: &[ListChoice]) -> Option<Vec<Uuid>> {
    if lists.is_empty() {
        return None;
    }
    Some(
        lists
            .iter()
            .filter(|l| l.checked)
            .filter_map(|l| Uuid::try_parse(&l.id).ok())
            .collect(),
    )
}

/// The form again when its key published something else: with a new key,
/// so that publishing what it holds now is a second issue, and takes a
/// deliberate press.
pub(super) async fn key_reused(
    admin: &SignedIn,
    db: &Db,
    fields: ComposeFields<'_>,
) -> Result<HttpResponse, ApiError> {
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
    let status = StatusCode::UNPROCESSABLE_ENTITY;
    compose_form(admin, db, status, fields, Some(refusal), None).await
}
