use std::time::Duration;

use rand::RngExt;

/// How long to wait before attempt `attempts + 1`, after `attempts` failed
/// ones: exponential in the number of attempts, capped at `max`, with "equal
/// jitter" (half fixed, half random) so that messages that failed together do
/// not all come back at the same instant. A `Retry-After` from the API is a
/// floor, itself capped at `max`.
pub fn retry_delay(
    attempts: i32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let exponential = base.saturating_mul(1u32 << exponent).min(max);
    let half = exponential / 2;
    let jitter = half.mul_f64(rand::rng().random_range(0.0..=1.0));
    let delay = half + jitter;
    match retry_after {
        Some(asked) => delay.max(asked.min(max)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn the_delay_doubles_with_each_attempt_within_its_jitter_band() {
        for attempts in 1..=10 {
            let full = BASE * 2u32.pow(attempts as u32 - 1);
            for _ in 0..100 {
                let delay = retry_delay(attempts, BASE, MAX, None);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "attempt {attempts}: {delay:?} outside {:?}..={full:?}",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn the_delay_never_exceeds_the_maximum() {
        for attempts in [12, 31, 1000, i32::MAX] {
            assert!(retry_delay(attempts, BASE, MAX, None) <= MAX);
        }
    }

    #[test]
    fn jitter_spreads_retries_out() {
        let delays: std::collections::HashSet<_> =
            (0..50).map(|_| retry_delay(5, BASE, MAX, None)).collect();
        assert!(delays.len() > 1);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let asked = Duration::from_secs(120);
        assert!(retry_delay(1, BASE, MAX, Some(asked)) >= asked);
    }

    #[test]
    fn a_retry_after_beyond_the_maximum_is_capped() {
        let asked = Duration::from_secs(86_400);
        assert_eq!(retry_delay(1, BASE, MAX, Some(asked)), MAX);
    }
}
