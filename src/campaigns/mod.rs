//! Publishing an issue to every confirmed subscriber, through a delivery
//! ledger: one `deliveries` row per recipient, recorded when the issue goes
//! out and moved `queued → sent | failed | skipped` as senders work through
//! it. The ledger is the truth an operator reads ("who got what"), and what
//! makes a campaign safe to interrupt: a delivery is marked sent only after
//! the email API accepted it, so a sender that dies mid-batch leaves its
//! batch queued, and the next one to claim the batch sends it again (the
//! one batch in flight is the most a crash can send twice).
//!
//! - [`ledger`]: every statement on issues, deliveries and batches.
//! - [`sender`]: records a published issue's audience in chunks by
//!   subscriber id, each chunk a statement of its own; claims batches of deliveries, renders each recipient's
//!   email, sends them through the email API's batch endpoint under the
//!   fleet-wide [`throttle`], and records each outcome.
//! - [`archive`]: which issues are public, under which address, and what
//!   the public archive and its feed read of them.
//! - [`actions`]: pause, resume, cancel and the rest, for the issue's page
//!   and the API alike.
//! - [`drafts`]: issues written and kept before they are published.
//! - [`publishing`] and [`targets`]: the publish step and the audience
//!   checks the compose page and `/api/v1/issues` share.
//! - [`progress`]: carries the database's change notifications to pages
//!   watching an issue.
//!
//! Senders and recorders run wherever outbox delivery runs (the server with
//! `delivery.run_in_server`, or `newsletter worker`).

pub mod actions;
pub mod archive;
pub mod drafts;
pub mod ledger;
pub mod progress;
pub mod publishing;
pub mod sender;
pub mod targets;

use crate::db::Transaction;
use crate::db::wakeups::Notifier;

/// Wakes the senders of every process once `transaction` commits: call it
/// after publishing, resuming, cancelling or requeueing in it.
pub fn wake_senders_after_commit(transaction: &mut Transaction<'_>, notifier: &Notifier) {
    let notifier = notifier.clone();
    transaction.after_commit(move || notifier.ring(ledger::WORK_CHANNEL));
}

pub use ledger::{
    DeliveryId, IdempotencyKey, Issue, IssueState, IssueSummary, KeyOwner, NewIssue, Progress,
    PublishError, Published, Undelivered,
};
