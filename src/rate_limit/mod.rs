//! Abuse protection: how often one client may sign up, and open or press
//! confirmation links (each on a budget of its own), how many emails one
//! address may be sent, how often anyone may try a password, and how many
//! requests one API token may make.
//!
//! Limits live in Redis so that every replica draws on the same budget. Each
//! check is one Lua script (GCRA: a burst at once, then a steady refill),
//! atomic and self-expiring. If Redis does not answer within a few
//! milliseconds the check falls back to an in-process limiter with the same
//! rules (per replica, so looser, but never absent), the degradation is
//! logged once, and the next check that Redis answers switches back.
//!
//! A sign-up that passed the checks but could not be stored sent no email:
//! [`RateLimiter::refund_address`] gives its address back the charge.
//!
//! Sign-in limits are built so that nobody can spend the owner's budget:
//! see [`RateLimiter::check_login`]. They bound guesses: a right password
//! or code gives its charges back ([`LoginAttempt::succeeded`]).

mod client_ip;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

pub use client_ip::{ClientIpResolver, limit_subject};

use crate::configuration::{LimitSettings, RateLimitSettings, SlowdownSettings};
use crate::domain::SubscriberEmail;
use crate::metrics::Metrics;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

/// What a password or code check is counted against.
#[derive(Debug, Clone, Copy)]
pub enum LoginSubject<'a> {
    /// The username as typed (canonical form), whether or not it exists, so
    /// the limits do not tell which accounts do: counted per client
    /// address, and against the account's slowdown.
    Account(&'a str),
    /// The token of a browser that signed in to that account before.
    RememberedBrowser(&'a str),
    /// The id of a signed-in session asking for its admin's password again
    /// (a password change, an enrolment).
    Session(&'a str),
}

/// The outcome of the checks on a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionDecision {
    Allowed,
    /// The client is over its limit: it is told, with when to come back.
    IpLimited {
        retry_after: Duration,
    },
    /// The address has had its share of email: the client is not told, so the
    /// form cannot be used to learn about someone's inbox.
    AddressLimited,
}

/// One limit: its settings, its name in Redis keys, and its in-process twin.
struct Policy {
    name: &'static str,
    limit: LimitSettings,
    fallback: DefaultKeyedRateLimiter<String>,
}

/// Keys the in-process limiters may hold before stale ones are dropped.
const FALLBACK_KEYS_BEFORE_CLEANUP: usize = 10_000;

impl Policy {
    fn new(name: &'static str, limit: LimitSettings) -> Self {
        let quota = Quota::with_period(limit.emission_interval())
            .expect("the emission interval is positive")
            .allow_burst(NonZeroU32::new(limit.burst.max(1)).expect("burst is at least 1"));
        Self {
            name,
            limit,
            fallback: DefaultKeyedRateLimiter::dashmap(quota),
        }
    }

    fn check_locally(&self, subject: &str) -> Decision {
        if self.fallback.len() > FALLBACK_KEYS_BEFORE_CLEANUP {
            self.fallback.retain_recent();
        }
        match self.fallback.check_key(&subject.to_owned()) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                )),
            },
        }
    }
}

/// Cheap to clone: the copies share the limits and the connection.
#[derive(Clone)]
pub struct RateLimiter {
    /// Driven by the runtime the limiter was made on (see
    /// [`RateLimiter::for_this_thread`]).
    redis: ConnectionManager,
    shared: Arc<Shared>,
}

/// What every copy of a limiter has in common: the limits, the in-process
/// fallback and the counters, and how to reach Redis.
struct Shared {
    client: redis::Client,
    config: ConnectionManagerConfig,
    script: redis::Script,
    refund_script: redis::Script,
    key_prefix: String,
    timeout: Duration,
    degraded: AtomicBool,
    suppressed_emails: AtomicU64,
    per_ip: Policy,
    confirm_per_ip: Policy,
    per_address: Policy,
    login_per_ip: Policy,
    login_per_account: Policy,
    login_per_browser: Policy,
    login_per_session: Policy,
    api_per_token: Policy,
    api_per_ip: Policy,
    api_signups_per_token: Policy,
    slowdown_script: redis::Script,
    login_slowdown: SlowdownSettings,
    client_ip: ClientIpResolver,
    /// Counts the checks the in-process limiter decided.
    metrics: Metrics,
}

