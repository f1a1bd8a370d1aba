//! Outgoing webhooks: an admin registers endpoints (a URL, the events to
//! send, a secret shown once), and every event an endpoint asked for is
//! sent to it, signed, at least once, retried with backoff for over a day.
//!
//! - [`events`]: the events and [`events::emit`], which the stores call in
//!   the transaction of the change;
//! - [`endpoints`]: the endpoints' table;
//! - [`deliveries`]: one row per endpoint and event, claimed and settled by
//!   the delivery engine's webhook source;
//! - [`control`]: enabling, disabling and deleting an endpoint, which
//!   touches both tables, in one order;
//! - [`source`]: that source, and the carrier that makes its calls through
//!   [`client`], signed by [`signing`].

pub mod client;
pub mod control;
pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod signing;
pub mod source;
