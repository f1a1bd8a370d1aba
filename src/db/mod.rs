//! Every way this service reaches Postgres: the pools, the limits on how long
//! any piece of database work may take, and the transaction type that the
//! rest of the code writes through.
//!
//! Connections come from sqlx's pool. A connection goes back to the pool when
//! whatever holds it is dropped, so no caller has a step to remember; one that
//! failed in a way that leaves its state unknown (a broken socket, a query cut
//! off by a deadline) is closed instead of going back.
//!
//! Database work is bounded three times over. Postgres ends a statement, a
//! lock wait or an idle transaction that runs past its limit
//! (`statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`,
//! set on every connection), and probes an idle client with TCP keepalives
//! so that a client that vanished does not hold its locks. sqlx does not let
//! us set keepalives on our side of the socket, so this side keeps its own
//! deadline: a whole transaction, and each statement of the delivery
//! workers ([`Db::bounded`]), must finish within the work timeout. A
//! connection that silently stopped answering (a dropped route, a frozen
//! server) cannot hang a request or a worker until the kernel gives up; it
//! becomes a [`Error::TimedOut`], which the HTTP edge answers with 503, and
//! a transaction's connection is closed. (A worker's goes back to sqlx's
//! pool, whose check on return may hold that one pool place until the kernel
//! gives up on the socket; the worker itself goes on.)
//!
//! Processes wake each other through [`wakeups`]: one listening connection
//! per process, and notifications sent after the commit they announce.
//!
//! [`Connection::transaction`] runs a piece of work, commits it, and only then
//! runs what the work asked to happen after the commit
//! ([`Transaction::after_commit`]): handing email to the delivery task, say.
//! Work that failed before `COMMIT` because its connection broke is run once
//! more on a fresh connection before anyone sees an error.

mod group_commit;
pub mod wakeups;

use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::metrics::gauge::Gauge;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPoolOptions, Postgres};
use sqlx::{Connection as _, PgConnection, PgPool};

pub use group_commit::{Batched, GroupCommit, GroupCommitLimits};

use crate::configuration::DatabaseSettings;

/// A connection idle for longer than this is pinged before use: Postgres may
/// have restarted, or a proxy dropped it, since it was last used. One in
/// steady use is not: under load that ping is one more round trip on every
/// request.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// How long that ping may take before the connection counts as dead.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Why database work did not happen, or may not have.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Postgres refused the work or could not be reached. Nothing of the
    /// transaction was committed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// The connection broke while `COMMIT` was on its way: the work may or
    /// may not have been committed.
    #[error("the connection failed during COMMIT; the transaction may or may not have committed")]
    CommitUnknown(#[source] sqlx::Error),
    /// The work did not finish within its deadline. It may have committed if
    /// the deadline passed during `COMMIT`.
    #[error("the database did not finish the work within {0:?}")]
    TimedOut(Duration),
    /// The work waited longer than this for its turn and was never started.
    #[error("the work waited over {0:?} for a connection and was not started")]
    NotStarted(Duration),
}

impl Error {
    /// Whether the database could not serve us right now, rather than
    /// refusing the work itself: worth a 503 and a retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sql(e) => is_unavailable(e),
            Error::CommitUnknown(_) | Error::TimedOut(_) | Error::NotStarted(_) => true,
        }
    }

    /// Whether nothing of the work can have been committed, so that running
    /// it again cannot do it twice.
    pub fn nothing_committed(&self) -> bool {
        matches!(self, Error::Sql(_) | Error::NotStarted(_))
    }
}

/// Whether the error says the database cannot serve us right now, rather
/// than that something is wrong with the request or our SQL: no connection,
/// a connection that broke or hung up mid-conversation (a server going away,
/// a proxy in front of one that is down), Postgres refusing connections while
/// it starts, stops or is full, or a statement it cut off at its timeout.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    is_broken_connection(e)
        || matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        || e.as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| {
                // 53300: too many connections; 57014: statement_timeout;
                // 55P03: lock_timeout; 25P03: idle-in-transaction timeout.
                matches!(&*code, "53300" | "57014" | "55P03" | "25P03")
            })
}

/// Whether the connection the error came from can no longer be trusted: its
/// socket failed, or the server ended the session. Work that failed this way
/// before `COMMIT` can run again on another connection.
fn is_broken_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exceptions; 57P0x: shutting down, crashed,
            // starting up.
            code.starts_with("08") || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// The connections `newsletter migrate` applies migrations on: without the
/// service's statement timeout, since building an index on a large table
/// may rightly take minutes. The migrator bounds its lock waits itself.
pub fn migration_pool(settings: &DatabaseSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout())
        .connect_lazy_with(settings.with_db())
}

