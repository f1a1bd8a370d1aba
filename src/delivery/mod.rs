//! Email delivery, as the outbox's workers and the campaigns' senders share
//! it. Both loops read a provider's answer through [`answer`]: one
//! classification, so that a refusal means the same wherever the email
//! came from.

pub mod answer;
