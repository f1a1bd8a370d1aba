//! Typed settings, layered the way a twelve-factor deployment expects:
//! `configuration/base.yaml`, then the file named by `APP_ENVIRONMENT`
//! (`local` by default, or `production`), then `APP_*` environment variables
//! with `__` between levels (`APP_DATABASE__PORT=5433`). Platforms inject every
//! value as a string, so numbers and booleans are parsed from strings too.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_aux::field_attributes::{deserialize_bool_from_anything, deserialize_number_from_string};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::domain::{Newsletter, NewsletterPart, SubscriberEmail};

mod production;
pub use production::{Refused, is_published, key_problem, refuse_placeholders};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub application: ApplicationSettings,
    pub database: DatabaseSettings,
    pub email_client: EmailClientSettings,
    pub delivery: DeliverySettings,
    pub campaigns: CampaignSettings,
    pub subscriptions: SubscriptionSettings,
    /// Where rate limits are kept, e.g. `redis://127.0.0.1:6379` or, with
    /// TLS, `rediss://user:password@host:port`.
    pub redis_uri: SecretString,
    pub rate_limit: RateLimitSettings,
    pub admin: AdminSettings,
    pub webhooks: WebhookSettings,
    /// What the service sends to the endpoints an admin registers.
    #[serde(default)]
    pub outgoing_webhooks: OutgoingWebhookSettings,
    pub retention: RetentionSettings,
    /// The Prometheus endpoint, on a listener of its own.
    pub metrics: MetricsSettings,
    /// What the newsletter is called and who sends it: shown on every public
    /// page and in every email.
    pub newsletter: NewsletterSettings,
    /// What the admin's import page takes.
    #[serde(default)]
    pub imports: ImportSettings,
    /// How log lines are written. Absent means JSON, so that an environment
    /// has to ask for the text format.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// The shape of the log lines on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for a log pipeline to parse.
    #[default]
    Json,
    /// One plain line per event, for a person reading a terminal.
    Text,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    /// Prepended to every Redis key, so several deployments (or test runs)
    /// can share one Redis.
    pub key_prefix: String,
    /// How long a check waits for Redis before using the in-process limits.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub redis_timeout_milliseconds: u64,
    /// Proxies whose forwarding header is believed (addresses or CIDR
    /// ranges): the platform's load balancer, nothing else.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub forwarded_header: String,
    /// Sign-up submissions (`POST /subscriptions`) per client IP.
    pub per_ip: LimitSettings,
    /// Confirmation links opened and buttons pressed per client IP: a
    /// budget apart from the sign-ups', so that signing up does not use up
    /// the clicks that confirm, nor the other way round.
    pub confirm_per_ip: LimitSettings,
    /// Emails per recipient address.
    pub per_address: LimitSettings,
    /// Sign-in attempts on one admin account from one client address. The
    /// same allowance, each a budget of its own, goes to a browser that
    /// signed in to the account before, and to the password re-checks of
    /// one signed-in session. (The name is older than the per-address
    /// split, and kept so deployments' variables keep working.)
    pub login_per_account: LimitSettings,
    /// Sign-in attempts per client IP, whichever account they name.
    pub login_per_ip: LimitSettings,
    /// How attempts on one account from everywhere together are slowed
    /// down (never refused). Optional: older configurations get defaults.
    #[serde(default)]
    pub login_account_slowdown: SlowdownSettings,
    /// Requests under `/api/v1` per API token. Optional: older
    /// configurations get [`LimitSettings::API_PER_TOKEN`].
    #[serde(default = "LimitSettings::api_per_token")]
    pub api_per_token: LimitSettings,
    /// Requests under `/api/v1` per client IP, counted before the token is
    /// looked up: made-up or revoked tokens cost a database read each, and
    /// this bounds how many one address can ask for.
    #[serde(default = "LimitSettings::api_per_ip")]
    pub api_per_ip: LimitSettings,
    /// Sign-ups through the API per token, in place of the form's per-IP
    /// budget (a site's own sign-up flow sends all its readers' sign-ups
    /// from one address): what bounds the confirmation emails a leaked
    /// write token can have sent.
    #[serde(default = "LimitSettings::api_signups_per_token")]
    pub api_signups_per_token: LimitSettings,
}

/// A ceiling that slows rather than refuses: past `free_attempts` in
/// `window_seconds`, each attempt waits, twice as long as the one before,
/// up to `max_delay_milliseconds`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SlowdownSettings {
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub free_attempts: u32,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub window_seconds: u64,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_delay_milliseconds: u64,
}

impl Default for SlowdownSettings {
    fn default() -> Self {
        Self {
            free_attempts: 10,
            window_seconds: 900,
            max_delay_milliseconds: 3000,
        }
    }
}

impl SlowdownSettings {
    /// The first wait past the free attempts; each after it doubles.
    const FIRST_DELAY: Duration = Duration::from_millis(250);

    /// How long the `attempt`th attempt of a window (counting from 1) waits.
    pub fn delay(&self, attempt: u64) -> Duration {
        let over = attempt.saturating_sub(u64::from(self.free_attempts));
        if over == 0 {
            return Duration::ZERO;
        }
        let doublings = (over - 1).min(20) as u32;
        (Self::FIRST_DELAY * 2u32.pow(doublings))
            .min(Duration::from_millis(self.max_delay_milliseconds))
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds.max(1))
    }
}

