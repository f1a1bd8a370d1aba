//! The subscriber pages behind `/admin/subscribers`: the list, its search
//! and its CSV export ([`list`]); one subscriber's page, with their consent,
//! their place on the suppression list and the issues sent to them
//! ([`page`]); everything stored about them as one JSON file ([`export`]);
//! and erasing them ([`erase`]).
//!
//! The reads that the page and the export share are in [`record`].

pub(crate) mod erase;
pub(crate) mod export;
pub(crate) mod list;
pub(crate) mod page;
mod record;

pub use erase::erase_subscriber;
pub use export::export_subscriber;
pub use list::{export_subscribers, subscribers};
pub use page::subscriber_page;
