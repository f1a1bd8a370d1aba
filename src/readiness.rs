//! Whether this instance should take traffic, worked out in the background.
//!
//! A task checks Postgres, on a connection of its own, and Redis every
//! [`REFRESH_INTERVAL`], and keeps the last report. `GET /ready` only reads
//! that report. Checking on each call instead would take a connection from
//! the pool that serves requests: a load balancer polling (or anyone on the
//! internet, since the platform's probe needs a public route) would then
//! compete with readers for connections, and a busy pool would make a
//! healthy instance look down, so that the load balancer takes it out of
//! rotation just when it is needed most.
//!
//! A report older than [`STALE_AFTER`] counts as Postgres unavailable: the
//! checker itself has stopped answering, and the instance cannot vouch for
//! anything.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::configuration::DatabaseSettings;
use crate::db::Db;
use crate::rate_limit::RateLimiter;

/// How often the dependencies are checked. The platform's probe comes no
/// more often than this (`spec.yaml`), so it never reads an old report.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// How long Postgres gets to answer one check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Redis never makes the instance unready, so it gets less time: its check
/// must not hold back the next report.
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// How long `/ready` waits for the first report of an instance that just
/// started: one round of checks.
pub const FIRST_REPORT_PATIENCE: Duration = CHECK_TIMEOUT.saturating_add(REDIS_CHECK_TIMEOUT);

/// A report older than this means the checker is stuck.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * REFRESH_INTERVAL.as_secs() + 1);

/// The result of one round of checks.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub postgres: bool,
    pub redis: bool,
    at: Instant,
}

impl Report {
    /// The report as it stands now: one gone stale vouches for nothing.
    fn as_of(self, now: Instant) -> Self {
        if now.saturating_duration_since(self.at) > STALE_AFTER {
            Self {
                postgres: false,
                redis: false,
                at: self.at,
            }
        } else {
            self
        }
    }
}

/// The latest report, shared by every HTTP worker.
#[derive(Clone)]
pub struct Checker {
    latest: watch::Receiver<Option<Report>>,
}

impl Checker {
    /// Starts the checks, which stop with `stop`. Postgres is checked on a
    /// pool of one connection of its own; Redis through `limiter`'s
    /// connection, which must have been made on the calling runtime.
    pub fn start(
        database: &DatabaseSettings,
        limiter: RateLimiter,
        stop: CancellationToken,
    ) -> Self {
        let db = Db::connect_lazy(database, 1);
        let (publish, latest) = watch::channel(None);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(REFRESH_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let (postgres, redis) = tokio::join!(
                    tokio::time::timeout(CHECK_TIMEOUT, db.ping()),
                    limiter.ping_redis(REDIS_CHECK_TIMEOUT),
                );
                let postgres = match postgres {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        tracing::warn!(error = ?e, "Readiness: Postgres does not answer");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(timeout = ?CHECK_TIMEOUT, "Readiness: Postgres did not answer in time");
                        false
                    }
                };
                let report = Report {
                    postgres,
                    redis,
                    at: Instant::now(),
                };
                if publish.send(Some(report)).is_err() {
                    return;
                }
            }
        });
        Self { latest }
    }

    /// The latest report. Before the first one, waits for it as long as
    /// one round of checks may take: an instance that just started is not
    /// ready until it has checked.
    pub async fn report(&self) -> Option<Report> {
        let mut latest = self.latest.clone();
        let first = latest.wait_for(Option::is_some);
        let report = match tokio::time::timeout(FIRST_REPORT_PATIENCE, first).await {
            Ok(Ok(report)) => *report,
            _ => *self.latest.borrow(),
        };
        report.map(|report| report.as_of(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_report_vouches_for_nothing() {
        let then = Instant::now();
        let report = Report {
            postgres: true,
            redis: true,
            at: then,
        };
        assert!(report.as_of(then + REFRESH_INTERVAL).postgres);
        let stale = report.as_of(then + STALE_AFTER + Duration::from_millis(1));
        assert!(!stale.postgres && !stale.redis);
    }
}
