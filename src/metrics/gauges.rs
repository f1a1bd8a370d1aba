//! The gauges read at scrape time: the connection pools, and what the
//! database holds (the outbox's depth, the ledger's, and the campaigns
//! sending now). Each scrape builds them afresh in a registry of their own,
//! so a campaign that finished or a status that emptied drops out instead of
//! keeping its last value.
//!
//! The database is read with two statements on a pool of its own, each over
//! rows an index or a small table narrows down: pending outbox messages
//! (a partial index) and issues not yet finished (one row per issue, never
//! a count over the ledger, whose counters live on the issue). When the
//! database does not answer in time the scrape still answers, with
//! `newsletter_database_up` at 0 and without those gauges.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Families, PREFIX};
use crate::db::Db;

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
    if let Some(db) = database {
        let state = tokio::time::timeout(DATABASE_PATIENCE, read_database(&db)).await;
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

/// What the database says, read in one go so that the figures agree.
struct DatabaseState {
    outbox_pending: i64,
    outbox_claimed: i64,
    oldest_pending_seconds: f64,
    issues: Vec<IssueRow>,
}

#[derive(sqlx::FromRow)]
struct IssueRow {
    id: Uuid,
    state: String,
    recipients: i64,
    sent: i64,
    failed: i64,
    skipped: i64,
    bounced: i64,
    complained: i64,
}

async fn read_database(db: &Db) -> Result<DatabaseState, crate::db::Error> {
    db.bounded(|connection| Box::pin(query(connection))).await
}

async fn query(connection: &mut PgConnection) -> Result<DatabaseState, sqlx::Error> {
    // Pending messages only: sent and failed ones stay for weeks (see
    // retention) and counting them would grow with the table.
    let (outbox_pending, outbox_claimed, oldest_pending_seconds): (i64, i64, f64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE claimed_until IS NULL OR claimed_until < now()), \
                    count(*) FILTER (WHERE claimed_until >= now()), \
                    COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(enqueued_at)), 0)::float8 \
             FROM email_outbox WHERE status = 'pending'",
    )
    .fetch_one(&mut *connection)
    .await?;
    let issues: Vec<IssueRow> = sqlx::query_as(
        "SELECT id, state, recipients, sent, failed, skipped, bounced, complained \
         FROM newsletter_issues WHERE state IN ('sending', 'paused')",
    )
    .fetch_all(&mut *connection)
    .await?;
    Ok(DatabaseState {
        outbox_pending,
        outbox_claimed,
        oldest_pending_seconds,
        issues,
    })
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
            if issue.state == "sending" {
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
