//! The list pages behind `/admin/lists`: every list with its counts and
//! the form that makes one ([`index`]); one list's page, where it is
//! renamed, described, opened to the public form or not, and given double
//! opt-in or not ([`edit`]); its welcome email ([`welcome`]); and
//! archiving it or bringing it back ([`archive`]).
//!
//! What a list is, and every statement on it, is the subscriber store's
//! ([`crate::subscribers::lists`]); the counts come from the one function
//! that reads them ([`crate::subscribers::memberships::counts_by_list`]).
//! What the admin types is parsed once, in [`form`], into the domain's
//! [`crate::domain::ListName`] and [`crate::domain::ListDescription`].
//! Every change is written to the audit log in the transaction that makes
//! it.

pub(crate) mod archive;
pub(crate) mod edit;
mod form;
pub(crate) mod index;
mod pages;
pub(crate) mod welcome;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use uuid::Uuid;

use crate::admin::guard::SignedIn;
use crate::admin::pages::layout::nav;
use crate::pages::page;
use crate::subscribers::lists::List;
use pages::ListMissingPage;

pub use archive::{archive_list, unarchive_list};
pub use edit::{list_page, update_list};
pub use form::list_form_config;
pub use index::{create_list, lists};
pub use welcome::{update_welcome, welcome_form_config};

/// Where a list's page is.
pub fn list_path(id: Uuid) -> String {
    format!("/admin/lists/{id}")
}

/// A list id from an address. Anything that is not one names no list.
fn parse_list_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

/// A list as its audit entries name it: by name, which is what the admin
/// reads, and by id, which stays when the name changes.
fn audited(list: &List) -> String {
    format!("{} ({})", list.name, list.id)
}

/// 404: `malformed` when the address held no list id at all.
fn missing(admin: &SignedIn, malformed: bool) -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &ListMissingPage {
            newsletter: &admin.newsletter,
            nav: nav(admin),
            malformed,
        },
    )
}