impl RateLimiter {
    /// Connects lazily: the service starts (on its in-process limits) even
    /// while Redis is unreachable. Must be called within a Tokio runtime.
    pub fn new(
        redis_uri: &secrecy::SecretString,
        settings: &RateLimitSettings,
    ) -> Result<Self, anyhow::Error> {
        let client = redis::Client::open(redis_uri.expose_secret())
            .map_err(|e| anyhow::anyhow!("Invalid redis_uri: {e}"))?;
        let timeout = settings.redis_timeout();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let shared = Shared {
            client,
            config,
            script: redis::Script::new(include_str!("gcra.lua")),
            refund_script: redis::Script::new(include_str!("gcra_refund.lua")),
            key_prefix: settings.key_prefix.clone(),
            timeout,
            degraded: AtomicBool::new(false),
            suppressed_emails: AtomicU64::new(0),
            per_ip: Policy::new("ip", settings.per_ip),
            // Apart from the sign-ups' `ip`: a confirmation click must not
            // be refused because its client signed up, nor the reverse.
            confirm_per_ip: Policy::new("confirm-ip", settings.confirm_per_ip),
            per_address: Policy::new("address", settings.per_address),
            login_per_ip: Policy::new("login-ip", settings.login_per_ip),
            // Keyed by account and address, unlike the per-account budget
            // of old (`login-account`), whose keys simply expire.
            login_per_account: Policy::new("login-account-ip", settings.login_per_account),
            // The same allowance as an account's, but budgets of their own.
            login_per_browser: Policy::new("login-browser", settings.login_per_account),
            login_per_session: Policy::new("login-session", settings.login_per_account),
            api_per_token: Policy::new("api-token", settings.api_per_token),
            api_per_ip: Policy::new("api-ip", settings.api_per_ip),
            api_signups_per_token: Policy::new("api-signups", settings.api_signups_per_token),
            slowdown_script: redis::Script::new(include_str!("slowdown.lua")),
            login_slowdown: settings.login_account_slowdown,
            client_ip: ClientIpResolver::new(
                settings.trusted_proxies.clone(),
                settings.forwarded_header.to_lowercase(),
            ),
            metrics: Metrics::default(),
        };
        Ok(Self {
            redis,
            shared: Arc::new(shared),
        })
    }

