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
//!   recorded with the provider's codes, and never retried.
//!
//! A refusal is a [`Refusal`]: codes and reasons from a closed set, never
//! the provider's own words. Those (Postmark's `Message`, an SMTP reply's
//! text, an error body) often quote the recipient's address, and what is
//! recorded outlives the recipient: an erasure must not have to find an
//! address inside prose, so no prose is kept.

use std::fmt;
use std::time::Duration;

/// What became of one message of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted by `provider`, under its id for the email, if it gave
    /// one, and with the code it answered when that is worth keeping (a
    /// webhook endpoint's 2xx, which the endpoint's page shows).
    Sent {
        message_id: Option<String>,
        provider: &'static str,
        code: Option<Code>,
    },
    /// The provider's rate limit: not an attempt.
    Throttled { retry_after: Option<Duration> },
    /// Refused for a reason that may pass: an attempt.
    Passing {
        error: Refusal,
        retry_after: Option<Duration>,
    },
    /// Refused for good, with the reason.
    Refused(Refusal),
}

/// Why a message was not taken, as an operator reads it on the issue and
/// subscriber pages: what happened, the codes the provider answered with,
/// and what the codes mean. Every part is fixed text or a number, so that
/// no address can reach the columns it is stored in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    what: &'static str,
    code: Option<Code>,
    reason: Option<&'static str>,
}

/// The codes of a provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Postmark's `ErrorCode` for one message.
    Postmark(i64),
    /// An HTTP status, with Postmark's `ErrorCode` when the body held one.
    Http {
        status: u16,
        error_code: Option<i64>,
    },
    /// An SMTP reply code, with its enhanced status code (RFC 3463) when
    /// the reply began with one.
    Smtp {
        reply: u16,
        enhanced: Option<[u16; 3]>,
    },
}

impl Refusal {
    /// `what` happened, with no code: a timeout, a connection refused.
    pub const fn new(what: &'static str) -> Self {
        Self {
            what,
            code: None,
            reason: None,
        }
    }

    pub const fn with_code(self, code: Code) -> Self {
        Self {
            code: Some(code),
            ..self
        }
    }

    /// What the code means, or why there is none.
    pub const fn because(self, reason: &'static str) -> Self {
        Self {
            reason: Some(reason),
            ..self
        }
    }

    pub fn code(&self) -> Option<Code> {
        self.code
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        match self.code {
            None => {}
            Some(Code::Postmark(code)) => write!(f, " (error {code})")?,
            Some(Code::Http {
                status,
                error_code: None,
            }) => write!(f, " ({status})")?,
            Some(Code::Http {
                status,
                error_code: Some(code),
            }) => write!(f, " ({status}, error {code})")?,
            Some(Code::Smtp {
                reply,
                enhanced: None,
            }) => write!(f, " ({reply})")?,
            Some(Code::Smtp {
                reply,
                enhanced: Some([class, subject, detail]),
            }) => write!(f, " ({reply} {class}.{subject}.{detail})")?,
        }
        if let Some(reason) = self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// What a message whose stored recipient no longer parses as an address
/// says as its error. The parser's own reason quotes the address.
pub const INVALID_RECIPIENT: &str = "invalid recipient: not an address this service sends to";

/// How long a throttled message waits when the provider named no delay.
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// How long a throttled message waits: what the provider asked for, a
/// second if it named nothing, never more than `longest` (a send loop's
/// longest backoff).
pub fn throttled_delay(retry_after: Option<Duration>, longest: Duration) -> Duration {
    retry_after.unwrap_or(THROTTLED_PAUSE).min(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_what_happened_its_codes_and_their_meaning() {
        for (refusal, expected) in [
            (Refusal::new("timed out"), "timed out"),
            (
                Refusal::new("the email API refused it")
                    .with_code(Code::Postmark(406))
                    .because("inactive recipient"),
                "the email API refused it (error 406): inactive recipient",
            ),
            (
                Refusal::new("the email API refused the request").with_code(Code::Http {
                    status: 422,
                    error_code: Some(300),
                }),
                "the email API refused the request (422, error 300)",
            ),
            (
                Refusal::new("the SMTP server refused it")
                    .with_code(Code::Smtp {
                        reply: 550,
                        enhanced: Some([5, 1, 1]),
                    })
                    .because("bad destination mailbox address"),
                "the SMTP server refused it (550 5.1.1): bad destination mailbox address",
            ),
        ] {
            assert_eq!(refusal.to_string(), expected);
        }
    }
}
