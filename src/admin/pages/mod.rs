//! The accounts' own pages: signing in and out ([`sign_in`], with the form
//! itself in [`sign_in_page`]), and the signed-in admin's password and
//! second factor ([`account`]). [`layout`] builds the navigation every
//! newsroom page shows, these and those in `crate::routes::admin` alike;
//! [`templates`] holds these pages' templates.
//!
//! Every page here is sent with `Cache-Control: no-store`, and every form
//! that changes something carries a CSRF token: the session's
//! ([`crate::admin::guard::Protected`]) or, before there is a session, the
//! sign-in form's ([`crate::admin::sign_in_form`]), on top of the
//! `SameSite=Strict` cookie.

pub mod account;
pub mod layout;
pub mod sign_in;
pub mod sign_in_page;
pub mod templates;
