//! The newsletter pages behind `/admin/newsletters`: the list of issues
//! ([`list`]), writing one, with a preview, a test send to oneself and
//! publishing ([`compose`]), drafts kept from that form and their pages
//! ([`drafts`]), the form as both show it ([`form`]), an issue's own page with its progress, its
//! undelivered recipients and the actions on it ([`issue`]), and the live
//! updates that page listens to ([`events`]).
//!
//! What an issue is and how it travels lives in `crate::newsletters`
//! (writing and rendering) and `crate::campaigns` (the delivery ledger and
//! its progress feed); these handlers only parse, call them, and answer.

pub(crate) mod compose;
pub(crate) mod drafts;
pub(crate) mod events;
mod form;
pub(crate) mod issue;
pub(crate) mod list;
mod pages;
mod view;

pub use compose::{compose_form_config, compose_page, submit_draft, submit_issue};
pub use drafts::{delete_draft, draft_page};
pub use events::issue_events;
pub use issue::{act_on_issue, issue_page, issue_script};
pub use list::newsletters;

pub use crate::campaigns::publishing::PublishSettings;
