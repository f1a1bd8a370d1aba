//! HTTP handlers, one module per resource. Each handler parses its input into
//! domain types, runs its steps, and answers; failures go through
//! [`error::ApiError`].

mod error;
mod health_check;
mod home;
mod readiness;
mod subscriptions;
mod subscriptions_confirm;

pub use error::ApiError;
pub use health_check::health_check;
pub use home::{home, stylesheet};
pub use readiness::readiness;
pub use subscriptions::{FORM_BODY_LIMIT_BYTES, SubscriptionOptions, subscribe};
pub use subscriptions_confirm::{confirm, confirm_with_button};