    /// The same limiter, counting its fallbacks into `metrics`. Called on
    /// the limiter as built, before any copy of it is made.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("with_metrics is called before the limiter is copied")
            .metrics = metrics;
        self
    }

    /// A limiter with the same limits, fallback and counters, whose Redis
    /// connection is driven by the calling thread's runtime. Each HTTP worker
    /// thread checks through one of its own: through a connection driven
    /// elsewhere, every check would wake another thread and be woken back.
    pub fn for_this_thread(&self) -> Result<Self, anyhow::Error> {
        let redis = ConnectionManager::new_lazy_with_config(
            self.shared.client.clone(),
            self.shared.config.clone(),
        )?;
        Ok(Self {
            redis,
            shared: Arc::clone(&self.shared),
        })
    }

    pub fn client_ip(&self) -> &ClientIpResolver {
        &self.shared.client_ip
    }

    /// The client's budget for opening confirmation links and pressing
    /// their buttons.
    #[tracing::instrument(name = "Check the confirmation limit", level = "debug", skip_all)]
    pub async fn check_confirmation(&self, ip: std::net::IpAddr) -> Decision {
        match self
            .check(&[(&self.shared.confirm_per_ip, &limit_subject(ip))])
            .await
        {
            Some((_, retry_after)) => Decision::Limited { retry_after },
            None => Decision::Allowed,
        }
    }

    /// The budget of one API token, whichever address it comes from: the
    /// token is a 256-bit secret, so its holder is who the budget is for.
    /// Checked only once the token is known to be live, so that made-up
    /// tokens cannot fill Redis with keys.
    #[tracing::instrument(name = "Check the API token's limit", level = "debug", skip_all)]
    pub async fn check_api_token(&self, token_id: uuid::Uuid) -> Decision {
        let subject = token_id.simple().to_string();
        match self.check(&[(&self.shared.api_per_token, &subject)]).await {
            Some((_, retry_after)) => Decision::Limited { retry_after },
            None => Decision::Allowed,
        }
    }

    /// The client's budget for requests under `/api/v1`, checked before
    /// its token is looked up: keyed by address, so made-up tokens add no
    /// keys, and they cost one database read each only up to it.
    #[tracing::instrument(name = "Check the API client's limit", level = "debug", skip_all)]
    pub async fn check_api_client(&self, ip: Option<std::net::IpAddr>) -> Decision {
        let Some(ip) = ip.map(limit_subject) else {
            return Decision::Allowed;
        };
        match self.check(&[(&self.shared.api_per_ip, &ip)]).await {
            Some((_, retry_after)) => Decision::Limited { retry_after },
            None => Decision::Allowed,
        }
    }

    /// A sign-up through the API: the token's sign-up budget, in place of
    /// the form's per-IP one, then the address's, in one round trip.
    #[tracing::instrument(name = "Check the API sign-up limits", level = "debug", skip_all)]
    pub async fn check_api_signup(
        &self,
        token_id: uuid::Uuid,
        email: &SubscriberEmail,
    ) -> SubscriptionDecision {
        let token = token_id.simple().to_string();
        let address = address_subject(email);
        let limits = [
            (&self.shared.api_signups_per_token, token.as_str()),
            (&self.shared.per_address, address.as_str()),
        ];
        match self.check(&limits).await {
            None => SubscriptionDecision::Allowed,
            Some((0, retry_after)) => SubscriptionDecision::IpLimited { retry_after },
            Some(_) => SubscriptionDecision::AddressLimited,
        }
    }

    /// The client's per-IP limit, then, for a submission that would send
    /// email, whether one more may go to this address: both in one round trip
    /// to Redis. An address over its limit does not give back the IP's
    /// charge: each submission counts against the client. The address limit
    /// counts the mailbox the address delivers to ([`SubscriberEmail::mailbox`]),
    /// so `victim+1@` and `victim+2@` share one budget.
    #[tracing::instrument(name = "Check the subscription limits", level = "debug", skip_all)]
    pub async fn check_subscription(
        &self,
        ip: Option<std::net::IpAddr>,
        email: Option<&SubscriberEmail>,
    ) -> SubscriptionDecision {
        let ip = ip.map(limit_subject);
        let address = email.map(address_subject);
        let limits: Vec<(&Policy, &str)> = [
            (&self.shared.per_ip, &ip),
            (&self.shared.per_address, &address),
        ]
        .into_iter()
        .filter_map(|(policy, subject)| Some((policy, subject.as_deref()?)))
        .collect();
        match self.check(&limits).await {
            None => SubscriptionDecision::Allowed,
            Some((i, retry_after)) if std::ptr::eq(limits[i].0, &self.shared.per_ip) => {
                SubscriptionDecision::IpLimited { retry_after }
            }
            Some(_) => SubscriptionDecision::AddressLimited,
        }
    }

    /// The limits on one sign-in attempt (or one second-factor code, or one
    /// password re-check), and the wait it must sit out before its password
    /// is checked. Returns once the wait is over: the attempt, whose charges
    /// the caller gives back if its password or code was right
    /// ([`LoginAttempt::succeeded`]); or, when a budget refuses it, when to
    /// come back.
    ///
    /// Nothing anyone else does can make the owner's right password answer
    /// 429 from a new browser at a new address:
    /// - an attempt on an account counts against the client's IP and the
    ///   pair (account, client address): a stranger's wrong passwords spend
    ///   the stranger's budgets, not the owner's;
    /// - a browser that signed in to the account before draws only on a
    ///   budget of its own, and a signed-in session re-checking its password
    ///   on the session's: neither depends on any address;
    /// - all attempts on an account together, from every address, are only
    ///   slowed down ([`SlowdownSettings`]): past the free attempts of a
    ///   window each waits, growing to a bound of a few seconds. A
    ///   distributed attacker, whose every address has a budget of its own,
    ///   gets guesses at the pace of its addresses' budgets whatever the
    ///   delay; what the delay buys is time and a signal (the failures are
    ///   counted on the dashboard), without a lockout by another name: it is
    ///   bounded, it is never a refusal, and an attempt refused by a budget
    ///   answers at once, so each address can hold at most its budget's worth
    ///   of waiting requests. The wait holds no database connection or lock:
    ///   callers call this between transactions.
    ///
    /// The slowdown counts the typed username whether or not the account
    /// exists, so that how long an answer takes tells nothing about which
    /// do. When Redis does not answer, attempts are not slowed (the budgets
    /// fall back to this process, as every limit does).
    #[tracing::instrument(name = "Check the sign-in limits", level = "debug", skip_all)]
    pub async fn check_login(
        &self,
        ip: Option<std::net::IpAddr>,
        who: LoginSubject<'_>,
    ) -> Result<LoginAttempt, Duration> {
        let ip = ip.map(limit_subject);
        let mut limits: Vec<(&Policy, &str)> = Vec::with_capacity(2);
        let subject = match who {
            LoginSubject::Account(username) => {
                if let Some(ip) = ip.as_deref() {
                    limits.push((&self.shared.login_per_ip, ip));
                }
                let from = ip.as_deref().unwrap_or("no address");
                (
                    &self.shared.login_per_account,
                    hashed(&format!("{username}\n{from}")),
                )
            }
            // No address's budget either: the token is a 256-bit secret
            // that only a browser which signed in as this admin holds, so
            // its own budget bounds what can be guessed through it, and
            // someone behind the owner's network cannot spend it.
            LoginSubject::RememberedBrowser(token) => {
                (&self.shared.login_per_browser, hashed(token))
            }
            // The session is signed in already: its budget bounds what a
            // stolen one can guess, and no address's budget, which someone
            // behind the same network could spend, stands in its way.
            LoginSubject::Session(id) => (&self.shared.login_per_session, hashed(id)),
        };
        limits.push((subject.0, &subject.1));
        if let Some((_, retry_after)) = self.check(&limits).await {
            return Err(retry_after);
        }
        let attempt = LoginAttempt {
            limiter: self.clone(),
            charged: limits
                .iter()
                .map(|(policy, subject)| self.charge(policy, subject))
                .collect(),
        };
        if let LoginSubject::Account(username) = who {
            let delay = self.account_slowdown(username).await;
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "Sign-in slowed down: many attempts on this account"
                );
                tokio::time::sleep(delay).await;
            }
        }
        Ok(attempt)
    }

    /// Counts one more attempt on `username` and says how long it waits.
    async fn account_slowdown(&self, username: &str) -> Duration {
        let settings = self.shared.login_slowdown;
        let key = format!(
            "{}rl:login-slowdown:{}",
            self.shared.key_prefix,
            hashed(username)
        );
        let mut connection = self.redis.clone();
        let mut invocation = self.shared.slowdown_script.key(key);
        invocation.arg(settings.window().as_millis() as u64);
        let count = invocation.invoke_async::<u64>(&mut connection);
        match tokio::time::timeout(self.shared.timeout, count).await {
            Ok(Ok(count)) => settings.delay(count),
            Ok(Err(e)) => {
                self.degrade(&e.to_string());
                Duration::ZERO
            }
            Err(_) => {
                self.degrade(&format!("no answer within {:?}", self.shared.timeout));
                Duration::ZERO
            }
        }
    }

    /// Gives back the one email's worth of the per-address budget that the
    /// last allowed [`RateLimiter::check_subscription`] charged for this
    /// address's mailbox. For a sign-up that was allowed but could not be
    /// stored, and so sent nothing: a database outage must not use up the
    /// budget of the people who tried during it. After a check that refused
    /// the address nothing was charged, and nothing should be given back.
    ///
    /// The budget never grows past its burst, however often this is called.
    /// The IP's charge stays: the client did make the request. When Redis
    /// does not answer in time the failure is logged like a check's and
    /// nothing is given back. The in-process fallback cannot give back at
    /// all (`governor` has no such operation), so a sign-up checked there
    /// during an outage keeps its charge; if Redis is back by the time of
    /// the refund, Redis gives back a charge it never took, which the burst
    /// still bounds.
    #[tracing::instrument(name = "Refund the per-address limit", level = "debug", skip_all)]
    pub async fn refund_address(&self, email: &SubscriberEmail) {
        let charge = self.charge(&self.shared.per_address, &address_subject(email));
        self.refund(&[charge]).await;
    }

    /// Gives back one request's worth of each charge, in one round trip.
    /// When Redis does not answer in time the failure is logged like a
    /// check's and nothing is given back.
    async fn refund(&self, charges: &[Charge]) {
        let outcome =
            tokio::time::timeout(self.shared.timeout, self.refund_in_redis(charges)).await;
        let cause = match outcome {
            Ok(Ok(given_back)) => {
                tracing::debug!(given_back, "Charges refunded");
                self.recover();
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.shared.timeout),
        };
        tracing::debug!(cause, "Charges could not be refunded: Redis is unavailable");
        self.degrade(&cause);
    }

    /// Whether Redis answers a PING within `patience`. A new connection's
    /// first attempt may time out while it connects, so it asks again until
    /// `patience` runs out.
    pub async fn ping_redis(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut connection = self.redis.clone();
            let ping = redis::cmd("PING");
            let answer = ping.query_async::<String>(&mut connection);
            if let Ok(Ok(_)) = tokio::time::timeout_at(deadline, answer).await {
                return true;
            }
            if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counts an email that was not sent because of the per-address limit,
    /// and returns the total so far in this process.
    pub fn count_suppressed_email(&self) -> u64 {
        self.shared
            .suppressed_emails
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    /// Checks `limits` in order, each against its subject. `None` when all
    /// allow the request; otherwise the position of the first that refuses
    /// it and when to come back. Limits before that one are charged.
    async fn check(&self, limits: &[(&Policy, &str)]) -> Option<(usize, Duration)> {
        if limits.is_empty() {
            return None;
        }
        let outcome = tokio::time::timeout(self.shared.timeout, self.check_in_redis(limits)).await;
        let cause = match outcome {
            Ok(Ok(refusal)) => {
                self.recover();
                return refusal;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.shared.timeout),
        };
        self.shared.metrics.rate_limit_fallback();
        self.degrade(&cause);
        limits
            .iter()
            .enumerate()
            .find_map(
                |(i, (policy, subject))| match policy.check_locally(subject) {
                    Decision::Allowed => None,
                    Decision::Limited { retry_after } => Some((i, retry_after)),
                },
            )
    }

    async fn check_in_redis(
        &self,
        limits: &[(&Policy, &str)],
    ) -> redis::RedisResult<Option<(usize, Duration)>> {
        let mut invocation = self.shared.script.prepare_invoke();
        for (policy, subject) in limits {
            invocation
                .key(self.key(policy, subject))
                .arg(policy.limit.emission_interval().as_millis() as u64)
                .arg(policy.limit.burst.max(1));
        }
        let mut connection = self.redis.clone();
        let (allowed, retry_after_ms, refused_by): (i64, i64, usize) =
            invocation.invoke_async(&mut connection).await?;
        Ok((allowed != 1).then(|| {
            // Lua counts from 1.
            let position = refused_by.saturating_sub(1);
            (
                position,
                Duration::from_millis(retry_after_ms.max(0) as u64),
            )
        }))
    }

    /// Returns how many charges were given back.
    async fn refund_in_redis(&self, charges: &[Charge]) -> redis::RedisResult<u64> {
        let mut invocation = self.shared.refund_script.prepare_invoke();
        for charge in charges {
            invocation.key(&charge.key).arg(charge.interval_ms);
        }
        let mut connection = self.redis.clone();
        invocation.invoke_async(&mut connection).await
    }

    /// What a check charged `subject` on `policy`, to be given back.
    fn charge(&self, policy: &Policy, subject: &str) -> Charge {
        Charge {
            key: self.key(policy, subject),
            interval_ms: policy.limit.emission_interval().as_millis() as u64,
        }
    }

    /// Where Redis keeps a subject's state for one limit.
    fn key(&self, policy: &Policy, subject: &str) -> String {
        format!("{}rl:{}:{}", self.shared.key_prefix, policy.name, subject)
    }

    /// Logs the return to Redis once, after an outage.
    fn recover(&self) {
        if self.shared.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("Rate limits are back on Redis");
        }
    }

    /// Logs the switch to in-process limits once, not on every request.
    fn degrade(&self, cause: &str) {
        if !self.shared.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cause,
                "Redis is unavailable: rate limits fall back to this process until it answers again"
            );
        }
    }
}

