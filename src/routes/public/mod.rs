//! The public side: the home page with its form, signing up
//! ([`subscribe`], through the steps in [`sign_up`]), confirming, a
//! reader's own page of lists ([`preferences`]), unsubscribing, and the
//! public archive with its feed ([`archive`]). Nothing here needs a session; what may be tried how
//! often is the rate limits' business.

pub(crate) mod archive;
pub(crate) mod confirm;
mod confirmation_limit;
pub(crate) mod home;
pub(crate) mod preferences;
pub(crate) mod sign_up;
pub(crate) mod subscribe;
pub(crate) mod unsubscribe;

pub use confirm::{confirm, confirm_with_button};
pub use confirmation_limit::limit_confirmations;
pub use home::{home, stylesheet};
pub use subscribe::{FORM_BODY_LIMIT_BYTES, SubscriptionOptions, subscribe};