impl RateLimitSettings {
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_milliseconds)
    }
}

/// `burst` at once, refilled at `per_period` every `period_seconds`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LimitSettings {
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub burst: u32,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub per_period: u32,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub period_seconds: u64,
}

impl LimitSettings {
    /// 100 requests at once, then 10 a second.
    pub const API_PER_TOKEN: LimitSettings = LimitSettings {
        burst: 100,
        per_period: 600,
        period_seconds: 60,
    };

    fn api_per_token() -> Self {
        Self::API_PER_TOKEN
    }

    /// 200 requests at once, then 20 a second.
    pub const API_PER_IP: LimitSettings = LimitSettings {
        burst: 200,
        per_period: 1200,
        period_seconds: 60,
    };

    fn api_per_ip() -> Self {
        Self::API_PER_IP
    }

    /// 20 sign-ups at once, then 200 an hour.
    pub const API_SIGNUPS_PER_TOKEN: LimitSettings = LimitSettings {
        burst: 20,
        per_period: 200,
        period_seconds: 3600,
    };

    fn api_signups_per_token() -> Self {
        Self::API_SIGNUPS_PER_TOKEN
    }

    /// The time one unit of budget takes to refill.
    pub fn emission_interval(&self) -> Duration {
        (Duration::from_secs(self.period_seconds) / self.per_period.max(1))
            .max(Duration::from_millis(1))
    }
}

/// How a send loop works through its source (see `crate::delivery::engine`):
/// the outbox's workers (`delivery`) and the campaigns' senders
/// (`campaigns`) each have one, with the same keys.
#[derive(Debug, Clone, Deserialize)]
pub struct SendLoopSettings {
    /// Send tasks per process: `delivery.workers`, and `campaigns.senders`
    /// (the name its settings have always had, which the alias keeps).
    #[serde(alias = "senders", deserialize_with = "deserialize_number_from_string")]
    pub workers: usize,
    /// Emails a task claims at once, and sends in one call.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub batch_size: i64,
    /// How often idle tasks look for work when no notification arrives.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub poll_interval_milliseconds: u64,
    /// After a batch that was neither empty nor full, how long a task lets
    /// more emails gather before it claims again. Under load this turns
    /// many claims of an email or two into few larger ones; an email sent
    /// while the queue is quiet is still claimed at once.
    #[serde(default, deserialize_with = "deserialize_number_from_string")]
    pub batch_linger_milliseconds: u64,
    /// How long a claim holds: longer than a call to a provider can take,
    /// so that an email is never sent by two tasks at once (a call that
    /// finds a provider down moves on to the next only while the claim
    /// outlasts that one's call too). An email claimed by a task that died
    /// is sent again once its claim lapses.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub claim_timeout_seconds: u64,
    /// Attempts before an email is marked failed. Throttling answers, and
    /// calls that found every provider down, do not count.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_attempts: i32,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub backoff_base_milliseconds: u64,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub backoff_max_seconds: u64,
}

impl SendLoopSettings {
    pub fn batch_size(&self) -> usize {
        self.batch_size.max(1) as usize
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_milliseconds)
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_milliseconds)
    }

    pub fn claim_timeout(&self) -> Duration {
        Duration::from_secs(self.claim_timeout_seconds)
    }

    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_milliseconds)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_secs(self.backoff_max_seconds)
    }

    /// Refuses settings under which two tasks could send the same batch
    /// (a claim no longer than `min_claim`, which `rule` explains), or a
    /// batch no provider takes. `section` names them in the error.
    pub fn check(
        &self,
        section: &str,
        (min_claim, rule): (Duration, &str),
        max_batch: usize,
    ) -> Result<(), anyhow::Error> {
        if self.claim_timeout() <= min_claim {
            anyhow::bail!("{section}.claim_timeout_seconds must be more than {rule}");
        }
        if self.batch_size < 1 || self.batch_size as usize > max_batch {
            anyhow::bail!(
                "{section}.batch_size must be between 1 and {max_batch}, not {}",
                self.batch_size
            );
        }
        if self.max_attempts < 1 {
            anyhow::bail!("{section}.max_attempts must be at least 1");
        }
        Ok(())
    }
}

/// How the outbox's workers deliver email.
#[derive(Debug, Clone, Deserialize)]
pub struct DeliverySettings {
    /// Whether `newsletter serve` runs delivery workers itself. Turn it off
    /// when workers run on their own (`newsletter worker`).
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub run_in_server: bool,
    #[serde(flatten)]
    pub sending: SendLoopSettings,
}