/// One request's charge on one limit: where it is kept (a key of hashes,
/// never what was typed), and how much it was.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Charge {
    key: String,
    interval_ms: u64,
}

/// A sign-in attempt, second-factor code or password re-check that the
/// limits let through, with what it was charged. The budgets bound
/// guesses, and a right password or code is not one: an admin who signs in
/// again and again from new browsers, or types the right password with a
/// code that is not yet right while enrolling, must not run into a limit
/// that is there for someone who does not know the password. Dropped
/// without [`LoginAttempt::succeeded`] (a wrong password or code), the
/// charges stand.
///
/// The slowdown's count is not given back: it never refuses, and the most
/// the owner's own sign-ins can add to theirs is a wait of a few seconds.
#[must_use = "a right password or code gives its charges back through `succeeded`"]
pub struct LoginAttempt {
    limiter: RateLimiter,
    charged: Vec<Charge>,
}

impl LoginAttempt {
    /// The password or code was right: its charges are given back (see
    /// [`RateLimiter::refund_address`] on what a refund can and cannot
    /// do when Redis is away).
    #[tracing::instrument(name = "Refund a right sign-in attempt", level = "debug", skip_all)]
    pub async fn succeeded(self) {
        self.limiter.refund(&self.charged).await;
    }

    /// The password was right, but a second factor must follow: its charges
    /// are held, to be given back with the code's once that is right
    /// ([`LoginAttempt::succeeded_after`]). Given back now, the password
    /// step would cost nothing to the one person the second factor stands
    /// against, someone who has the password but not the code, and every
    /// new sign-in would put the whole budget into code guesses.
    pub fn held_for_the_second_factor(self) -> HeldCharges {
        HeldCharges(self.charged)
    }

