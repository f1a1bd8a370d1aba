//! The providers of a stream, in the configured order, each behind a
//! circuit breaker. A call goes to the first provider whose circuit lets
//! it through:
//!
//! - **Closed**: the provider is in use. A failure that says it is down
//!   ([`Failure::down`]: refused connection, timeout, 5xx, refused
//!   credentials, an account on hold) counts; `open_after` of them in a row
//!   open the circuit. Any other answer, a refusal of one email included,
//!   shows the provider up and resets the count.
//! - **Open**: skipped, so sending moves to the next provider at once,
//!   until `probe_after` has passed.
//! - **Half-open**: one call, the probe, goes through; the others skip the
//!   provider meanwhile. The probe's answer closes the circuit again or
//!   keeps it open for another `probe_after`. Since the first provider is
//!   always tried first, sending returns to it as soon as a probe passes.
//!
//! A call that finds a provider down goes on to the next one at once, in
//! the same call, while the batch's claim has time left: the emails were
//! not taken (or, after a timeout, possibly taken: then the next provider
//! may send them again, at most this one batch). When every circuit is
//! open the call sends nothing and answers "throttled" until the next
//! probe is due: an outage of every provider uses up no email's attempts,
//! and nothing is lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::delivery::answer::{Answer, Refusal};
use crate::delivery::provider::{Failure, Provider};
use crate::emails::Email;
use crate::metrics::Metrics;

/// When a circuit opens and when it is probed.
#[derive(Debug, Clone, Copy)]
pub struct Breaker {
    /// Consecutive "down" failures that open a circuit.
    pub open_after: u32,
    /// How long an open circuit waits before it lets a probe through.
    pub probe_after: Duration,
}

/// A circuit's state, as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        probe_at: Instant,
    },
    /// A probe is in flight.
    HalfOpen,
}

/// A provider and the state of its circuit. One per provider in a
/// process, shared by every stream that lists it: a provider found down on
/// one stream is skipped on the other too.
#[derive(Debug)]
pub struct Circuit {
    provider: Arc<dyn Provider>,
    state: Mutex<State>,
}

impl Circuit {
    pub fn new(provider: Arc<dyn Provider>) -> Arc<Self> {
        Arc::new(Self {
            provider,
            state: Mutex::new(State::Closed { failures: 0 }),
        })
    }
}

/// A stream's providers, in order; cheap to clone, shared by every task of
/// the process so that they all see one circuit per provider.
#[derive(Debug, Clone)]
pub struct Providers {
    circuits: Arc<[Arc<Circuit>]>,
    breaker: Breaker,
    metrics: Metrics,
}

/// What letting a call through a circuit gave.
enum Admission {
    Let,
    /// Half-open: this call is the probe.
    Probe,
    /// Open: skipped until the probe is due.
    Skip {
        probe_at: Option<Instant>,
    },
}

impl Providers {
    /// Fails on an empty list: a stream needs a provider.
    pub fn new(
        circuits: Vec<Arc<Circuit>>,
        breaker: Breaker,
        metrics: Metrics,
    ) -> Result<Self, anyhow::Error> {
        if circuits.is_empty() {
            anyhow::bail!("a stream needs at least one email provider");
        }
        for circuit in &circuits {
            metrics.provider_circuit(circuit.provider.name(), circuit.state());
        }
        Ok(Self {
            circuits: circuits.into(),
            breaker,
            metrics,
        })
    }

    /// The most emails a call may carry: the smallest of the providers'.
    pub fn max_batch(&self) -> usize {
        self.circuits
            .iter()
            .map(|circuit| circuit.provider.max_batch())
            .min()
            .unwrap_or(1)
    }

    /// The longest one call can take, over every provider it may try.
    pub fn longest_call(&self) -> Duration {
        self.circuits
            .iter()
            .map(|circuit| circuit.provider.longest_call())
            .max()
            .unwrap_or_default()
    }