/// How newsletter issues are sent: see `crate::campaigns`. Senders run
/// wherever outbox delivery runs.
#[derive(Debug, Clone, Deserialize)]
pub struct CampaignSettings {
    #[serde(flatten)]
    pub sending: SendLoopSettings,
    /// Recipients recorded per statement when an issue goes out.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub audience_chunk: i64,
    /// The most emails per second the whole fleet sends on the broadcast
    /// stream, shared by every process through Redis.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub messages_per_second: u32,
    /// The complaint guard: an issue pauses itself once its spam complaints
    /// pass this percentage of the messages it sent...
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub complaint_limit_percent: f64,
    /// ...counted only from this many sent messages on, so that one early
    /// complaint does not stop an issue.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub complaint_min_sent: i64,
    /// An address that takes unsubscribe requests by email, offered in the
    /// `List-Unsubscribe` header next to the link. None by default: someone
    /// has to read that mailbox and act on what arrives.
    #[serde(default)]
    pub unsubscribe_mailbox: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionSettings {
    /// How long a confirmation link works.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub token_expiry_hours: u64,
    /// Confirm only when the person presses a button on the page the link
    /// opens, not on the `GET` itself: protects against link scanners.
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub confirm_with_button: bool,
}

impl SubscriptionSettings {
    pub fn token_lifetime(&self) -> chrono::Duration {
        chrono::Duration::hours(self.token_expiry_hours as i64)
    }
}

/// `GET /metrics`, served on a port of its own on `application.host`, so
/// that the load balancer in front of the public port never exposes it.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// 0 picks a free port (tests).
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub port: u16,
}

/// What the email provider tells the service: `POST /webhooks/postmark`.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// The HTTP Basic credentials Postmark is given in each webhook's URL.
    /// Until both are set, every webhook call is refused (401).
    #[serde(default)]
    pub postmark_username: Option<String>,
    #[serde(default)]
    pub postmark_password: Option<SecretString>,
    /// Soft bounces in a row (with no delivery between them) that put an
    /// address on the suppression list.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub soft_bounce_limit: i32,
}

/// How outgoing webhooks are sent (`crate::outgoing_webhooks`): the
/// delivery engine's webhook source, the guarded client it calls with, and
/// when to give up on a delivery or an endpoint. Every key has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OutgoingWebhookSettings {
    /// Send tasks per process, wherever outbox delivery runs.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub workers: usize,
    /// Deliveries a task claims at once; each is its own call.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub batch_size: i64,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub poll_interval_milliseconds: u64,
    /// How long a claim holds: more than a batch of calls can take
    /// (`batch_size` times `timeout_milliseconds`, calls being made side by
    /// side it is much less). A delivery whose worker died goes again once
    /// its claim lapses.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub claim_timeout_seconds: u64,
    /// The longest a connection to an endpoint may take to open.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub connect_timeout_milliseconds: u64,
    /// The longest a whole call may take, the answer read included.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub timeout_milliseconds: u64,
    /// What is read of an answer at most; the rest is never read.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_answer_bytes: usize,
    /// Whether endpoints may be on loopback, private, link-local or
    /// metadata addresses. Off in production: for tests and local runs
    /// only.
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub allow_private_addresses: bool,
    /// An endpoint whose deliveries all failed for this long is disabled,
    /// with a notice on the dashboard.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub disable_after_hours: f64,
    /// The waits between attempts: after the first failed attempt the first
    /// wait, and so on; when none is left the delivery is given up.
    pub retry_delays_seconds: Vec<f64>,
}

impl Default for OutgoingWebhookSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            batch_size: 20,
            poll_interval_milliseconds: 1000,
            claim_timeout_seconds: 120,
            connect_timeout_milliseconds: 5000,
            timeout_milliseconds: 15000,
            max_answer_bytes: 64 * 1024,
            allow_private_addresses: false,
            disable_after_hours: 120.0,
            // Attempts at 0 s, 5 s, 5 min, 35 min, 2.6 h, 7.6 h, 17.6 h and
            // 27.6 h: retried for over a day.
            retry_delays_seconds: vec![5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        }
    }
}

impl OutgoingWebhookSettings {
    /// The engine's view of these settings.
    pub fn send_loop(&self) -> SendLoopSettings {
        SendLoopSettings {
            workers: self.workers,
            batch_size: self.batch_size,
            poll_interval_milliseconds: self.poll_interval_milliseconds,
            batch_linger_milliseconds: 0,
            claim_timeout_seconds: self.claim_timeout_seconds,
            max_attempts: self.retry_delays_seconds.len() as i32 + 1,
            backoff_base_milliseconds: 0,
            backoff_max_seconds: 0,
        }
    }

    /// The wait after the `attempts`-th failed attempt; `None` when the
    /// delivery is given up.
    pub fn retry_delay(&self, attempts: i32) -> Option<Duration> {
        let index = usize::try_from(attempts.max(1) - 1).ok()?;
        self.retry_delays_seconds
            .get(index)
            .map(|seconds| Duration::from_secs_f64(seconds.max(0.0)))
    }

    /// The longest one call can take.
    pub fn call_time(&self) -> Duration {
        Duration::from_millis(self.timeout_milliseconds)
    }

    pub fn disable_after(&self) -> Duration {
        Duration::from_secs_f64((self.disable_after_hours * 3600.0).max(0.0))
    }

