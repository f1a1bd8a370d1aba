//! What the email API's answer means for each message of a call: sent,
//! throttled, refused for now, or refused for good. Both delivery loops act
//! on this and on nothing else of the API's answer:
//!
//! - **Throttled** (HTTP 429, or error code 429 for one message) is the
//!   provider asking us to slow down. The message goes again after a pause
//!   and it never counts as an attempt: a busy provider must not use up a
//!   message's attempts and fail it.
//! - **Passing** refusals (a timeout, a refused connection, a 5xx, a wrong
//!   token, an account problem an operator can fix) count as an attempt and
//!   are retried with backoff while attempts remain.
//! - **Refused** for good (an invalid address, an inactive recipient) is
//!   recorded with the provider's code and message, and never retried.

use std::time::Duration;

use crate::email_client::{EmailError, Verdict};
use crate::telemetry::error_chain_line;

/// What became of one message of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Accepted, under the provider's id for it (none from the console).
    Sent(Option<String>),
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

impl Answer {
    /// What the provider decided about one message of a call it took.
    pub fn of(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Accepted { message_id } => Answer::Sent(message_id),
            Verdict::Refused { code: 429, .. } => Answer::Throttled { retry_after: None },
            Verdict::Refused { code, message } => {
                let error = format!("the email API refused it (error {code}): {message}");
                if Verdict::is_transient(code) {
                    Answer::Passing {
                        error,
                        retry_after: None,
                    }
                } else {
                    Answer::Refused(error)
                }
            }
        }
    }

    /// What a call that failed as a whole says of each message in it.
    pub fn of_failed_call(error: &EmailError) -> Self {
        if is_throttling(error) {
            Answer::Throttled {
                retry_after: error.retry_after(),
            }
        } else if error.is_retryable() {
            Answer::Passing {
                error: error_chain_line(error),
                retry_after: error.retry_after(),
            }
        } else {
            Answer::Refused(error_chain_line(error))
        }
    }

    /// Each message's answer, in order, from the outcome of a call that
    /// carried `messages` of them.
    pub fn of_call(outcome: Result<Vec<Verdict>, EmailError>, messages: usize) -> Vec<Self> {
        match outcome {
            Ok(verdicts) => verdicts.into_iter().map(Answer::of).collect(),
            Err(error) => vec![Answer::of_failed_call(&error); messages],
        }
    }

    /// Whether a call that failed as a whole refused its messages for good:
    /// with more than one in it, most likely for one bad message, which
    /// must not fail the others. Each is then sent alone.
    pub fn calls_for_one_by_one(
        outcome: &Result<Vec<Verdict>, EmailError>,
        messages: usize,
    ) -> bool {
        matches!(outcome, Err(error) if messages > 1 && matches!(Answer::of_failed_call(error), Answer::Refused(_)))
    }
}

/// How long a throttled message waits when the provider named no delay.
pub const THROTTLED_PAUSE: Duration = Duration::from_secs(1);

/// A "too many requests" answer, by status or by Postmark's error code.
fn is_throttling(error: &EmailError) -> bool {
    matches!(
        error,
        EmailError::Rejected { status, code, .. }
            if *status == reqwest::StatusCode::TOO_MANY_REQUESTS || *code == Some(429)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: Option<i64>) -> EmailError {
        EmailError::Rejected {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: String::new(),
            code,
            retry_after: Some(Duration::from_secs(3)),
        }
    }

    #[test]
    fn a_rate_limit_is_throttling_by_status_or_by_code_and_never_an_attempt() {
        for (case, error) in [
            ("status 429", rejected(429, None)),
            ("code 429 in a 422", rejected(422, Some(429))),
        ] {
            assert_eq!(
                Answer::of_failed_call(&error),
                Answer::Throttled {
                    retry_after: Some(Duration::from_secs(3))
                },
                "{case}"
            );
        }
        let one_message = Verdict::Refused {
            code: 429,
            message: "Rate limit exceeded".into(),
        };
        assert_eq!(
            Answer::of(one_message),
            Answer::Throttled { retry_after: None }
        );
    }

    #[test]
    fn server_errors_and_account_codes_pass_and_message_codes_are_final() {
        assert!(matches!(
            Answer::of_failed_call(&rejected(503, None)),
            Answer::Passing { .. }
        ));
        assert!(matches!(
            Answer::of_failed_call(&rejected(422, Some(412))),
            Answer::Passing { .. }
        ));
        assert!(matches!(
            Answer::of_failed_call(&rejected(422, Some(300))),
            Answer::Refused(_)
        ));
        let inactive = Verdict::Refused {
            code: 406,
            message: "Inactive recipient".into(),
        };
        assert_eq!(
            Answer::of(inactive),
            Answer::Refused("the email API refused it (error 406): Inactive recipient".into())
        );
    }

    #[test]
    fn only_a_batch_refused_for_good_is_sent_again_one_by_one() {
        let refused: Result<Vec<Verdict>, EmailError> = Err(rejected(422, Some(300)));
        let throttled: Result<Vec<Verdict>, EmailError> = Err(rejected(429, None));
        let down: Result<Vec<Verdict>, EmailError> = Err(rejected(500, None));
        assert!(Answer::calls_for_one_by_one(&refused, 2));
        assert!(
            !Answer::calls_for_one_by_one(&refused, 1),
            "one message is its own answer"
        );
        assert!(!Answer::calls_for_one_by_one(&throttled, 2));
        assert!(!Answer::calls_for_one_by_one(&down, 2));
    }
}
