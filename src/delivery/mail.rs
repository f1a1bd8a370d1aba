//! The email carrier: how the engine ([`super::engine`]) sends emails.
//! Everything here is what emails need and webhook calls do not: each
//! message stream's throttle, booked on the fleet's schedule before the
//! send; one call per stream through its providers, with failover
//! ([`Routes`]); and a whole batch refused for good sent again one email
//! at a time, since one bad email must not fail the others.

use std::time::{Duration, Instant};

use crate::delivery::Routes;
use crate::delivery::answer::Answer;
use crate::delivery::engine::{Booked, Carrier, in_time};
use crate::delivery::throttle::{Booking, Throttles};
use crate::emails::Email;

/// Emails, through each stream's providers under each stream's throttle.
#[derive(Clone)]
pub struct Mail {
    routes: Routes,
    throttles: Throttles,
}

impl Mail {
    pub fn new(routes: Routes, throttles: Throttles) -> Self {
        Self { routes, throttles }
    }

    /// Sends one stream's emails in one call through its providers.
    async fn send_stream(
        &self,
        stream: &str,
        batch: &[&Email],
        send_by: Instant,
    ) -> Vec<Option<Answer>> {
        if !in_time(send_by, batch.len()) {
            return vec![None; batch.len()];
        }
        let providers = self.routes.of(stream);
        // Every provider down is no reason to slow the stream's rate down:
        // only a provider's own throttling answers are.
        let mut every_provider_down = false;
        let answers = match providers.send(batch, send_by).await {
            Ok(answers) => answers.into_iter().map(Some).collect(),
            Err(failure) if batch.len() > 1 && matches!(failure.answer, Answer::Refused(_)) => {
                tracing::warn!(
                    error = ?failure.answer,
                    "A whole batch was refused; sending its emails one at a time"
                );
                let mut answers = Vec::with_capacity(batch.len());
                for (n, email) in batch.iter().enumerate() {
                    if !in_time(send_by, batch.len() - n) {
                        answers.resize(batch.len(), None);
                        break;
                    }
                    answers.push(match providers.send(&[email], send_by).await {
                        Ok(mut answers) => answers.pop(),
                        Err(failure) => Some(failure.answer),
                    });
                }
                answers
            }
            Err(failure) => {
                every_provider_down = failure.down;
                vec![Some(failure.answer); batch.len()]
            }
        };
        let sent = answers
            .iter()
            .filter(|answer| matches!(answer, Some(Answer::Sent { .. })))
            .count();
        if !every_provider_down
            && answers
                .iter()
                .any(|answer| matches!(answer, Some(Answer::Throttled { .. })))
        {
            self.throttles.throttled(stream);
        } else if sent > 0 {
            self.throttles.accepted(stream);
        }
        if sent > 0 {
            tracing::info!(stream, sent, "Emails accepted by the provider");
        }
        answers
    }
}

impl Carrier<Email> for Mail {
    /// Books the emails on their streams' throttles. The ones whose stream
    /// is booked beyond what the claim allows are answered as throttled:
    /// they go again when it has room.
    async fn book(&self, emails: &[&Email], send_by: Instant) -> Booked {
        // Less a margin, so that the turn leaves time to check who still
        // wants the emails and to start the call before `send_by`.
        let patience = send_by
            .saturating_duration_since(Instant::now())
            .mul_f64(0.9);
        let mut wait = Duration::ZERO;
        let mut full: Vec<(String, Duration)> = Vec::new();
        let mut streams: Vec<(&str, usize)> = Vec::new();
        for email in emails {
            match streams
                .iter_mut()
                .find(|(stream, _)| *stream == email.message_stream)
            {
                Some((_, count)) => *count += 1,
                None => streams.push((&email.message_stream, 1)),
            }
        }
        for (stream, count) in streams {
            match self.throttles.book(stream, count, patience).await {
                Booking::Booked { wait: turn } => wait = wait.max(turn),
                Booking::Full { free_in } => {
                    // Due again a little before the schedule has room, so
                    // that the next claim can book it.
                    full.push((stream.to_owned(), free_in.saturating_sub(patience / 2)));
                }
            }
        }
        let answered = emails
            .iter()
            .enumerate()
            .filter_map(|(place, email)| {
                full.iter()
                    .find(|(stream, _)| *stream == email.message_stream)
                    .map(|(_, free_in)| {
                        (
                            place,
                            Answer::Throttled {
                                retry_after: Some(*free_in),
                            },
                        )
                    })
            })
            .collect();
        Booked { wait, answered }
    }

    /// One call per stream; each email's answer in order, `None` for those
    /// not sent because the claim ran short of time.
    async fn send(&self, emails: &[&Email], send_by: Instant) -> Vec<Option<Answer>> {
        let mut answers: Vec<Option<Answer>> = vec![None; emails.len()];
        let mut streams: Vec<&str> = Vec::new();
        for email in emails {
            if !streams.contains(&email.message_stream.as_str()) {
                streams.push(&email.message_stream);
            }
        }
        for stream in streams {
            let (places, batch): (Vec<usize>, Vec<&Email>) = emails
                .iter()
                .enumerate()
                .filter(|(_, email)| email.message_stream == stream)
                .map(|(place, email)| (place, *email))
                .unzip();
            let stream_answers = self.send_stream(stream, &batch, send_by).await;
            for (place, answer) in places.into_iter().zip(stream_answers) {
                answers[place] = answer;
            }
        }
        answers
    }
}
