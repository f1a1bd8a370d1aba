//! What can be done to an issue once published: pause, resume, cancel,
//! queue its failed deliveries again, put it in the public archive or take
//! it out. One step for the issue's page and `/api/v1/issues/{id}/...`:
//! the action and its audit entry in one transaction, refused with the
//! reason when the issue's state does not allow it.

use uuid::Uuid;

use crate::admin::audit::{self, Action, Actor};
use crate::campaigns::archive::Publicity;
use crate::campaigns::ledger::{self, IssueState, IssueSummary};
use crate::campaigns::publishing::PublishSettings;
use crate::campaigns::wake_senders_after_commit;
use crate::db::Db;
use crate::web::error::{ApiError, DatabaseStep};

/// What can be done to an issue.
#[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IssueAction {
    Pause,
    Resume,
    Cancel,
    Requeue,
    /// Puts the issue in the public archive.
    #[serde(rename = "make-public")]
    MakePublic,
    /// Takes it out.
    #[serde(rename = "make-private")]
    MakePrivate,
}

impl IssueAction {
    fn audited_as(self) -> Action {
        match self {
            IssueAction::Pause => Action::IssuePaused,
            IssueAction::Resume => Action::IssueResumed,
            IssueAction::Cancel => Action::IssueCancelled,
            IssueAction::Requeue => Action::FailedDeliveriesRequeued,
            IssueAction::MakePublic => Action::IssueMadePublic,
            IssueAction::MakePrivate => Action::IssueMadePrivate,
        }
    }

    /// Why the issue, as it is now, does not allow this action.
    pub fn refusal(self, issue: &IssueSummary) -> String {
        let state = issue.label();
        match self {
            IssueAction::Pause => {
                format!("Only an issue that is sending can be paused; this one is {state}.")
            }
            IssueAction::Resume => {
                format!("Only a paused issue can be resumed; this one is {state}.")
            }
            IssueAction::Cancel => format!("This issue is {state}: there is nothing to cancel."),
            IssueAction::Requeue if issue.state() == IssueState::Cancelled => {
                "This issue was cancelled: its failed deliveries stay as they are.".into()
            }
            IssueAction::Requeue => "There are no failed deliveries to queue again.".into(),
            IssueAction::MakePublic => "This issue is public already.".into(),
            IssueAction::MakePrivate => "This issue is not public: there is nothing to take \
                                         out of the archive."
                .into(),
        }
    }
}

/// How an action went.
pub enum Outcome {
    Done,
    /// The issue's state does not allow it: the issue as it was when the
    /// action was tried, for [`IssueAction::refusal`].
    Refused(IssueSummary),
    Missing,
}

/// Applies the action and records it in the audit log, in one transaction.
#[tracing::instrument(name = "Act on an issue", skip(db, actor, settings))]
pub async fn act(
    db: &Db,
    settings: &PublishSettings,
    actor: &Actor,
    action: IssueAction,
    id: Uuid,
) -> Result<Outcome, ApiError> {
    let archive = &settings.archive;
    db.transaction(async |tx| {
        // The title is for the audit entry; it never changes.
        let Some(issue) = ledger::find(tx, id).await? else {
            return Ok(Outcome::Missing);
        };
        let (done, detail) = match action {
            IssueAction::Pause => (ledger::pause(tx, id).await?, String::new()),
            IssueAction::Resume => (ledger::resume(tx, id).await?, String::new()),
            IssueAction::Cancel => (ledger::cancel(tx, id).await?, String::new()),
            IssueAction::Requeue => {
                let requeued = ledger::requeue_failed(tx, id).await?;
                (requeued > 0, format!(", {requeued} deliveries"))
            }
            IssueAction::MakePublic => publicity(archive.make_public(tx, id).await?),
            IssueAction::MakePrivate => publicity(archive.make_private(tx, id).await?),
        };
        if !done {
            return Ok(Outcome::Refused(issue.summary));
        }
        if matches!(
            action,
            IssueAction::Resume | IssueAction::Cancel | IssueAction::Requeue
        ) {
            // Work to take up (resumed, requeued), or batches to close
            // (cancelled).
            wake_senders_after_commit(tx, &settings.senders);
        }
        let detail = format!("{} ({id}){detail}", issue.summary.title);
        audit::record(tx, actor, action.audited_as(), &detail).await?;
        Ok(Outcome::Done)
    })
    .await
    .step("act on the issue")
}

/// Whether making an issue public or private changed it, and its slug
/// for the audit entry.
fn publicity(publicity: Publicity) -> (bool, String) {
    match publicity {
        Publicity::Changed(slug) => (true, format!(", /archive/{slug}")),
        Publicity::Unchanged | Publicity::Missing => (false, String::new()),
    }
}