    /// The providers' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.circuits
            .iter()
            .map(|circuit| circuit.provider.name())
            .collect()
    }

    /// Each provider's circuit state, in order.
    pub fn states(&self) -> Vec<(&'static str, CircuitState)> {
        self.circuits
            .iter()
            .map(|circuit| (circuit.provider.name(), circuit.state()))
            .collect()
    }

    /// Sends `emails` through the first provider that takes calls, moving
    /// on while providers are down and `send_by` allows. One answer per
    /// email, each `Sent` naming the provider that took it.
    pub async fn send(&self, emails: &[&Email], send_by: Instant) -> Result<Vec<Answer>, Failure> {
        let mut last_failure = None;
        let mut next_probe: Option<Instant> = None;
        for circuit in self.circuits.iter() {
            if last_failure.is_some() && Instant::now() >= send_by {
                break;
            }
            let probing = match self.admit(circuit) {
                Admission::Skip { probe_at } => {
                    next_probe = match (next_probe, probe_at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    continue;
                }
                Admission::Let => false,
                Admission::Probe => true,
            };
            let name = circuit.provider.name();
            let outcome = if probing && emails.len() > 1 {
                self.probe(circuit, emails, send_by).await
            } else {
                circuit.provider.send(emails).await
            };
            match outcome {
                Err(failure) if failure.down => {
                    self.metrics.provider_failure(name, "down");
                    tracing::warn!(
                        provider = name,
                        error = ?failure.answer,
                        "The email provider looks down; trying the next one"
                    );
                    self.failed(circuit);
                    last_failure = Some(failure);
                }
                outcome => {
                    self.succeeded(circuit);
                    self.count(name, emails, &outcome);
                    return outcome;
                }
            }
        }
        match (last_failure, self.next_probe()) {
            // Every circuit open, this call's failures included: the
            // outage is no fault of the emails. They wait for the next
            // probe without counting an attempt, however long it lasts.
            (Some(failure), Some(probe_at)) if failure.down => Err(wait_for(probe_at)),
            (Some(failure), _) => Err(failure),
            (None, probe_at) => {
                Err(wait_for(probe_at.or(next_probe).unwrap_or_else(|| {
                    Instant::now() + self.breaker.probe_after
                })))
            }
        }
    }

    /// When the next probe is due, if every circuit is open.
    fn next_probe(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for circuit in self.circuits.iter() {
            match *circuit.state.lock().expect("never poisoned") {
                State::Closed { .. } => return None,
                State::Open { probe_at } => {
                    earliest = Some(earliest.map_or(probe_at, |e| e.min(probe_at)))
                }
                State::HalfOpen => {}
            }
        }
        earliest
    }

    /// A probe carries one email: should it time out, only that one may
    /// go twice, through the next provider. Once the provider has answered
    /// it, the rest of the batch follows, while the claim leaves time for
    /// it; what is left then goes again, no attempt counted.
    async fn probe(
        &self,
        circuit: &Circuit,
        emails: &[&Email],
        send_by: Instant,
    ) -> Result<Vec<Answer>, Failure> {
        let mut answers = match circuit.provider.send(&emails[..1]).await {
            Ok(answers) => answers,
            Err(failure) if failure.down => return Err(failure),
            Err(failure) => vec![failure.answer],
        };
        let rest = &emails[1..];
        if Instant::now() >= send_by {
            answers.extend(vec![Answer::Throttled { retry_after: None }; rest.len()]);
            return Ok(answers);
        }
        match circuit.provider.send(rest).await {
            Ok(more) => answers.extend(more),
            // Refused as a whole, most likely for one bad email: each goes
            // alone, as the engine would do it, while time allows.
            Err(Failure {
                answer: Answer::Refused(_),
                ..
            }) if rest.len() > 1 => {
                for email in rest {
                    if Instant::now() >= send_by {
                        answers.push(Answer::Throttled { retry_after: None });
                        continue;
                    }
                    answers.push(match circuit.provider.send(&[email]).await {
                        Ok(mut answer) => answer.pop().unwrap_or(Answer::Passing {
                            error: Refusal::new("the provider gave no answer for the email"),
                            retry_after: None,
                        }),
                        Err(failure) => failure.answer,
                    });
                }
            }
            Err(failure) => answers.extend(vec![failure.answer; rest.len()]),
        }
        Ok(answers)
    }

    fn admit(&self, circuit: &Circuit) -> Admission {
        let mut state = circuit.state.lock().expect("never poisoned");
        match *state {
            State::Closed { .. } => Admission::Let,
            State::Open { probe_at } if Instant::now() >= probe_at => {
                *state = State::HalfOpen;
                drop(state);
                self.metrics
                    .provider_circuit(circuit.provider.name(), CircuitState::HalfOpen);
                tracing::info!(
                    provider = circuit.provider.name(),
                    "Probing an email provider whose circuit was open"
                );
                Admission::Probe
            }
            State::Open { probe_at } => Admission::Skip {
                probe_at: Some(probe_at),
            },
            State::HalfOpen => Admission::Skip { probe_at: None },
        }
    }

    fn failed(&self, circuit: &Circuit) {
        let mut state = circuit.state.lock().expect("never poisoned");
        let opens = match *state {
            State::Closed { failures } if failures + 1 < self.breaker.open_after => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            _ => true,
        };
        if opens {
            let was_open = !matches!(*state, State::Closed { .. });
            *state = State::Open {
                probe_at: Instant::now() + self.breaker.probe_after,
            };
            drop(state);
            self.metrics
                .provider_circuit(circuit.provider.name(), CircuitState::Open);
            if !was_open {
                tracing::error!(
                    provider = circuit.provider.name(),
                    probe_in_ms = self.breaker.probe_after.as_millis() as u64,
                    "Email provider circuit opened: sending moves to the next provider"
                );
            }
        }
    }

    fn succeeded(&self, circuit: &Circuit) {
        let mut state = circuit.state.lock().expect("never poisoned");
        let was_closed = matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        drop(state);
        if !was_closed {
            self.metrics
                .provider_circuit(circuit.provider.name(), CircuitState::Closed);
            tracing::info!(
                provider = circuit.provider.name(),
                "Email provider answered again: its circuit is closed"
            );
        }
    }

    /// Emails sent per stream and failures by class, for `provider`.
    fn count(
        &self,
        provider: &'static str,
        emails: &[&Email],
        outcome: &Result<Vec<Answer>, Failure>,
    ) {
        match outcome {
            Ok(answers) => {
                for (email, answer) in emails.iter().zip(answers) {
                    match answer {
                        Answer::Sent { .. } => {
                            self.metrics
                                .provider_sent(provider, &email.message_stream, 1)
                        }
                        other => self.metrics.provider_failure(provider, class(other)),
                    }
                }
            }
            Err(failure) => self
                .metrics
                .provider_failure(provider, class(&failure.answer)),
        }
    }
}