    /// Refuses waits that are not a number of seconds a duration can hold
    /// (NaN, infinite, negative, beyond a year): read as durations at
    /// each failed call, they would stop the worker there rather than here.
    pub fn check(&self) -> Result<(), anyhow::Error> {
        const YEAR_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
        let fits = |seconds: f64| seconds.is_finite() && (0.0..=YEAR_SECONDS).contains(&seconds);
        if let Some(bad) = self.retry_delays_seconds.iter().find(|s| !fits(**s)) {
            anyhow::bail!(
                "outgoing_webhooks.retry_delays_seconds holds {bad}: each wait is 0 to a year, \
                 in seconds"
            );
        }
        if !fits(self.disable_after_hours * 3600.0) {
            anyhow::bail!(
                "outgoing_webhooks.disable_after_hours is {}: 0 to a year, in hours",
                self.disable_after_hours
            );
        }
        Ok(())
    }
}

/// What the retention job deletes, and how gently: see `crate::retention`.
#[derive(Debug, Clone, Deserialize)]
pub struct RetentionSettings {
    /// Whether the worker processes (and `newsletter serve` when it runs
    /// delivery) run the job. One runs at a time across the fleet.
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub enabled: bool,
    /// How often the job runs.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub interval_minutes: u64,
    /// Rows deleted per statement, each in its own short transaction.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub batch_size: i64,
    /// Email bodies (outbox rows, shared contents) are cleared this many
    /// days after they were written.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub body_days: i64,
    /// Outbox rows that were sent or given up are deleted after this many days.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub outbox_days: i64,
    /// Sign-ups never confirmed are deleted this many days after sign-up.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub unconfirmed_days: i64,
    /// Webhook record ids (kept to ignore repeats) are forgotten after this
    /// many days; Postmark stops retrying long before.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub webhook_record_days: i64,
}

impl RetentionSettings {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_minutes * 60)
    }
}

/// Imports sent over HTTP: the admin's import page (`/admin/imports`) and
/// `POST /api/v1/imports`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ImportSettings {
    /// The largest file an upload may be, in bytes: past it the upload
    /// stops and is answered 413. The file is written to disk as it
    /// arrives, so this bounds the disk it takes, not memory. A million
    /// rows of a typical export are under 100 MiB.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_upload_bytes: u64,
    /// How many uploads one process takes at once, from the first byte of
    /// the file to the end of its import: each may take `max_upload_bytes`
    /// of disk, and each import holds two database connections of its own.
    /// One more is answered 503 with `Retry-After`.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_concurrent: usize,
    /// Where uploads are written while they are imported; the system's
    /// temporary directory when absent. Files a killed process left there
    /// are removed when the next one starts.
    pub upload_directory: Option<std::path::PathBuf>,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            max_upload_bytes: 512 * 1024 * 1024,
            max_concurrent: 2,
            upload_directory: None,
        }
    }
}

/// The admin side: sessions and their cookie.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminSettings {
    /// A session ends after this long without a request (each request
    /// starts the wait again).
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub session_idle_timeout_seconds: u64,
    /// A session ends this long after sign-in, however busy.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub session_lifetime_seconds: u64,
    /// Whether the session cookie is sent over HTTPS only. Off for local
    /// runs on plain HTTP, on everywhere else.
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub secure_cookie: bool,
    /// The AES-256 key that seals admins' TOTP secrets at rest
    /// (`admin::totp_keys`): 32 bytes as 64 hex digits or base64. Local
    /// runs have one in `local.yaml`; production takes it from
    /// `APP_ADMIN__TOTP_KEY` and refuses to start without it.
    pub totp_key: SecretString,
    /// Keys that sealed secrets before the current one, kept while a
    /// rotation is under way: they open, never seal. Comma-separated in
    /// `APP_ADMIN__PREVIOUS_TOTP_KEYS`; none by default.
    #[serde(default)]
    pub previous_totp_keys: Vec<SecretString>,
}

impl AdminSettings {
    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout_seconds)
    }

    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.session_lifetime_seconds)
    }
}

/// The newsletter's own name, its one-paragraph description and the
/// display name its emails come from, as configured. The service uses them
/// as a [`Newsletter`], parsed at start-up ([`NewsletterSettings::parse`]).
#[derive(Debug, Clone, Deserialize)]
pub struct NewsletterSettings {
    pub title: String,
    pub description: String,
    pub sender_name: String,
}

