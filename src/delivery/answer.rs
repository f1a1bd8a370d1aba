//! What a provider's answer means for each email of a call: sent,
//! throttled, refused for now, or refused for good. Each provider reads its
//! wire's answers into these classes; the engine acts on the classes and on
//! nothing else:
//!
//! - **Throttled** (Postmark's HTTP 429 or error code 429, an SMTP rate
//!   limit reply) is the provider asking us to slow down. The message goes again after a pause
//!   and it never counts as an attempt: a busy provider must not use up a
//!   message's attempts and fail it.
//! - **Passing** refusals (a timeout, a refused connection, a 5xx, a wrong
//!   token, an account problem an operator can fix) count as an attempt and
//!   are retried with backoff while attempts remain.
//! - **Refused** for good (an invalid address, an inactive recipient) is
//!   recorded with the provider's code and message, and never retried.

use std::time::Duration;

/// What became of one message of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted by `provider`, under its id for the email (none from the
    /// console).
    Sent {
        message_id: Option<String>,
        provider: &'static str,
    },
    /// The provider's rate limit: not an attempt.
    Throttled { retry_after: Option<Duration> },
    /// Refused for a reason that may pass: an attempt.
    Passing {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Refused for good, with the reason.
    Refused(String),
}

/// How long a throttled message waits when the provider named no delay.
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);
