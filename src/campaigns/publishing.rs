//! Publishing an issue and previewing one: the steps the compose page and
//! `/api/v1/issues` share, so that both store, audit, wake the senders and
//! put the issue in the archive the same way, and both show a preview
//! filled in for the same example reader.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::admin::audit::{self, Action, Actor};
use crate::campaigns::archive::Publicity;
use crate::campaigns::drafts::{self, DraftFields};
use crate::campaigns::ledger::{
    self, Fingerprint, IdempotencyKey, KeyOwner, NewIssue, PublishError, Published,
};
use crate::campaigns::targets::{Refused, Targets};
use crate::campaigns::wake_senders_after_commit;
use crate::db::{Db, Transaction};
use crate::domain::Newsletter;
use crate::emails::EmailContent;
use crate::newsletters::{
    Draft, PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL, WebVersion, render,
};
use crate::outbox::{Personalisation, personalise_with};
use crate::subscribers::segments::Frozen;
use crate::web::error::{ApiError, DatabaseStep};

/// The name previews and test sends greet the reader with.
const EXAMPLE_NAME: &str = "Ada Lovelace";

/// What publishing, test sends and the actions on an issue need, for the
/// handlers' app data.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// The email API's stream for bulk mail: issues and their test sends.
    pub message_stream: String,
    /// The unsubscribe and preferences links previews and test sends
    /// carry: signed, and naming no one ([`crate::keys::Keys::test_unsubscribe_token`]).
    pub test_links: crate::emails::UnsubscribeLinks,
    /// Wakes the senders of every process once a publish, resume, cancel
    /// or requeue has committed.
    pub senders: crate::db::wakeups::Notifier,
    /// Puts issues in the public archive and takes them out.
    pub archive: crate::archive::Archive,
}

/// An issue to publish, parsed and rendered.
pub struct Submission<'a> {
    /// The issue's id: a new one, or the draft's it is published from.
    pub id: Uuid,
    pub draft: &'a Draft,
    pub rendered: &'a EmailContent,
    pub send_at: Option<DateTime<Utc>>,
    /// `None`: every confirmed subscriber.
    pub list_ids: Option<Vec<Uuid>>,
    /// The segment that narrows them, as it is now.
    pub segment: Option<Frozen>,
    /// Whether it goes in the public archive at once.
    pub public: bool,
    /// What makes a retry under the key the same; `None`: the issue as
    /// stored ([`Fingerprint::of`]).
    pub fingerprint: Option<Fingerprint>,
}

/// The key published other content before: nothing was stored.
#[derive(Debug)]
pub struct KeyReused;

/// Stores the issue and its audit entry in one transaction, unless
/// `owner`'s `key` published it already (then the same issue comes back,
/// `replayed`); the senders are woken once it commits.
#[tracing::instrument(name = "Publish an issue", skip_all)]
pub async fn publish_issue(
    db: &Db,
    settings: &PublishSettings,
    actor: &Actor,
    owner: KeyOwner,
    key: &IdempotencyKey,
    issue: Submission<'_>,
) -> Result<Result<Published, KeyReused>, ApiError> {
    db.transaction(async |tx| store(tx, settings, actor, owner, key, &issue).await)
        .await
        .step("publish the issue")
}

/// The publish itself, in the caller's transaction: the issue, its key,
/// its audit entry, the archive, and the senders woken at commit.
async fn store(
    tx: &mut Transaction<'_>,
    settings: &PublishSettings,
    actor: &Actor,
    owner: KeyOwner,
    key: &IdempotencyKey,
    issue: &Submission<'_>,
) -> Result<Result<Published, KeyReused>, sqlx::Error> {
    let new = NewIssue {
        id: issue.id,
        title: issue.draft.title(),
        content: issue.draft.content(),
        rendered: issue.rendered,
        message_stream: &settings.message_stream,
        send_at: issue.send_at,
        created_by: match owner {
            KeyOwner::Admin(id) => Some(id),
            KeyOwner::Token(_) => None,
        },
        list_ids: issue.list_ids.as_deref(),
        segment: issue.segment.as_ref(),
        public: issue.public,
    };
    let fingerprint = match &issue.fingerprint {
        Some(fingerprint) => fingerprint.clone(),
        None => Fingerprint::of(&new),
    };
    match ledger::publish(tx, owner, key, &fingerprint, new).await {
        Ok(published) => {
            if !published.replayed {
                wake_senders_after_commit(tx, &settings.senders);
                let detail = format!("{} ({})", issue.draft.title(), published.issue_id);
                audit::record(tx, actor, Action::IssuePublished, &detail).await?;
                if issue.public {
                    make_public(tx, settings, actor, &detail, published.issue_id).await?;
                }
            }
            Ok(Ok(published))
        }
        Err(PublishError::KeyReused) => Ok(Err(KeyReused)),
        Err(PublishError::Sql(e)) => Err(e),
    }
}

/// What became of publishing a stored draft.
pub enum DraftPublished {
    /// Published now, or by this key before (`replayed`).
    Published(Published),
    /// The key published something else.
    KeyReused,
    /// No draft has the id, and no issue either.
    Missing,
    /// An issue has the id: the draft was published before, under another
    /// key (or from the newsroom).
    AlreadyPublished,
    /// The draft's lists or segment cannot be used now, or its text no
    /// longer fits the limits: nothing was published.
    Refused(Refused),
}