/// A pool of connections and the deadline for work on them. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    work_timeout: Duration,
    /// Tasks in [`Db::acquire`] now; a gauge nobody reads unless the pool
    /// is watched ([`crate::metrics::Metrics::watch_pool`]).
    waiting: Gauge,
}

impl Db {
    /// Up to `max_connections` connections, opened on demand: the service
    /// starts and answers its health check while Postgres is still coming
    /// up, and work that needs the database fails fast with 503 until it is
    /// reachable.
    pub fn connect_lazy(settings: &DatabaseSettings, max_connections: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .test_before_acquire(false)
            .before_acquire(|connection, metadata| {
                Box::pin(async move {
                    if metadata.idle_for < IDLE_BEFORE_PING {
                        return Ok(true);
                    }
                    // A failed ping discards the connection; the pool opens
                    // another. So does one that does not answer in time: a
                    // silent connection would otherwise use up the whole
                    // acquire timeout, and stay idle for the next acquire.
                    let ping = tokio::time::timeout(PING_TIMEOUT, connection.ping()).await;
                    Ok(matches!(ping, Ok(Ok(()))))
                })
            })
            .connect_lazy_with(settings.with_limits());
        Self {
            pool,
            work_timeout: settings.work_timeout(),
            waiting: Gauge::default(),
        }
    }

    /// The same pool, counting the tasks that wait for a connection in
    /// `waiting`.
    pub(crate) fn counting_waits(self, waiting: Gauge) -> Self {
        Self { waiting, ..self }
    }

    /// How long one piece of work may take before its connection is given
    /// up as silent.
    pub fn work_timeout(&self) -> Duration {
        self.work_timeout
    }

    /// The pool itself, for listening to notifications and for commands an
    /// operator runs by hand.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection from the pool. Waits at most the acquire timeout, then
    /// fails with [`sqlx::Error::PoolTimedOut`].
    pub async fn acquire(&self) -> Result<Connection, Error> {
        let _waiting = Waiting::start(&self.waiting);
        Ok(Connection {
            inner: self.pool.acquire().await?,
            db: self.clone(),
        })
    }

