//! The segment pages behind `/admin/segments`: the saved segments and the
//! builder form ([`list`]), one segment's page, its changes and its
//! deletion ([`segment`]). The form and how its rows become a filter are
//! in [`form`]; what both pages share in [`view`]. What a segment is, and
//! every statement about it, is the subscriber store's
//! ([`crate::subscribers::segments`]).

pub(crate) mod form;
pub(crate) mod list;
mod pages;
pub(crate) mod segment;
mod view;

pub use list::{create_segment, segments};
pub use segment::{delete_segment, segment_page, update_segment};

/// The segment forms' body limit: the JSON box holds up to fifty
/// conditions, which the app-wide limit, sized for the public forms, does
/// not fit.
pub const SEGMENT_BODY_LIMIT_BYTES: usize = 64 * 1024;

pub fn segment_form_config() -> actix_web::web::FormConfig {
    actix_web::web::FormConfig::default()
        .limit(SEGMENT_BODY_LIMIT_BYTES)
        .error_handler(|e, _| crate::web::error::ApiError::from(e).into())
}
