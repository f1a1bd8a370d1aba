//! The import pages behind `/admin/imports`: the imports so far with the
//! upload form ([`list`]), the upload itself ([`upload`]), one import's
//! page with its report ([`import`]), the live updates that page listens
//! to ([`events`]) and the download of its refused rows ([`refusals`]).
//!
//! What an import is and how it runs lives in [`crate::imports`], which the
//! command line shares; these handlers only receive the file, start the
//! import, and show where it stands.

pub(crate) mod events;
pub(crate) mod import;
pub(crate) mod list;
mod pages;
pub(crate) mod refusals;
pub(crate) mod upload;
mod view;

pub use events::import_events;
pub use import::{import_page, import_script};
pub use list::imports;
pub use refusals::import_refusals;
pub use upload::upload;

pub use crate::imports::upload::ImportUploads;