impl NewsletterSettings {
    /// The newsletter these settings describe, or an error that names the
    /// setting to fix: better to refuse to start than to show a broken
    /// title on every page.
    pub fn parse(&self) -> Result<Newsletter, anyhow::Error> {
        Newsletter::parse(&self.title, &self.description, &self.sender_name).map_err(|e| {
            let key = match e.part() {
                NewsletterPart::Title => "title",
                NewsletterPart::Description => "description",
                NewsletterPart::SenderName => "sender_name",
            };
            anyhow::anyhow!(
                "Invalid newsletter.{key} (APP_NEWSLETTER__{}): {e}",
                key.to_uppercase()
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApplicationSettings {
    pub host: String,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub port: u16,
    /// Public address of the service; confirmation links start with it.
    pub base_url: String,
    /// Signs unsubscribe links and keys the hashes of suppressed addresses
    /// (`crate::keys`): at least 32 bytes, set once per deployment.
    pub hmac_secret: SecretString,
    /// How long in-flight requests get to finish after SIGTERM.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub shutdown_timeout_seconds: u64,
    /// `Strict-Transport-Security: max-age=` this on every answer; 0 sends
    /// none (local runs on plain HTTP). TLS ends at the platform's edge, so
    /// the service never sees https itself and cannot decide from a request.
    #[serde(default, deserialize_with = "deserialize_number_from_string")]
    pub hsts_max_age_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub host: String,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    pub database_name: String,
    #[serde(deserialize_with = "deserialize_bool_from_anything")]
    pub require_ssl: bool,
    /// Connections one process opens for HTTP requests, shared out among its
    /// HTTP worker threads (one per core, at least one connection each).
    /// Delivery workers have their own.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub max_connections: u32,
    /// Upper bound on waiting for a connection: when Postgres is down a
    /// request fails fast with 503 instead of hanging.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub acquire_timeout_milliseconds: u64,
    /// Postgres cancels a statement of the service that runs longer.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub statement_timeout_milliseconds: u64,
    /// Postgres gives up on a lock the service waits for longer.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub lock_timeout_milliseconds: u64,
    /// Postgres ends a session of the service that sits in an open
    /// transaction for longer, releasing its locks.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub idle_in_transaction_timeout_milliseconds: u64,
    /// The service's own deadline for a whole transaction, from `BEGIN` to
    /// `COMMIT`: what ends the wait when a connection silently stopped
    /// answering and no server-side timeout can reach us.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub transaction_timeout_milliseconds: u64,
    /// Seconds of silence on a connection before Postgres probes the client
    /// with TCP keepalives (then every `tcp_keepalive_interval_seconds`,
    /// giving up after 3 unanswered probes).
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub tcp_keepalive_idle_seconds: u64,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub tcp_keepalive_interval_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailBackend {
    /// Postmark's HTTP API.
    Postmark,
    /// An SMTP server, with `email_client.smtp`'s settings.
    Smtp,
    /// Keeps each email in the database instead of sending it, shown at
    /// `/admin/inbox`: for local runs, which production refuses.
    Inbox,
}

impl EmailBackend {
    /// Its name in the configuration (and the metrics and the ledger).
    pub const fn as_str(&self) -> &'static str {
        match self {
            EmailBackend::Postmark => "postmark",
            EmailBackend::Smtp => "smtp",
            EmailBackend::Inbox => "inbox",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailClientSettings {
    /// The providers, in the order they are used: the first while it
    /// answers, the next while its circuit is open.
    #[serde(deserialize_with = "one_or_many")]
    pub providers: Vec<EmailBackend>,
    /// The broadcast stream's providers, when they differ; empty means the
    /// same as `providers`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub broadcast_providers: Vec<EmailBackend>,
    /// Consecutive "down" failures (no answer, 5xx, refused credentials,
    /// an account on hold) that open a provider's circuit.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub open_circuit_after_failures: u32,
    /// How long an open circuit waits before one call probes the provider.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub probe_after_milliseconds: u64,
    /// The setting `providers` replaced. Still read, only to refuse it at
    /// start-up: ignored, an old `APP_EMAIL_CLIENT__BACKEND=smtp` would
    /// quietly leave the service sending through Postmark.
    #[serde(default)]
    pub backend: Option<String>,
    /// The SMTP provider's settings, needed when `smtp` is listed.
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    pub base_url: String,
    pub sender_email: String,
    pub authorization_token: Option<SecretString>,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub timeout_milliseconds: u64,
    /// The Postmark message stream for transactional mail (confirmations).
    pub transactional_stream: String,
    /// The Postmark message stream for newsletter issues: bulk mail is kept
    /// apart from transactional mail, whose reputation it must not risk.
    pub broadcast_stream: String,
}

/// How to reach the SMTP server.
#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub port: u16,
    pub tls: SmtpTls,
    /// AUTH is used when a username is given (a blank one counts as none).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The most sessions open at once, across every call: also how many
    /// emails of one batch are in flight together.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub pool_size: u32,
    /// Bounds the TCP connect, and then everything one email takes: opening
    /// a session if it needs one, and its whole transaction.
    #[serde(deserialize_with = "deserialize_number_from_string")]
    pub timeout_milliseconds: u64,
    /// Accepts any certificate the server shows, self-signed, expired or for
    /// another name. For test servers only: with it, anyone on the path can
    /// read the mail and the credentials.
    #[serde(default, deserialize_with = "deserialize_bool_from_anything")]
    pub accept_invalid_certificates: bool,
}

/// How the session is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text throughout: a relay on the same host or network only.
    None,
    /// Plain text, then `STARTTLS` before anything else is said; a server
    /// that does not offer it is not used (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Implicit,
}

impl SmtpSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_milliseconds)
    }
}

/// A list, or one value on its own (`providers: smtp`, or
/// `APP_EMAIL_CLIENT__PROVIDERS=smtp`).
fn one_or_many<'de, D>(deserializer: D) -> Result<Vec<EmailBackend>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(EmailBackend),
        Many(Vec<EmailBackend>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// The environment the service runs in, chosen by `APP_ENVIRONMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Local,
    Production,
}

impl Environment {
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Local => "local",
            Environment::Production => "production",
        }
    }
}

impl TryFrom<String> for Environment {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.to_lowercase().as_str() {
            "local" => Ok(Self::Local),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "{other} is not a supported environment: use `local` or `production`."
            )),
        }
    }
}