impl Circuit {
    fn state(&self) -> CircuitState {
        match *self.state.lock().expect("never poisoned") {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

/// Nothing was sent: every provider is down until `probe_at`.
fn wait_for(probe_at: Instant) -> Failure {
    let retry_after = probe_at.saturating_duration_since(Instant::now());
    Failure {
        answer: Answer::Throttled {
            retry_after: Some(retry_after.max(Duration::from_millis(100))),
        },
        down: true,
    }
}

/// The failure class an answer counts under.
fn class(answer: &Answer) -> &'static str {
    match answer {
        Answer::Sent { .. } => "none",
        Answer::Throttled { .. } => "throttled",
        Answer::Passing { .. } => "passing",
        Answer::Refused(_) => "refused",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::domain::SubscriberEmail;
    use crate::emails::EmailContent;

    /// A provider that is down while `down` is set, and takes every email
    /// otherwise; it counts the calls it gets.
    #[derive(Debug)]
    struct Switchable {
        name: &'static str,
        down: AtomicBool,
        calls: AtomicUsize,
        /// The size of each call, in order.
        sizes: std::sync::Mutex<Vec<usize>>,
    }

    impl Switchable {
        fn new(name: &'static str) -> Arc<Self> {
            Arc::new(Self {
                name,
                down: AtomicBool::new(false),
                calls: AtomicUsize::new(0),
                sizes: std::sync::Mutex::new(Vec::new()),
            })
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, Ordering::SeqCst);
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Provider for Switchable {
        fn name(&self) -> &'static str {
            self.name
        }

        fn max_batch(&self) -> usize {
            500
        }

        fn longest_call(&self) -> Duration {
            Duration::from_secs(1)
        }

        fn send<'a>(
            &'a self,
            emails: &'a [&'a Email],
        ) -> BoxFuture<'a, Result<Vec<Answer>, Failure>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.sizes.lock().unwrap().push(emails.len());
                if self.down.load(Ordering::SeqCst) {
                    return Err(Failure::down(Refusal::new("connection refused")));
                }
                Ok(emails
                    .iter()
                    .map(|_| Answer::Sent {
                        message_id: None,
                        provider: self.name,
                        code: None,
                    })
                    .collect())
            })
        }
    }

    fn email() -> Email {
        Email {
            to: SubscriberEmail::parse("reader@example.com").unwrap(),
            content: EmailContent {
                subject: "Hi".into(),
                html_body: "<p>Hi</p>".into(),
                text_body: "Hi".into(),
            },
            message_stream: "outbound".into(),
            delivery: None,
            outbox_id: None,
            unsubscribe: None,
        }
    }

    fn providers(list: &[&Arc<Switchable>], probe_after: Duration) -> Providers {
        let list = list
            .iter()
            .map(|p| Circuit::new(Arc::clone(p) as Arc<dyn Provider>))
            .collect();
        let breaker = Breaker {
            open_after: 2,
            probe_after,
        };
        Providers::new(list, breaker, Metrics::default()).unwrap()
    }

    async fn send(providers: &Providers) -> Result<Vec<Answer>, Failure> {
        let email = email();
        let far = Instant::now() + Duration::from_secs(60);
        providers.send(&[&email], far).await
    }

    fn sent_by(outcome: Result<Vec<Answer>, Failure>) -> &'static str {
        match outcome.unwrap().pop().unwrap() {
            Answer::Sent { provider, .. } => provider,
            other => panic!("not sent: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_call_that_finds_the_first_provider_down_is_sent_by_the_next_at_once() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::from_secs(60));
        first.set_down(true);

        assert_eq!(sent_by(send(&providers).await), "smtp");
        assert_eq!(providers.states()[0].1, CircuitState::Closed, "one failure");
        assert_eq!(sent_by(send(&providers).await), "smtp");
        assert_eq!(providers.states()[0].1, CircuitState::Open, "two in a row");

        // Open: the first provider is not even tried.
        let calls = first.calls();
        assert_eq!(sent_by(send(&providers).await), "smtp");
        assert_eq!(first.calls(), calls);
    }

    #[tokio::test]
    async fn once_the_probe_is_due_a_provider_that_answers_again_takes_sending_back() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        // The probe is due as soon as the circuit opens.
        let providers = providers(&[&first, &second], Duration::ZERO);
        first.set_down(true);
        send(&providers).await.unwrap();
        send(&providers).await.unwrap();
        assert_eq!(providers.states()[0].1, CircuitState::Open);

        first.set_down(false);
        assert_eq!(sent_by(send(&providers).await), "postmark");
        assert_eq!(providers.states()[0].1, CircuitState::Closed);
    }

    #[tokio::test]
    async fn a_probe_that_fails_keeps_the_circuit_open_for_another_wait() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::ZERO);
        first.set_down(true);
        send(&providers).await.unwrap();
        send(&providers).await.unwrap();
        let calls = first.calls();

        assert_eq!(sent_by(send(&providers).await), "smtp", "the probe failed");
        assert_eq!(first.calls(), calls + 1, "the probe went to the first");
        assert_eq!(providers.states()[0].1, CircuitState::Open);
    }

    #[tokio::test]
    async fn a_probe_risks_one_email_and_the_rest_of_the_batch_follows_once_it_is_answered() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::ZERO);
        first.set_down(true);
        send(&providers).await.unwrap();
        send(&providers).await.unwrap();
        let batch = [email(), email(), email()];
        let batch: Vec<&Email> = batch.iter().collect();
        let far = Instant::now() + Duration::from_secs(60);

        // The probe fails: only one email went to the first provider.
        let answers = providers.send(&batch, far).await.unwrap();
        assert_eq!(first.sizes.lock().unwrap().last(), Some(&1));
        assert_eq!(second.sizes.lock().unwrap().last(), Some(&3));
        assert_eq!(answers.len(), 3);

        // The probe passes: the rest follow it through the first provider.
        first.set_down(false);
        let answers = providers.send(&batch, far).await.unwrap();
        let sizes = first.sizes.lock().unwrap().clone();
        assert_eq!(sizes[sizes.len() - 2..], [1, 2]);
        assert!(answers.iter().all(|a| matches!(
            a,
            Answer::Sent {
                provider: "postmark",
                ..
            }
        )));
    }

    #[tokio::test]
    async fn a_probe_past_the_claims_deadline_sends_its_one_email_and_leaves_the_rest_unsent() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::ZERO);
        first.set_down(true);
        send(&providers).await.unwrap();
        send(&providers).await.unwrap();
        first.set_down(false);
        let batch = [email(), email(), email()];
        let batch: Vec<&Email> = batch.iter().collect();

        let answers = providers.send(&batch, Instant::now()).await.unwrap();

        assert_eq!(first.sizes.lock().unwrap().last(), Some(&1));
        assert!(matches!(
            answers[0],
            Answer::Sent {
                provider: "postmark",
                ..
            }
        ));
        // Not sent: they go again without an attempt counted.
        assert!(
            answers[1..]
                .iter()
                .all(|a| matches!(a, Answer::Throttled { .. }))
        );
    }

    #[tokio::test]
    async fn with_every_circuit_open_nothing_is_tried_and_the_emails_wait_for_the_probe() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::from_secs(30));
        first.set_down(true);
        second.set_down(true);
        // Before the circuits open, a failed call is an attempt...
        let failure = send(&providers).await.unwrap_err();
        assert!(
            matches!(failure.answer, Answer::Passing { .. }),
            "{failure:?}"
        );
        // ...and the call that opens the last of them is not.
        let failure = send(&providers).await.unwrap_err();
        assert!(
            matches!(failure.answer, Answer::Throttled { .. }),
            "{failure:?}"
        );
        let calls = (first.calls(), second.calls());

        let failure = send(&providers).await.unwrap_err();

        assert_eq!((first.calls(), second.calls()), calls);
        match failure.answer {
            // Throttled: the wait uses up none of the emails' attempts.
            Answer::Throttled {
                retry_after: Some(wait),
            } => assert!(wait <= Duration::from_secs(30) && wait > Duration::from_secs(25)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_provider_past_the_claims_deadline_is_not_tried_after_a_failure() {
        let (first, second) = (Switchable::new("postmark"), Switchable::new("smtp"));
        let providers = providers(&[&first, &second], Duration::from_secs(60));
        first.set_down(true);
        let email = email();

        let outcome = providers.send(&[&email], Instant::now()).await;

        assert!(outcome.unwrap_err().down);
        assert_eq!(second.calls(), 0, "its call could outlast the claim");
    }
}
