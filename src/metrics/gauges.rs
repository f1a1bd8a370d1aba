//! The gauges read at scrape time: the connection pools, and what the
//! database holds (the outbox's depth, the webhook deliveries', the
//! ledger's, and the campaigns sending now). Each scrape builds them afresh in a registry of their own,
//! so a campaign that finished or a status that emptied drops out instead of
//! keeping its last value.
//!
//! The database is read through a [`DatabaseGauges`] reader that the
//! process's builder hands over: the statements belong to the modules that
//! own those tables (the outbox store and the campaign ledger), which count
//! through this module, so it cannot call them itself. The reader runs three
//! statements on a pool of its own, each over rows an index or a small
//! table narrows down: pending outbox messages (a partial index), pending
//! webhook deliveries (a partial index too), and issues not yet finished
//! (one row per issue, never a count over the ledger, whose counters live
//! on the issue). When the database does not answer in
//! time the scrape still answers, with `newsletter_database_up` at 0 and
//! without those gauges.

use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use uuid::Uuid;

use super::{Families, PREFIX};

/// How long a scrape waits for the database before it reports it down:
/// well inside Prometheus's default scrape timeout (10 s).
const DATABASE_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssueLabels {
    issue_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabels {
    pool: &'static str,
    state: &'static str,
}

/// The gauges as they are now.
pub(super) async fn read(families: &Families) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    pools(families, &mut registry);
    let database = families.database.lock().unwrap().clone();
    if let Some(reader) = database {
        let state = tokio::time::timeout(DATABASE_PATIENCE, reader.read()).await;
        let up = Gauge::<i64>::default();
        registry.register(
            "database_up",
            "Whether the database answered this scrape's queries (1) or not (0)",
            up.clone(),
        );
        match state {
            Ok(Ok(state)) => {
                up.set(1);
                state.register(&mut registry);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::telemetry::error_chain_line(&e), "A metrics scrape could not read the database");
            }
            Err(_) => tracing::warn!("A metrics scrape gave up waiting for the database"),
        }
    }
    registry
}

/// Connections in use and idle, per pool name.
fn pools(families: &Families, registry: &mut Registry) {
    let connections = Family::<PoolStateLabels, Gauge>::default();
    for (pool, connection_pool) in families.pools.lock().unwrap().iter() {
        let idle = connection_pool.num_idle() as i64;
        let open = i64::from(connection_pool.size());
        connections
            .get_or_create(&PoolStateLabels {
                pool,
                state: "idle",
            })
            .inc_by(idle);
        connections
            .get_or_create(&PoolStateLabels {
                pool,
                state: "in_use",
            })
            .inc_by((open - idle).max(0));
    }
    registry.register(
        "db_pool_connections",
        "Open database connections, by pool and whether in use or idle",
        connections,
    );
}

/// Reads what the database says for a scrape. Implemented where the
/// process is built, by calling the owners of the tables; a scrape waits
/// for it at most [`DATABASE_PATIENCE`] and then reports the database down.
pub trait DatabaseGauges: Send + Sync {
    fn read(&self) -> BoxFuture<'_, Result<DatabaseState, crate::db::Error>>;
}

/// What the database says, read in one go so that the figures agree.
#[derive(Debug, Clone)]
pub struct DatabaseState {
    /// Emails pending and claimable.
    pub outbox_pending: i64,
    /// Emails pending and claimed by a worker.
    pub outbox_claimed: i64,
    /// How long the oldest pending email has waited; 0 when none waits.
    pub oldest_pending_seconds: f64,
    /// The issues sending or paused.
    pub issues: Vec<IssueCounts>,
    /// Outgoing webhook deliveries pending and not held by a worker:
    /// waiting for a worker or a retry, or parked with their endpoint
    /// disabled.
    pub webhooks_pending: i64,
    /// Outgoing webhook deliveries a worker holds now.
    pub webhooks_claimed: i64,
}

/// One issue sending or paused, and its counters.
#[derive(Debug, Clone)]
pub struct IssueCounts {
    pub id: Uuid,
    /// Sending now (not paused): only these get gauges of their own.
    pub sending: bool,
    pub recipients: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub bounced: i64,
    pub complained: i64,
}

impl DatabaseState {
    fn register(self, registry: &mut Registry) {
        let outbox = Family::<StatusLabels, Gauge>::default();
        outbox
            .get_or_create(&StatusLabels { status: "pending" })
            .set(self.outbox_pending);
        outbox
            .get_or_create(&StatusLabels { status: "claimed" })
            .set(self.outbox_claimed);
        registry.register(
            "outbox_messages",
            "Emails not yet sent or given up: pending (waiting for a worker, a retry among them) \
             and claimed (a worker is sending them now)",
            outbox,
        );
        let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        oldest.set(self.oldest_pending_seconds);
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "How long the oldest email waiting in the outbox has waited (0 when none waits)",
            Unit::Seconds,
            oldest,
        );

        let webhooks = Family::<StatusLabels, Gauge>::default();
        webhooks
            .get_or_create(&StatusLabels { status: "pending" })
            .set(self.webhooks_pending);
        webhooks
            .get_or_create(&StatusLabels { status: "claimed" })
            .set(self.webhooks_claimed);
        registry.register(
            "outgoing_webhook_deliveries",
            "Outgoing webhook deliveries not yet delivered or given up: pending (waiting for a \
             worker, a retry or their endpoint to be enabled) and claimed (a worker is calling now)",
            webhooks,
        );

        let ledger = Family::<StatusLabels, Gauge>::default();
        let recipients = Family::<IssueLabels, Gauge>::default();
        let sent = Family::<IssueLabels, Gauge>::default();
        for issue in &self.issues {
            let queued = issue.recipients - issue.sent - issue.failed - issue.skipped;
            for (status, count) in [
                ("queued", queued),
                ("sent", issue.sent),
                ("failed", issue.failed),
                ("skipped", issue.skipped),
                ("bounced", issue.bounced),
                ("complained", issue.complained),
            ] {
                ledger.get_or_create(&StatusLabels { status }).inc_by(count);
            }
            if issue.sending {
                let labels = IssueLabels {
                    issue_id: issue.id.to_string(),
                };
                recipients.get_or_create(&labels).set(issue.recipients);
                sent.get_or_create(&labels).set(issue.sent);
            }
        }
        registry.register(
            "ledger_deliveries",
            "Deliveries of the issues sending or paused, by status (sent counts every email \
             the API accepted; bounced and complained, those of them that came back)",
            ledger,
        );
        registry.register(
            "campaign_recipients",
            "Recipients recorded so far, per issue sending now",
            recipients,
        );
        registry.register(
            "campaign_sent_emails",
            "Emails the API accepted, per issue sending now",
            sent,
        );
    }
}