/// Reads the settings from `./configuration` and the process environment.
pub fn get_configuration() -> Result<Settings, config::ConfigError> {
    let directory = std::env::current_dir()
        .map_err(|e| config::ConfigError::Foreign(Box::new(e)))?
        .join("configuration");
    let environment: Environment = std::env::var("APP_ENVIRONMENT")
        .unwrap_or_else(|_| "local".into())
        .try_into()
        .map_err(config::ConfigError::Message)?;
    let settings = load(&directory, environment, None)?;
    if environment == Environment::Production {
        refuse_placeholders(&settings).map_err(|e| config::ConfigError::Foreign(Box::new(e)))?;
    }
    Ok(settings)
}

/// The layering itself. `variables` replaces the process environment when
/// given, so the override rules (and a deployment's variables, as in
/// `spec.yaml`) can be tested without touching global state.
pub fn load(
    directory: &Path,
    environment: Environment,
    variables: Option<HashMap<String, String>>,
) -> Result<Settings, config::ConfigError> {
    config::Config::builder()
        .add_source(config::File::from(directory.join("base.yaml")))
        .add_source(config::File::from(
            directory.join(format!("{}.yaml", environment.as_str())),
        ))
        .add_source(
            config::Environment::with_prefix("APP")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("rate_limit.trusted_proxies")
                .with_list_parse_key("email_client.providers")
                .with_list_parse_key("email_client.broadcast_providers")
                .with_list_parse_key("admin.previous_totp_keys")
                .with_list_parse_key("outgoing_webhooks.retry_delays_seconds")
                .source(variables),
        )
        .build()?
        .try_deserialize()
}

impl DatabaseSettings {
    /// Connection options for the server, without choosing a database.
    pub fn without_db(&self) -> PgConnectOptions {
        let ssl_mode = if self.require_ssl {
            PgSslMode::Require
        } else {
            PgSslMode::Prefer
        };
        PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .password(self.password.expose_secret())
            .ssl_mode(ssl_mode)
    }

    pub fn with_db(&self) -> PgConnectOptions {
        self.without_db().database(&self.database_name)
    }

    /// Connection options for the service's own connections: the database,
    /// with the limits on how long a statement, a lock wait and an idle
    /// transaction may take, and the server's keepalive probes. Migrations
    /// do not use these: building an index may rightly take minutes.
    pub fn with_limits(&self) -> PgConnectOptions {
        self.with_db().options([
            (
                "statement_timeout",
                self.statement_timeout_milliseconds.to_string(),
            ),
            ("lock_timeout", self.lock_timeout_milliseconds.to_string()),
            (
                "idle_in_transaction_session_timeout",
                self.idle_in_transaction_timeout_milliseconds.to_string(),
            ),
            (
                "tcp_keepalives_idle",
                self.tcp_keepalive_idle_seconds.to_string(),
            ),
            (
                "tcp_keepalives_interval",
                self.tcp_keepalive_interval_seconds.to_string(),
            ),
            ("tcp_keepalives_count", "3".to_owned()),
        ])
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_milliseconds)
    }

    pub fn work_timeout(&self) -> Duration {
        Duration::from_millis(self.transaction_timeout_milliseconds)
    }
}

impl EmailClientSettings {
    /// Both streams' lists of providers, each under its setting's name.
    pub fn provider_lists(&self) -> [(&'static str, &[EmailBackend]); 2] {
        [
            ("email_client.providers", &self.providers),
            (
                "email_client.broadcast_providers",
                &self.broadcast_providers,
            ),
        ]
    }

    /// Whether either stream goes through `backend`.
    pub fn uses(&self, backend: EmailBackend) -> bool {
        self.provider_lists()
            .iter()
            .any(|(_, list)| list.contains(&backend))
    }

    pub fn sender(&self) -> Result<SubscriberEmail, String> {
        SubscriberEmail::parse(&self.sender_email)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_milliseconds)
    }

    /// The broadcast stream's providers.
    pub fn broadcast_providers(&self) -> &[EmailBackend] {
        if self.broadcast_providers.is_empty() {
            &self.providers
        } else {
            &self.broadcast_providers
        }
    }

    /// How long an open circuit waits before one call probes the provider.
    pub fn probe_after(&self) -> Duration {
        Duration::from_millis(self.probe_after_milliseconds)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn configuration_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("configuration")
    }

