//! The subscriber pages behind `/admin/subscribers`: the list, its search
//! and its CSV export ([`list`]); one subscriber's page, with their consent,
//! their place on the suppression list and the issues sent to them
//! ([`page`]); the form that sets their custom attributes
//! ([`attributes`]); everything stored about them as one JSON file ([`export`]);
//! and erasing them ([`erase`]).
//!
//! Their addresses are made in [`paths`]; what they read is the subscriber
//! store's ([`crate::subscribers`]).

mod attribute_fields;
pub(crate) mod attributes;
pub(crate) mod erase;
pub(crate) mod export;
pub(crate) mod list;
pub(crate) mod page;
mod paths;

pub use attributes::{attributes_form_config, change_attributes};
pub use erase::erase_subscriber;
pub use export::export_subscriber;
pub use list::{export_subscribers, subscribers};
pub use page::subscriber_page;
