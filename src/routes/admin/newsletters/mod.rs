//! The newsletter pages behind `/admin/newsletters`: the list of issues
//! ([`list`]), writing one, with a preview, a test send to oneself and
//! publishing ([`compose`]), an issue's own page with its progress, its
//! undelivered recipients and the actions on it ([`issue`]), and the live
//! updates that page listens to ([`events`]).
//!
//! What an issue is and how it travels lives in `crate::newsletters`
//! (writing and rendering) and `crate::campaigns` (the delivery ledger and
//! its progress feed); these handlers only parse, call them, and answer.

pub(crate) mod compose;
pub(crate) mod events;
pub(crate) mod issue;
pub(crate) mod list;
mod pages;
mod view;

pub use compose::{compose_form_config, compose_page, submit_issue};
pub use events::issue_events;
pub use issue::{act_on_issue, issue_page, issue_script};
pub use list::newsletters;

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
