//! Outgoing webhooks: calls to the endpoints operators register, made by
//! the delivery engine ([`crate::delivery::engine`]) as it sends emails.
//!
//! - [`signing`]: the Standard Webhooks signature every call carries, and
//!   its check, as a receiver would make it.

pub mod signing;
