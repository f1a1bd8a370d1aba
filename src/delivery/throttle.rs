//! One sending rate per stream for the whole fleet. Every sender, in every process,
//! books its batch on one schedule kept in Redis before sending it: a batch
//! of n messages takes n intervals of the schedule (the interval being one
//! second divided by the cap), and the sender waits until its booking
//! starts. Adding replicas adds senders, never rate.
//!
//! The email API saying "too many requests" slows this process down: each
//! message then books more of the schedule (up to [`MAX_SLOWDOWN`] times
//! its share), and each batch the API takes brings the rate back up step by
//! step. Throttling answers never fail a campaign.
//!
//! Without Redis the schedule is kept in this process, at the full cap, and
//! the outage is logged once: sending goes on, and should several replicas
//! then exceed the cap together, the API's throttling answers slow them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

/// The most a process slows itself down after throttling answers.
pub const MAX_SLOWDOWN: f64 = 16.0;

/// How long Redis has to answer a booking before the process books locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// What booking a batch on the schedule gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booking {
    /// Booked: send after `wait`.
    Booked { wait: Duration },
    /// Nothing booked: the schedule is full for `free_in`, longer than the
    /// caller could wait.
    Full { free_in: Duration },
}

/// The throttles of the streams that have one; a stream without one (the
/// transactional stream, by default) sends as fast as its providers take.
#[derive(Clone, Default)]
pub struct Throttles {
    streams: Vec<(String, Arc<Throttle>)>,
}

impl Throttles {
    /// Adds a throttle for `stream`.
    pub fn with(mut self, stream: &str, throttle: Throttle) -> Self {
        self.streams.push((stream.to_owned(), Arc::new(throttle)));
        self
    }

    fn of(&self, stream: &str) -> Option<&Throttle> {
        self.streams
            .iter()
            .find(|(name, _)| name == stream)
            .map(|(_, throttle)| throttle.as_ref())
    }

    /// Books `messages` of `stream`; at once for a stream without a
    /// throttle.
    pub async fn book(&self, stream: &str, messages: usize, patience: Duration) -> Booking {
        match self.of(stream) {
            Some(throttle) => throttle.book(messages, patience).await,
            None => Booking::Booked {
                wait: Duration::ZERO,
            },
        }
    }

    /// A provider asked `stream`'s sending to slow down.
    pub fn throttled(&self, stream: &str) {
        if let Some(throttle) = self.of(stream) {
            throttle.throttled();
        }
    }

    /// A provider took emails of `stream`.
    pub fn accepted(&self, stream: &str) {
        if let Some(throttle) = self.of(stream) {
            throttle.accepted();
        }
    }
}

pub struct Throttle {
    redis: ConnectionManager,
    script: redis::Script,
    key: String,
    /// Between two messages at the cap.
    interval: Duration,
    /// How much sending may go at once after a quiet spell.
    burst: Duration,
    /// 1 at the cap; more after throttling answers.
    slowdown: Mutex<f64>,
    /// The schedule kept here while Redis is unavailable.
    local_free_from: Mutex<Option<Instant>>,
    degraded: AtomicBool,
}