    /// Runs `work` in a transaction on a connection from the pool; see
    /// [`Connection::transaction`].
    pub async fn transaction<T>(
        &self,
        work: impl AsyncFn(&mut Transaction<'_>) -> Result<T, sqlx::Error>,
    ) -> Result<T, Error> {
        self.acquire().await?.transaction(work).await
    }

    /// Runs `work` as [`Db::transaction`] does, with `limit` (when shorter)
    /// in place of the work timeout, the wait for a connection included:
    /// for work whose answer is a convenience, which its caller would
    /// rather go without than keep a request waiting for. Past the limit it
    /// fails with [`Error::NotStarted`] (no connection in time) or
    /// [`Error::TimedOut`], closing the connection as any transaction cut
    /// off at its deadline does.
    pub async fn transaction_within<T>(
        &self,
        limit: Duration,
        work: impl AsyncFn(&mut Transaction<'_>) -> Result<T, sqlx::Error>,
    ) -> Result<T, Error> {
        let limit = limit.min(self.work_timeout);
        let deadline = Instant::now() + limit;
        let mut connection = tokio::time::timeout_at(deadline, self.acquire())
            .await
            .map_err(|_| Error::NotStarted(limit))??;
        // What is left of the limit bounds the transaction, a retry on a
        // fresh connection included.
        connection.db.work_timeout = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        connection.transaction(work).await
    }

    /// Whether Postgres answers a query within the work timeout.
    pub async fn ping(&self) -> Result<(), Error> {
        self.transaction(async |transaction| {
            sqlx::query("SELECT 1").execute(&mut **transaction).await?;
            Ok(())
        })
        .await
    }
}

/// Counts a task as waiting for a connection for as long as it lives, so
/// that an acquire cancelled midway (a request whose client went away) is
/// not counted as waiting for ever.
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn start(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A connection taken from the pool. Dropped, it goes back, unless it failed
/// in a way that leaves its state unknown; then it is closed.
pub struct Connection {
    inner: PoolConnection<Postgres>,
    db: Db,
}

impl Connection {
    /// Runs `work` in a transaction and commits it, then runs what the work
    /// registered with [`Transaction::after_commit`]. The whole of it, from
    /// `BEGIN` to `COMMIT`, must finish within the work timeout.
    ///
    /// If the connection breaks before `COMMIT` is sent, nothing was
    /// committed: the work runs once more, on a connection checked with a
    /// ping first. A failure during `COMMIT` is not retried, since the first
    /// attempt may have committed.
    pub async fn transaction<T>(
        mut self,
        work: impl AsyncFn(&mut Transaction<'_>) -> Result<T, sqlx::Error>,
    ) -> Result<T, Error> {
        // One deadline for everything, the second attempt included.
        let deadline = Instant::now() + self.db.work_timeout;
        let db = self.db.clone();
        match self.run(&work, deadline).await {
            Err(Error::Sql(e)) if is_broken_connection(&e) => {
                tracing::warn!(
                    error = %crate::telemetry::error_chain_line(&e),
                    "A database connection broke before COMMIT; running the transaction again on a fresh one"
                );
                drop(self);
                db.acquire_checked(deadline)
                    .await?
                    .run(&work, deadline)
                    .await
            }
            other => other,
        }
    }

    async fn run<T>(
        &mut self,
        work: &impl AsyncFn(&mut Transaction<'_>) -> Result<T, sqlx::Error>,
        deadline: Instant,
    ) -> Result<T, Error> {
        let outcome = tokio::time::timeout_at(deadline, run_on(&mut self.inner, work)).await;
        let outcome = outcome.unwrap_or(Err(Error::TimedOut(self.db.work_timeout)));
        if let Err(e) = &outcome {
            let broken = match e {
                Error::Sql(e) | Error::CommitUnknown(e) => is_broken_connection(e),
                Error::TimedOut(_) | Error::NotStarted(_) => true,
            };
            if broken {
                // Its socket may be mid-message: never lend it out again.
                self.inner.close_on_drop();
            }
        }
        outcome
    }
}

impl Db {
    /// A connection that answered a ping just now, found before `deadline`.
    /// After one connection broke, the others that sat idle for less than
    /// [`IDLE_BEFORE_PING`] may be just as dead (Postgres restarted): each of
    /// those is closed and the next one tried.
    async fn acquire_checked(&self, deadline: Instant) -> Result<Connection, Error> {
        let checked = async {
            loop {
                let mut connection = self.acquire().await?;
                if connection.inner.ping().await.is_ok() {
                    return Ok(connection);
                }
                connection.inner.close_on_drop();
            }
        };
        tokio::time::timeout_at(deadline, checked)
            .await
            .unwrap_or(Err(Error::TimedOut(self.work_timeout)))
    }

    /// Runs `work`, a statement or a few that are each their own
    /// transaction, on a connection from the pool, and abandons it with
    /// [`Error::TimedOut`] once the work timeout passes, closing the
    /// connection: for the delivery workers and the doorbell, which must not
    /// wait on a connection that went silent.
    ///
    /// `work` returns a boxed future, unlike [`Db::transaction`]'s: the
    /// workers run on tasks that may move between threads, and the compiler
    /// cannot yet prove an async closure's future `Send` for every lifetime
    /// of the connection it borrows.
    pub async fn bounded<T>(
        &self,
        work: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + self.work_timeout;
        let mut connection = self.acquire().await?;
        let outcome = tokio::time::timeout_at(deadline, work(&mut connection.inner)).await;
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if is_broken_connection(&e) {
                    connection.inner.close_on_drop();
                }
                Err(Error::Sql(e))
            }
            Err(_) => {
                connection.inner.close_on_drop();
                Err(Error::TimedOut(self.work_timeout))
            }
        }
    }
}

/// `BEGIN`, the work, `COMMIT`, then the work's after-commit actions.
async fn run_on<T>(
    connection: &mut PgConnection,
    work: &impl AsyncFn(&mut Transaction<'_>) -> Result<T, sqlx::Error>,
) -> Result<T, Error> {
    let mut transaction = Transaction {
        inner: connection.begin().await?,
        after_commit: Vec::new(),
    };
    let value = work(&mut transaction).await?;
    let Transaction {
        inner,
        after_commit,
    } = transaction;
    inner.commit().await.map_err(|e| {
        if is_broken_connection(&e) {
            Error::CommitUnknown(e)
        } else {
            // Postgres answered, and its answer was no.
            Error::Sql(e)
        }
    })?;
    for action in after_commit {
        action();
    }
    Ok(value)
}

/// An open transaction. Queries run on it through `&mut **transaction`;
/// dropped without committing, it rolls back, and its after-commit actions
/// are dropped unrun.
pub struct Transaction<'c> {
    inner: sqlx::Transaction<'c, Postgres>,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl Transaction<'_> {
    /// Runs `action` once this transaction has committed, and never if it
    /// does not. For what must not happen before the data is durable and
    /// must not be forgotten once it is.
    pub fn after_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(action));
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}
