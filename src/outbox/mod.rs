//! The transactional outbox. A handler that needs an email sent writes it to
//! the `email_outbox` table inside its own transaction ([`enqueue`]); once
//! that transaction commits, the email will be delivered even if the email
//! API is down at that moment or the process dies. Delivery workers
//! ([`DeliveryWorker`]) claim due messages with `FOR UPDATE SKIP LOCKED`, so
//! any number of them across any number of replicas share the table safely,
//! send them, and record the outcome: sent, retry later with backoff, or
//! failed for good (kept, with the last error, for an operator).
//!
//! A handler in a process that runs workers hands its email straight to them
//! ([`Handoff`]). Otherwise workers wake when a message is committed
//! ([`Doorbell`]), and also poll, so a missed wake-up only delays a message
//! by one poll interval.

mod backoff;
mod doorbell;
mod handoff;
mod store;
mod worker;

pub use doorbell::Doorbell;
pub use handoff::{Handoff, HandoffQueue, Slot};
pub use store::{ClaimedEmail, OutgoingEmail, claim_due, enqueue};
pub use worker::{DeliveryWorker, spawn_workers};
