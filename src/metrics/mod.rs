//! What the service counts for Prometheus, and the one call per event that
//! counts it.
//!
//! [`Metrics`] holds every metric family of one application instance in a
//! registry of its own, not a global one: tests run several applications in
//! one process, and each must see only its own counts. It is cheap to clone
//! (every family is shared behind an `Arc`), so the parts of the service
//! that count something keep a clone and call one method per event, say
//! [`Metrics::signup_stored`]; none of them sees a label or a registry.
//! Recording is a few atomic operations and never touches the network or
//! the database.
//!
//! What is a state rather than an event (the outbox's depth, the ledger,
//! campaigns in progress, the connection pools) is read when Prometheus
//! scrapes ([`gauges`]), not kept up to date on every change: a request
//! never pays for it.
//!
//! `GET /metrics` is served by [`server`], on a listener of its own;
//! [`http`] counts the public server's requests.

mod gauges;
pub mod http;
pub mod server;

pub use gauges::{DatabaseGauges, DatabaseState, IssueCounts};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;

use crate::db::Db;
use crate::delivery::failover::CircuitState;

/// Every metric name starts with it.
const PREFIX: &str = "newsletter";

/// Latency buckets for HTTP requests, in seconds: a health check takes well
/// under a millisecond, a sign-up a few, a request waiting out a database
/// outage seconds.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Round trips to the email API, in seconds: tens of milliseconds for a
/// healthy batch, up to the client's timeout (10 s) for a failing one.
const EMAIL_API_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Calls to webhook endpoints, in seconds: tens of milliseconds for a
/// healthy receiver, up to the call's timeout (15 s by default) for one
/// that hangs. The email API's, since both are one HTTP call out.
const WEBHOOK_CALL_BUCKETS: [f64; 12] = EMAIL_API_BUCKETS;
/// From an email's commit to its send being recorded, in seconds: a
/// handed-over confirmation goes in tens of milliseconds, a retried one
/// after minutes, one held through an outage after hours.
const COMMIT_TO_SEND_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
];

/// One application instance's metrics. Cheap to clone; every clone counts
/// into the same registry.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Families>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Families {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    signups_stored: Counter,
    signups_suppressed: Family<ReasonLabels, Counter>,
    signups_rate_limited: Counter,
    emails_sent: Family<StreamLabels, Counter>,
    email_api_errors: Family<KindLabels, Counter>,
    email_api_duration: Histogram,
    commit_to_send: Histogram,
    rate_limit_fallbacks: Counter,
    provider_sent: Family<ProviderStreamLabels, Counter>,
    provider_failures: Family<ProviderClassLabels, Counter>,
    provider_circuits: Family<ProviderStateLabels, Gauge>,
    webhook_records: Family<RecordLabels, Counter>,
    outgoing_webhook_calls: Family<OutcomeLabels, Counter>,
    outgoing_webhook_duration: Histogram,
    pool_waiting: Family<PoolLabels, Gauge>,
    /// The pools whose connections are counted at each scrape.
    pools: Mutex<Vec<(&'static str, PgPool)>>,
    /// Where the scrape reads the outbox, ledger and campaign gauges; none
    /// for metrics that nobody scrapes (commands, benches).
    database: Mutex<Option<Arc<dyn DatabaseGauges>>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Suppressed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStreamLabels {
    provider: &'static str,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderClassLabels {
    provider: &'static str,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStateLabels {
    provider: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: EmailApiError,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    kind: WebhookRecord,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: WebhookCall,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

/// Why a sign-up was answered as usual with nothing stored or sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Suppressed {
    /// The hidden form field was filled in: a bot.
    honeypot,
    /// The address had reached its per-address email limit.
    address_limit,
    /// The address is on the suppression list.
    suppression_list,
}

/// How a call to the email API, or one message in it, failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum EmailApiError {
    /// No answer: a connection failure or the client's timeout.
    unreachable,
    /// `429`: the API's rate limit.
    rate_limited,
    /// `5xx`.
    server_error,
    /// Any other refusal of the whole call (`401`, `422`, …).
    rejected,
    /// An answer that did not say which messages were taken.
    unreadable_answer,
    /// One message of a batch the API took was refused.
    message_refused,
}

/// A webhook record handled for the first time, by what it reports.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WebhookRecord {
    hard_bounce,
    soft_bounce,
    /// An "unsubscribe" reply, or a bounce that says nothing of the address.
    other_bounce,
    spam_complaint,
    subscription_change,
    delivery,
}

