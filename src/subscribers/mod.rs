//! The subscriber store: the one owner of the tables about subscribers
//! (`subscriptions`, `lists`, `memberships`, `confirmation_tokens`,
//! `suppressions`, `former_addresses`). Every other module, and every handler, reaches
//! them through the named functions here, so that what a subscriber is
//! stays decided in one place:
//! - [`record`]: one subscriber, as the public pages and the admin's
//!   record, export and erasure need them;
//! - [`lists`]: the newsletters a reader can choose;
//! - [`memberships`]: who is on which list, with a status per list;
//! - [`sign_ups`]: the statements a batch of sign-ups is stored with;
//! - [`confirmation`]: a confirmation link's token, and confirming;
//! - [`history`]: whether an address has been here before;
//! - [`suppression`]: addresses never mailed again;
//! - [`directory`]: the admin's list, its search and its export;
//! - [`figures`]: the counts the dashboard shows;
//! - [`segments`]: saved filters over the subscribers, and the audiences
//!   they narrow.

pub mod confirmation;
pub mod directory;
pub mod figures;
pub mod history;
pub mod lists;
pub mod memberships;
pub mod record;
pub mod segments;
pub mod sign_ups;
pub mod suppression;

pub use record::{Contact, address_of, contact_of, unsubscribe};