impl Throttle {
    /// A throttle of `messages_per_second` for `stream`, shared through the
    /// Redis at `redis_uri` under `key_prefix`. A batch of `batch_size`
    /// may go at once after a quiet spell. Connects lazily.
    pub fn new(
        redis_uri: &SecretString,
        key_prefix: &str,
        stream: &str,
        messages_per_second: u32,
        batch_size: u32,
    ) -> Result<Self, anyhow::Error> {
        let client = redis::Client::open(redis_uri.expose_secret())
            .map_err(|e| anyhow::anyhow!("Invalid redis_uri: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client, config)?;
        let interval = Duration::from_secs(1) / messages_per_second.max(1);
        Ok(Self {
            redis,
            script: redis::Script::new(include_str!("throttle.lua")),
            key: format!("{key_prefix}campaign-throttle:{stream}"),
            interval,
            burst: interval * batch_size.max(1),
            slowdown: Mutex::new(1.0),
            local_free_from: Mutex::new(None),
            degraded: AtomicBool::new(false),
        })
    }

    /// Books `messages` on the schedule if their turn comes within
    /// `patience`.
    pub async fn book(&self, messages: usize, patience: Duration) -> Booking {
        let slowdown = *self.slowdown.lock().expect("never poisoned");
        let cost = self.interval.mul_f64(messages as f64 * slowdown);
        let booked = tokio::time::timeout(REDIS_TIMEOUT, self.book_in_redis(cost, patience)).await;
        match booked {
            Ok(Ok(booking)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("The campaign send rate is shared through Redis again");
                }
                booking
            }
            Ok(Err(e)) => self.book_locally(cost, patience, &e.to_string()),
            Err(_) => self.book_locally(cost, patience, "no answer in time"),
        }
    }

    async fn book_in_redis(
        &self,
        cost: Duration,
        patience: Duration,
    ) -> redis::RedisResult<Booking> {
        let mut connection = self.redis.clone();
        let (booked, wait_us): (i64, i64) = self
            .script
            .key(&self.key)
            .arg(cost.as_micros() as u64)
            .arg(self.burst.as_micros() as u64)
            .arg(patience.as_micros() as u64)
            .invoke_async(&mut connection)
            .await?;
        let wait = Duration::from_micros(wait_us.max(0) as u64);
        Ok(if booked == 1 {
            Booking::Booked { wait }
        } else {
            Booking::Full { free_in: wait }
        })
    }

    fn book_locally(&self, cost: Duration, patience: Duration, cause: &str) -> Booking {
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cause,
                "Redis is unavailable: the campaign send rate is kept in this process until it \
                 answers again"
            );
        }
        let now = Instant::now();
        let mut free_from = self.local_free_from.lock().expect("never poisoned");
        let earliest = now.checked_sub(self.burst).unwrap_or(now);
        let start = free_from.unwrap_or(earliest).max(earliest);
        let wait = start.saturating_duration_since(now);
        if wait > patience {
            return Booking::Full { free_in: wait };
        }
        *free_from = Some(start + cost);
        Booking::Booked { wait }
    }

    /// The email API asked us to slow down.
    pub fn throttled(&self) {
        let mut slowdown = self.slowdown.lock().expect("never poisoned");
        let before = *slowdown;
        *slowdown = (before * 2.0).min(MAX_SLOWDOWN);
        if *slowdown > before {
            tracing::warn!(
                slowdown = *slowdown,
                "The email API is throttling: slowing this process's campaign sending down"
            );
        }
    }

    /// The email API took a batch: come back towards the cap.
    pub fn accepted(&self) {
        let mut slowdown = self.slowdown.lock().expect("never poisoned");
        *slowdown = (*slowdown * 0.8).max(1.0);
    }

    /// How many times its share of the schedule a message books now.
    pub fn slowdown(&self) -> f64 {
        *self.slowdown.lock().expect("never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable_throttle(per_second: u32, batch: u32) -> Throttle {
        // Nothing listens on port 1: every booking falls back to the process.
        let uri = SecretString::from("redis://127.0.0.1:1");
        Throttle::new(&uri, "test:", "broadcast", per_second, batch).unwrap()
    }

    #[tokio::test]
    async fn without_redis_bookings_follow_each_other_at_the_cap() {
        let throttle = unreachable_throttle(100, 10);
        let ten_messages = throttle.interval * 10;
        let patience = Duration::from_secs(1);
        let wait = |booking| match booking {
            Booking::Booked { wait } => wait,
            full => panic!("expected a booking, got {full:?}"),
        };

        let first = wait(throttle.book_locally(ten_messages, patience, "test"));
        let second = wait(throttle.book_locally(ten_messages, patience, "test"));
        let third = wait(throttle.book_locally(ten_messages, patience, "test"));

        // The first batch goes at once (the burst); each later one waits
        // for the ones before it: 10 messages at 100/s are 100 ms.
        assert_eq!(first, Duration::ZERO);
        assert!(second <= Duration::from_millis(10), "{second:?}");
        assert!(
            third > Duration::from_millis(80) && third <= Duration::from_millis(110),
            "{third:?}"
        );
    }

    #[tokio::test]
    async fn a_turn_beyond_the_callers_patience_books_nothing() {
        let throttle = unreachable_throttle(100, 10);
        let second_of_messages = throttle.interval * 100;
        let patience = Duration::from_millis(500);
        throttle.book_locally(second_of_messages, patience, "test");
        throttle.book_locally(second_of_messages, patience, "test");

        let refused = throttle.book_locally(second_of_messages, patience, "test");
        let refused_again = throttle.book_locally(second_of_messages, patience, "test");

        // Refusals leave the schedule as it was: the same turn, not later.
        let Booking::Full { free_in } = refused else {
            panic!("expected no booking, got {refused:?}");
        };
        let Booking::Full { free_in: again } = refused_again else {
            panic!("expected no booking, got {refused_again:?}");
        };
        assert!(free_in > patience, "{free_in:?}");
        assert!(again <= free_in, "{again:?} after {free_in:?}");
    }

    #[tokio::test]
    async fn throttling_answers_slow_down_to_a_limit_and_accepted_batches_speed_back_up() {
        let throttle = unreachable_throttle(100, 10);
        for _ in 0..10 {
            throttle.throttled();
        }
        assert_eq!(throttle.slowdown(), MAX_SLOWDOWN);
        for _ in 0..50 {
            throttle.accepted();
        }
        assert_eq!(throttle.slowdown(), 1.0);
    }
}