    /// The code was right: its charges and the password step's `held` ones
    /// are given back, in one round trip.
    #[tracing::instrument(
        name = "Refund a right sign-in and its code",
        level = "debug",
        skip_all
    )]
    pub async fn succeeded_after(mut self, held: HeldCharges) {
        self.charged.extend(held.0);
        self.limiter.refund(&self.charged).await;
    }
}

/// The charges of a right password whose second factor is still to come,
/// kept in the sign-in's session until the code is right (see
/// [`LoginAttempt::held_for_the_second_factor`]). A sign-in that never gets
/// the code right keeps them spent.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct HeldCharges(Vec<Charge>);

/// The per-address subject: a hash of the mailbox, so that Redis never holds
/// an address. For an address without a `+tag` outside Gmail this is the
/// hash of the lower-cased address, as before mailboxes were counted, so
/// budgets carry over a deploy.
fn address_subject(email: &SubscriberEmail) -> String {
    hashed(email.mailbox().as_ref())
}

/// A subject as it appears in a key: its SHA-256, so Redis holds no address,
/// username or token, and every key has the same shape whatever was typed.
fn hashed(subject: &str) -> String {
    hex::encode(Sha256::digest(subject.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    fn settings(burst: u32) -> RateLimitSettings {
        let limit = LimitSettings {
            burst,
            per_period: 1,
            period_seconds: 600,
        };
        RateLimitSettings {
            key_prefix: "unit:".into(),
            redis_timeout_milliseconds: 50,
            trusted_proxies: vec![],
            forwarded_header: "X-Forwarded-For".into(),
            per_ip: limit,
            confirm_per_ip: limit,
            per_address: limit,
            login_per_account: limit,
            login_per_ip: limit,
            login_account_slowdown: SlowdownSettings::default(),
            api_per_token: limit,
            api_per_ip: limit,
            api_signups_per_token: limit,
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_unreachable_redis_is_logged_once_and_limits_still_hold() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        // Nothing listens on port 1.
        let uri = secrecy::SecretString::from("redis://127.0.0.1:1");
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

        let decisions = tracing::subscriber::with_default(subscriber, || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let limiter = RateLimiter::new(&uri, &settings(3)).unwrap();
                    let mut decisions = Vec::new();
                    for _ in 0..5 {
                        decisions.push(limiter.check_confirmation(ip).await);
                    }
                    decisions
                })
        });

        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            output.matches("Redis is unavailable").count(),
            1,
            "{output}"
        );
        let allowed = decisions
            .iter()
            .filter(|d| **d == Decision::Allowed)
            .count();
        assert_eq!(allowed, 3, "{decisions:?}");
    }

    #[test]
    fn spellings_of_one_mailbox_share_an_address_subject_that_hides_the_address() {
        let subject = |raw: &str| address_subject(&SubscriberEmail::parse(raw).unwrap());
        let victim = subject("victim@gmail.com");
        for spelling in [
            "Victim@Gmail.com",
            "victim+1@gmail.com",
            "v.i.c.t.i.m@gmail.com",
            "victim@googlemail.com",
        ] {
            assert_eq!(subject(spelling), victim, "{spelling}");
        }
        assert_ne!(subject("victim@outlook.com"), victim);
        assert_eq!(victim.len(), 64);
        assert!(victim.bytes().all(|b| b.is_ascii_hexdigit()), "{victim}");
    }

    #[test]
    fn the_slowdown_doubles_past_the_free_attempts_up_to_its_bound() {
        let slowdown = SlowdownSettings {
            free_attempts: 3,
            window_seconds: 60,
            max_delay_milliseconds: 1500,
        };
        let delays: Vec<u64> = (1..=8)
            .map(|n| slowdown.delay(n).as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 0, 250, 500, 1000, 1500, 1500]);
        assert_eq!(
            slowdown.delay(u64::MAX),
            Duration::from_millis(1500),
            "a huge count stays bounded"
        );
    }

    #[test]
    fn the_emission_interval_is_the_period_shared_out() {
        let limit = LimitSettings {
            burst: 5,
            per_period: 10,
            period_seconds: 600,
        };
        assert_eq!(limit.emission_interval(), Duration::from_secs(60));
    }
}
