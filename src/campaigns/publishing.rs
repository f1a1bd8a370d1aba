//! Publishing an issue and previewing one: the steps the compose page and
//! `/api/v1/issues` share, so that both store, audit, wake the senders and
//! put the issue in the archive the same way, and both show a preview
//! filled in for the same example reader.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::admin::audit::{self, Action, Actor};
use crate::campaigns::archive::Publicity;
use crate::campaigns::ledger::{
    self, Fingerprint, IdempotencyKey, KeyOwner, NewIssue, PublishError, Published,
};
use crate::campaigns::wake_senders_after_commit;
use crate::db::Db;
use crate::emails::EmailContent;
use crate::newsletters::{Draft, PREFERENCES_URL, RECIPIENT_NAME, UNSUBSCRIBE_URL, WebVersion};
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
    db.transaction(async |tx| {
        let new = NewIssue {
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
    })
    .await
    .step("publish the issue")
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
    tx: &mut crate::db::Transaction<'_>,
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
