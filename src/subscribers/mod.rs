//! The subscriber store: the one owner of the tables about subscribers
//! (`subscriptions`, `lists`, `memberships`, `attribute_definitions`,
//! `confirmation_tokens`, `suppressions`, `former_addresses`). Every other
//! module, and every handler, reaches them through the named functions here, so that what a subscriber is
//! stays decided in one place:
//! - [`record`]: one subscriber, as the public pages and the admin's
//!   record, export and erasure need them;
//! - [`lists`]: the newsletters a reader can choose;
//! - [`memberships`]: who is on which list, with a status per list;
//! - [`attributes`]: the custom attributes an admin defines, and each
//!   subscriber's values for them;
//! - [`sign_ups`]: the statements a batch of sign-ups is stored with;
//! - [`confirmation`]: a confirmation link's token, and confirming;
//! - [`welcome`]: a list's welcome email, sent once per reader and list;
//! - [`erasure`]: forgetting a subscriber, for a request to be erased;
//! - [`history`]: whether an address has been here before;
//! - [`leaving`]: a reader leaving some lists or everything;
//! - [`imports`]: the merge of an import's staged rows;
//! - [`suppression`]: addresses never mailed again;
//! - [`audience`]: who a campaign reaches, as the subqueries the campaign
//!   ledger's statements are built from;
//! - [`directory`]: the admin's list, its search and its export;
//! - [`figures`]: the counts the dashboard shows;
//! - [`retention`]: the retention job's batches over these tables.
//! - [`segments`]: saved filters over the subscribers, and the audiences
//!   they narrow.

pub mod attributes;
pub mod audience;
pub mod confirmation;
pub mod directory;
pub mod erasure;
pub mod figures;
pub mod history;
pub mod imports;
pub mod leaving;
pub mod lists;
pub mod memberships;
pub mod record;
pub mod retention;
pub mod segments;
pub mod sign_ups;
pub mod suppression;
pub mod welcome;

pub use record::{Contact, address_of, contact_of, unsubscribe};
