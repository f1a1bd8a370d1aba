//! Outgoing webhooks: calls to the endpoints operators register, made by
//! the delivery engine ([`crate::delivery::engine`]) as it sends emails.
//!
//! - [`signing`]: the Standard Webhooks signature every call carries, and
//!   its check, as a receiver would make it.
//! - [`client`]: the HTTP client that makes the calls, which never reaches
//!   an internal address, and what an endpoint's answer means.

pub mod client;
pub mod signing;