/// Publishes the draft `id` as an issue with the same id, deleting the
/// draft in the same transaction, under the same key rules as any publish:
/// what a retry sends is the draft's id, so the same key for the same
/// draft replays and for another draft is refused.
///
/// The draft is locked first, so two publishes of it at once take turns:
/// the second finds it gone, and replays when it carries the first one's
/// key, or is told the draft was published.
///
/// With `edit` (the newsroom's form as the editor sees it), the draft is
/// changed to it first, on record, in the same transaction: what is
/// published is what was on the screen, even if another tab saved the
/// draft in between.
#[allow(clippy::too_many_arguments)] // The publish's parties, and the edit that goes with it.
#[tracing::instrument(name = "Publish a draft", skip_all, fields(draft = %id))]
pub async fn publish_draft(
    db: &Db,
    settings: &PublishSettings,
    newsletter: &Newsletter,
    actor: &Actor,
    owner: KeyOwner,
    key: &IdempotencyKey,
    id: Uuid,
    edit: Option<&DraftFields<'_>>,
) -> Result<DraftPublished, ApiError> {
    let fingerprint = match edit {
        None => Fingerprint::of_draft(id),
        Some(fields) => {
            let edit = Fingerprint::of_request(
                fields.text.title(),
                fields.text.content(),
                fields.send_at,
                fields.list_ids,
                fields.segment_id,
                fields.public,
            );
            Fingerprint::of_edited_draft(id, &edit)
        }
    };
    db.transaction(async |tx| {
        let draft = drafts::lock(tx, id).await?;
        // The key first, as for any publish: a retry replays, and a key
        // spent on other content is refused before the draft's audience is
        // looked at.
        match ledger::published_with(tx, owner, key, &fingerprint).await {
            Ok(Some(earlier)) => return Ok(DraftPublished::Published(earlier)),
            Err(PublishError::KeyReused) => return Ok(DraftPublished::KeyReused),
            Err(PublishError::Sql(e)) => return Err(e),
            Ok(None) => {}
        }
        let Some(mut draft) = draft else {
            return Ok(if ledger::exists(tx, id).await? {
                DraftPublished::AlreadyPublished
            } else {
                DraftPublished::Missing
            });
        };
        if let Some(fields) = edit.filter(|fields| !draft.holds(fields)) {
            let Some(edited) = drafts::update(tx, id, fields).await? else {
                return Ok(DraftPublished::Missing);
            };
            let detail = format!("{} changed", edited.audited());
            audit::record(tx, actor, Action::DraftChanged, &detail).await?;
            draft = edited;
        }
        let text = match draft.text() {
            Ok(text) => text,
            Err(e) => {
                return Ok(DraftPublished::Refused(Refused {
                    field: e.field().name(),
                    reason: e.to_string(),
                }));
            }
        };
        let targets = Targets::read(tx, draft.segment_id).await?;
        let audience = match targets.audience(Some(draft.list_ids.clone())) {
            Ok(audience) => audience,
            Err(refused) => return Ok(DraftPublished::Refused(refused)),
        };
        let rendered = render(newsletter, &text);
        let submission = Submission {
            id,
            draft: &text,
            rendered: &rendered,
            send_at: draft.send_at,
            list_ids: audience.list_ids,
            segment: audience.segment,
            public: draft.public,
            fingerprint: Some(fingerprint.clone()),
        };
        Ok(
            match store(tx, settings, actor, owner, key, &submission).await? {
                Ok(published) => {
                    drafts::delete(tx, id).await?;
                    DraftPublished::Published(published)
                }
                Err(KeyReused) => DraftPublished::KeyReused,
            },
        )
    })
    .await
    .step("publish the draft")
}

/// What `owner`'s `key` published before, for a request whose audience
/// is not resolved yet ([`ledger::published_with`]).
pub async fn published_with(
    db: &Db,
    owner: KeyOwner,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
) -> Result<Result<Option<Published>, KeyReused>, ApiError> {
    let earlier = db
        .transaction(async |tx| {
            Ok(
                match ledger::published_with(tx, owner, key, fingerprint).await {
                    Ok(earlier) => Ok(earlier),
                    Err(PublishError::KeyReused) => Err(KeyReused),
                    Err(PublishError::Sql(e)) => return Err(e),
                },
            )
        })
        .await
        .step("look up the idempotency key")?;
    Ok(earlier)
}

/// Puts the issue just published in the archive, on record, in the
/// publishing transaction: its first batch already carries the link.
async fn make_public(
    tx: &mut Transaction<'_>,
    settings: &PublishSettings,
    actor: &Actor,
    detail: &str,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    if let Publicity::Changed(slug) = settings.archive.make_public(tx, id).await? {
        let detail = format!("{detail}, /archive/{slug}");
        audit::record(tx, actor, Action::IssueMadePublic, &detail).await?;
    }
    Ok(())
}

/// The values previews and test sends fill the placeholders with. The
/// link is a real one, signed, but names nobody: opened, it says it came
/// from a test email, and pressing its button unsubscribes no one.
pub fn example_values(settings: &PublishSettings) -> Personalisation {
    Personalisation::from([
        (RECIPIENT_NAME.to_owned(), EXAMPLE_NAME.to_owned()),
        (
            UNSUBSCRIBE_URL.to_owned(),
            settings.test_links.url().to_owned(),
        ),
        (
            PREFERENCES_URL.to_owned(),
            settings.test_links.preferences_url().to_owned(),
        ),
    ])
}

/// The email as [`example_values`] fill it: what a preview shows. The
/// "Read on the web" link is left out: the issue has no address in the
/// archive until it is published.
pub fn example_email(rendered: &EmailContent, settings: &PublishSettings) -> EmailContent {
    let web_version = WebVersion::link(None);
    personalise_with(rendered, &example_values(settings), web_version.markup())
}
