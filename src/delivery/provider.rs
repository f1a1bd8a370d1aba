//! What the engine needs of an email provider, whatever the wire: take a
//! batch of emails and say, for each, what became of it ([`Answer`]). Each
//! provider reads its own wire's answers (Postmark's error codes, SMTP's
//! reply codes) into those classes; the engine acts on the classes only.
//!
//! A call can also fail as a whole ([`Failure`]), in which case every email
//! in it gets the same answer, and the failure says whether it looks like
//! the provider is down: that is what opens its circuit and moves sending
//! to the next one (see [`super::failover`]).

use std::time::Duration;

use futures::future::BoxFuture;

use crate::delivery::answer::{Answer, Refusal};
use crate::emails::Email;

/// An email provider: Postmark, an SMTP server, or the local inbox.
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Its name in the configuration, in metrics and in the ledger:
    /// `postmark`, `smtp` or `inbox`.
    fn name(&self) -> &'static str;

    /// The most emails one call may carry.
    fn max_batch(&self) -> usize;

    /// The longest one call can take, however many emails it carries: a
    /// batch's claim must outlast it.
    fn longest_call(&self) -> Duration;

    /// Sends `emails` in one call. `Ok` holds one answer per email, in
    /// order; `Err` means the call failed as a whole.
    fn send<'a>(&'a self, emails: &'a [&'a Email]) -> BoxFuture<'a, Result<Vec<Answer>, Failure>>;
}

/// A call that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What it means for every email in the call.
    pub answer: Answer,
    /// Whether the provider looks down rather than unhappy with these
    /// emails: the connection refused or timed out, a 5xx, refused
    /// credentials, an account on hold. Only such failures count towards
    /// opening its circuit.
    pub down: bool,
}

impl Failure {
    /// The provider cannot take mail now, for a reason that may pass.
    pub fn down(error: Refusal) -> Self {
        Self {
            answer: Answer::Passing {
                error,
                retry_after: None,
            },
            down: true,
        }
    }
}