/// What became of one outgoing webhook delivery attempt. Exactly one per
/// attempt whose outcome the worker learned.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum WebhookCall {
    /// The endpoint answered 2xx.
    delivered,
    /// Failed (an error status, a timeout, no connection): goes again
    /// after the next wait.
    retrying,
    /// Failed with no wait left: kept as failed.
    given_up,
    /// Not made: the endpoint's address is internal (loopback, private,
    /// link-local, metadata). Retried or given up like any failure, but
    /// counted here, since only an operator can fix it.
    address_refused,
}

impl Default for Families {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(http_histogram as fn() -> _);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by method and route pattern",
            Unit::Seconds,
            http_duration.clone(),
        );
        let signups_stored = Counter::default();
        registry.register(
            "signups_stored",
            "Sign-ups stored, each with its email queued",
            signups_stored.clone(),
        );
        let signups_suppressed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "signups_suppressed",
            "Sign-ups answered as usual with nothing stored or sent, by reason",
            signups_suppressed.clone(),
        );
        let signups_rate_limited = Counter::default();
        registry.register(
            "signups_rate_limited",
            "Sign-ups refused with 429 by the per-IP limit",
            signups_rate_limited.clone(),
        );
        let emails_sent = Family::<StreamLabels, Counter>::default();
        registry.register(
            "emails_sent",
            "Emails the email API accepted, by message stream",
            emails_sent.clone(),
        );
        let email_api_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "email_api_errors",
            "Failed calls to the email API, and messages it refused, by kind",
            email_api_errors.clone(),
        );
        let email_api_duration = Histogram::new(EMAIL_API_BUCKETS);
        registry.register_with_unit(
            "email_api_batch_duration",
            "Round trip of one batch call to the email API",
            Unit::Seconds,
            email_api_duration.clone(),
        );
        let commit_to_send = Histogram::new(COMMIT_TO_SEND_BUCKETS);
        registry.register_with_unit(
            "outbox_commit_to_send",
            "From an outbox email's commit to its send being recorded",
            Unit::Seconds,
            commit_to_send.clone(),
        );
        let rate_limit_fallbacks = Counter::default();
        registry.register(
            "rate_limit_fallbacks",
            "Rate limit checks decided by the in-process limiter because Redis did not answer",
            rate_limit_fallbacks.clone(),
        );
        let provider_sent = Family::<ProviderStreamLabels, Counter>::default();
        registry.register(
            "provider_emails_sent",
            "Emails an email provider accepted, by provider and message stream",
            provider_sent.clone(),
        );
        let provider_failures = Family::<ProviderClassLabels, Counter>::default();
        registry.register(
            "provider_failures",
            "Calls and emails an email provider did not take, by provider and class \
             (down, throttled, passing, refused)",
            provider_failures.clone(),
        );
        let provider_circuits = Family::<ProviderStateLabels, Gauge>::default();
        registry.register(
            "provider_circuit",
            "1 for the state each email provider's circuit is in (closed, open, half_open)",
            provider_circuits.clone(),
        );
        let webhook_records = Family::<RecordLabels, Counter>::default();
        registry.register(
            "webhook_records",
            "Email provider webhook records handled (repeats left out), by kind",
            webhook_records.clone(),
        );
        let outgoing_webhook_calls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "outgoing_webhook_calls",
            "Outgoing webhook delivery attempts, by outcome (delivered, retrying, given_up, \
             address_refused)",
            outgoing_webhook_calls.clone(),
        );
        let outgoing_webhook_duration = Histogram::new(WEBHOOK_CALL_BUCKETS);
        registry.register_with_unit(
            "outgoing_webhook_call_duration",
            "Round trip of one call to a webhook endpoint",
            Unit::Seconds,
            outgoing_webhook_duration.clone(),
        );
        let pool_waiting = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_waiting_tasks",
            "Tasks waiting for a database connection, by pool",
            pool_waiting.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            signups_stored,
            signups_suppressed,
            signups_rate_limited,
            emails_sent,
            email_api_errors,
            email_api_duration,
            commit_to_send,
            rate_limit_fallbacks,
            provider_sent,
            provider_failures,
            provider_circuits,
            webhook_records,
            outgoing_webhook_calls,
            outgoing_webhook_duration,
            pool_waiting,
            pools: Mutex::new(Vec::new()),
            database: Mutex::new(None),
        }
    }
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