    /// These variables, and the secrets production takes from the platform.
    pub(crate) fn vars(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        let secrets = [
            (
                "APP_APPLICATION__HMAC_SECRET",
                "a secret from the platform, 32+ bytes",
            ),
            (
                "APP_ADMIN__TOTP_KEY",
                "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=",
            ),
        ];
        Some(
            secrets
                .iter()
                .chain(pairs)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn every_environment_file_loads() {
        for environment in [Environment::Local, Environment::Production] {
            load(&configuration_dir(), environment, vars(&[]))
                .unwrap_or_else(|e| panic!("{} failed to load: {e}", environment.as_str()));
        }
    }

    #[test]
    fn production_keeps_its_limits_and_local_runs_get_roomier_ones() {
        let load_limits = |environment| {
            load(&configuration_dir(), environment, vars(&[]))
                .unwrap()
                .rate_limit
        };
        let budgets = |r: &RateLimitSettings| {
            let budget = |l: LimitSettings| (l.burst, l.per_period, l.period_seconds);
            [
                ("per_ip", budget(r.per_ip)),
                ("confirm_per_ip", budget(r.confirm_per_ip)),
                ("per_address", budget(r.per_address)),
                ("login_per_account", budget(r.login_per_account)),
                ("login_per_ip", budget(r.login_per_ip)),
            ]
        };
        let production = load_limits(Environment::Production);
        let local = load_limits(Environment::Local);

        assert_eq!(
            budgets(&production),
            [
                ("per_ip", (5, 10, 600)),
                ("confirm_per_ip", (20, 20, 600)),
                ("per_address", (3, 3, 86_400)),
                ("login_per_account", (5, 1, 60)),
                ("login_per_ip", (20, 10, 60)),
            ]
        );
        let slowdown = production.login_account_slowdown;
        assert_eq!(
            (
                slowdown.free_attempts,
                slowdown.window_seconds,
                slowdown.max_delay_milliseconds
            ),
            (10, 900, 3_000)
        );
        let rate = |(_, per_period, period): (u32, u32, u64)| f64::from(per_period) / period as f64;
        for ((name, local), (_, production)) in
            budgets(&local).into_iter().zip(budgets(&production))
        {
            assert!(
                local.0 >= 5 * production.0 && rate(local) >= rate(production),
                "{name}: local {local:?}, production {production:?}"
            );
        }
        assert!(
            local.login_account_slowdown.free_attempts >= 5 * slowdown.free_attempts,
            "{:?}",
            local.login_account_slowdown
        );
    }

    #[test]
    fn production_refuses_to_start_without_its_secret() {
        // Production has no secret in its file: the platform supplies it.
        let mut variables = vars(&[]).unwrap();
        variables.remove("APP_APPLICATION__HMAC_SECRET");
        let error = load(
            &configuration_dir(),
            Environment::Production,
            Some(variables),
        )
        .expect_err("production loaded without application.hmac_secret");
        assert!(error.to_string().contains("hmac_secret"), "{error}");
    }

    #[test]
    fn production_refuses_to_start_without_a_totp_key_and_reads_previous_ones_as_a_list() {
        // Production has no key in its files: the platform supplies it.
        let only_hmac = HashMap::from([(
            "APP_APPLICATION__HMAC_SECRET".to_owned(),
            "a secret from the platform, 32+ bytes".to_owned(),
        )]);
        let error = load(
            &configuration_dir(),
            Environment::Production,
            Some(only_hmac),
        )
        .expect_err("production loaded without admin.totp_key");
        assert!(error.to_string().contains("totp_key"), "{error}");

        let settings = load(&configuration_dir(), Environment::Production, vars(&[])).unwrap();
        assert!(settings.admin.previous_totp_keys.is_empty());
        let rotating = load(
            &configuration_dir(),
            Environment::Production,
            vars(&[("APP_ADMIN__PREVIOUS_TOTP_KEYS", "one,two")]),
        )
        .unwrap();
        let previous: Vec<&str> = rotating
            .admin
            .previous_totp_keys
            .iter()
            .map(|k| k.expose_secret())
            .collect();
        assert_eq!(previous, ["one", "two"]);
    }

    #[test]
    fn environment_variables_override_files_and_numbers_parse_from_strings() {
        let settings = load(
            &configuration_dir(),
            Environment::Local,
            vars(&[
                ("APP_APPLICATION__PORT", "8123"),
                ("APP_APPLICATION__BASE_URL", "https://news.example.com"),
                ("APP_DATABASE__PORT", "6543"),
                ("APP_DATABASE__REQUIRE_SSL", "true"),
                ("APP_DATABASE__DATABASE_NAME", "other"),
                ("APP_EMAIL_CLIENT__TIMEOUT_MILLISECONDS", "2500"),
                ("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "s3cr3t"),
                ("APP_DELIVERY__RUN_IN_SERVER", "false"),
                ("APP_DELIVERY__MAX_ATTEMPTS", "3"),
                ("APP_SUBSCRIPTIONS__TOKEN_EXPIRY_HOURS", "48"),
                ("APP_REDIS_URI", "redis://cache.internal:6380"),
                ("APP_RATE_LIMIT__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.1/32"),
                ("APP_RATE_LIMIT__PER_IP__BURST", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(settings.application.port, 8123);
        assert_eq!(settings.application.base_url, "https://news.example.com");
        assert_eq!(settings.database.port, 6543);
        assert!(settings.database.require_ssl);
        assert_eq!(settings.database.database_name, "other");
        assert_eq!(settings.email_client.timeout(), Duration::from_millis(2500));
        assert_eq!(
            settings
                .email_client
                .authorization_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
            Some("s3cr3t".to_owned())
        );
        assert!(!settings.delivery.run_in_server);
        assert_eq!(settings.delivery.sending.max_attempts, 3);
        assert_eq!(
            settings.subscriptions.token_lifetime(),
            chrono::Duration::hours(48)
        );
        assert_eq!(
            settings.redis_uri.expose_secret(),
            "redis://cache.internal:6380"
        );
        assert_eq!(
            settings.rate_limit.trusted_proxies,
            vec![
                "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                "192.0.2.1/32".parse().unwrap()
            ]
        );
        assert_eq!(settings.rate_limit.per_ip.burst, 7);
    }

    #[test]
    fn logs_are_text_locally_and_json_in_production_unless_app_log_format_says_otherwise() {
        let cases = [
            (Environment::Local, None, LogFormat::Text),
            (Environment::Local, Some("json"), LogFormat::Json),
            (Environment::Production, None, LogFormat::Json),
            (Environment::Production, Some("text"), LogFormat::Text),
        ];
        for (environment, variable, expected) in cases {
            let pairs: Vec<_> = variable
                .map(|v| ("APP_LOG_FORMAT", v))
                .into_iter()
                .collect();
            let settings = load(&configuration_dir(), environment, vars(&pairs)).unwrap();
            assert_eq!(
                settings.log_format,
                expected,
                "{} with APP_LOG_FORMAT={variable:?}",
                environment.as_str()
            );
        }
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let settings = load(
            &configuration_dir(),
            Environment::Production,
            vars(&[
                ("APP_DATABASE__PASSWORD", "db-pass-123"),
                ("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "email-token-456"),
            ]),
        )
        .unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("db-pass-123"), "{printed}");
        assert!(!printed.contains("email-token-456"), "{printed}");
    }

    #[test]
    fn production_tells_browsers_to_use_https_for_a_year_and_local_runs_do_not() {
        let hsts = |environment| {
            load(&configuration_dir(), environment, vars(&[]))
                .unwrap()
                .application
                .hsts_max_age_seconds
        };
        assert_eq!(hsts(Environment::Production), 31_536_000);
        assert_eq!(hsts(Environment::Local), 0);
    }

    #[test]
    fn an_unknown_environment_is_rejected() {
        assert!(Environment::try_from("staging".to_string()).is_err());
        assert_eq!(
            Environment::try_from("Production".to_string()),
            Ok(Environment::Production)
        );
    }

    #[test]
    fn the_newsletter_comes_from_app_newsletter_variables() {
        let settings = load(
            &configuration_dir(),
            Environment::Production,
            vars(&[
                ("APP_NEWSLETTER__TITLE", "Rust Weekly"),
                ("APP_NEWSLETTER__DESCRIPTION", "Crabs, weekly."),
                ("APP_NEWSLETTER__SENDER_NAME", "The Rust Desk"),
            ]),
        )
        .unwrap();

        let newsletter = settings.newsletter.parse().unwrap();

        assert_eq!(newsletter.title(), "Rust Weekly");
        assert_eq!(newsletter.description(), "Crabs, weekly.");
        assert_eq!(newsletter.sender_name(), "The Rust Desk");
    }

    #[test]
    fn the_newsletter_of_every_environment_file_parses() {
        for environment in [Environment::Local, Environment::Production] {
            let settings = load(&configuration_dir(), environment, vars(&[])).unwrap();
            if let Err(e) = settings.newsletter.parse() {
                panic!("{}: {e}", environment.as_str());
            }
        }
    }

    #[test]
    fn a_refused_newsletter_setting_is_named_with_its_variable() {
        let cases = [
            (
                "APP_NEWSLETTER__TITLE",
                "",
                "newsletter.title (APP_NEWSLETTER__TITLE)",
            ),
            (
                "APP_NEWSLETTER__TITLE",
                "Rust\nWeekly",
                "newsletter.title (APP_NEWSLETTER__TITLE)",
            ),
            (
                "APP_NEWSLETTER__SENDER_NAME",
                " ",
                "newsletter.sender_name (APP_NEWSLETTER__SENDER_NAME)",
            ),
        ];
        for (variable, value, named) in cases {
            let settings = load(
                &configuration_dir(),
                Environment::Local,
                vars(&[(variable, value)]),
            )
            .unwrap();

            let reason = settings.newsletter.parse().unwrap_err().to_string();

            assert!(reason.contains(named), "{variable}={value:?}: {reason}");
        }
    }

    #[test]
    fn the_sign_in_limits_keep_their_names_and_the_slowdown_is_set_from_the_environment() {
        let settings = load(
            &configuration_dir(),
            Environment::Local,
            vars(&[
                // The name deployments already set, now per account and address.
                ("APP_RATE_LIMIT__LOGIN_PER_ACCOUNT__BURST", "9"),
                (
                    "APP_RATE_LIMIT__LOGIN_ACCOUNT_SLOWDOWN__MAX_DELAY_MILLISECONDS",
                    "1200",
                ),
            ]),
        )
        .unwrap();

        let from_files = load(&configuration_dir(), Environment::Local, vars(&[])).unwrap();
        assert_eq!(settings.rate_limit.login_per_account.burst, 9);
        let slowdown = settings.rate_limit.login_account_slowdown;
        assert_eq!(slowdown.max_delay_milliseconds, 1200);
        assert_eq!(
            slowdown.free_attempts, from_files.rate_limit.login_account_slowdown.free_attempts,
            "a field no variable names keeps its value from the files"
        );
    }
}