impl Metrics {
    /// Metrics whose scrape also reads the outbox, ledger and campaign
    /// gauges through `database`, which should read on a pool of its own,
    /// so that a scrape never takes a connection a request is waiting for.
    pub fn with_database(database: impl DatabaseGauges + 'static) -> Self {
        let metrics = Self::default();
        *metrics.inner.database.lock().unwrap() = Some(Arc::new(database));
        metrics
    }

    /// The text Prometheus scrapes: the counters, then the gauges read now.
    pub async fn render(&self) -> Result<String, std::fmt::Error> {
        // The counters first, then the database: an email counted as sent
        // was recorded before the count, so the gauges read after it show
        // it sent too. Read the other way round, one scrape could show it
        // both sent and still being sent.
        let mut text = String::new();
        encode_registry(&mut text, &self.inner.registry)?;
        let now = gauges::read(&self.inner).await;
        encode_registry(&mut text, &now)?;
        encode_eof(&mut text)?;
        Ok(text)
    }

    /// Counts the connections of `db` at each scrape, under `pool`, and
    /// the tasks waiting for one of them. Pools of the same name add up.
    pub fn watch_pool(&self, pool: &'static str, db: Db) -> Db {
        self.inner
            .pools
            .lock()
            .unwrap()
            .push((pool, db.pool().clone()));
        let waiting = self
            .inner
            .pool_waiting
            .get_or_create_owned(&PoolLabels { pool });
        db.counting_waits(waiting)
    }

    /// One HTTP request answered. `route` is the pattern it matched, never
    /// the raw path (which would hold tokens and make a series per link).
    pub fn http_request(&self, method: &'static str, route: &str, status: u16, took: Duration) {
        let route = route.to_owned();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    pub fn signup_stored(&self) {
        self.inner.signups_stored.inc();
    }

    pub fn signup_suppressed(&self, reason: Suppressed) {
        self.inner
            .signups_suppressed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn signup_rate_limited(&self) {
        self.inner.signups_rate_limited.inc();
    }

    /// `count` emails of `stream` accepted by the email API.
    pub fn emails_sent(&self, stream: &str, count: u64) {
        self.inner
            .emails_sent
            .get_or_create(&StreamLabels {
                stream: stream.to_owned(),
            })
            .inc_by(count);
    }

    pub fn email_api_error(&self, kind: EmailApiError) {
        self.inner
            .email_api_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn email_api_batch(&self, took: Duration) {
        self.inner.email_api_duration.observe(took.as_secs_f64());
    }

    /// Seconds from commit to recorded send, one per email marked sent.
    pub fn outbox_sent(&self, delays_seconds: &[f64]) {
        for delay in delays_seconds {
            self.inner.commit_to_send.observe(delay.max(0.0));
        }
    }

    /// `count` emails of `stream` accepted by `provider`.
    pub fn provider_sent(&self, provider: &'static str, stream: &str, count: u64) {
        self.inner
            .provider_sent
            .get_or_create(&ProviderStreamLabels {
                provider,
                stream: stream.to_owned(),
            })
            .inc_by(count);
    }

    /// A call or an email `provider` did not take, by class.
    pub fn provider_failure(&self, provider: &'static str, class: &'static str) {
        self.inner
            .provider_failures
            .get_or_create(&ProviderClassLabels { provider, class })
            .inc();
    }

    /// `provider`'s circuit is now in `state`.
    pub fn provider_circuit(&self, provider: &'static str, state: CircuitState) {
        for each in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            self.inner
                .provider_circuits
                .get_or_create(&ProviderStateLabels {
                    provider,
                    state: each.as_str(),
                })
                .set(i64::from(each == state));
        }
    }

    pub fn rate_limit_fallback(&self) {
        self.inner.rate_limit_fallbacks.inc();
    }

    pub fn webhook_record(&self, record: WebhookRecord) {
        self.inner
            .webhook_records
            .get_or_create(&RecordLabels { kind: record })
            .inc();
    }

    /// One outgoing webhook attempt settled as `outcome`.
    pub fn outgoing_webhook_call(&self, outcome: WebhookCall) {
        self.inner
            .outgoing_webhook_calls
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// One call to a webhook endpoint took `took`, answered or not.
    pub fn outgoing_webhook_call_duration(&self, took: Duration) {
        self.inner
            .outgoing_webhook_duration
            .observe(took.as_secs_f64());
    }
}
