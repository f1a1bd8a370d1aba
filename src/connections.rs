//! The Postgres connections of one HTTP worker thread.
//!
//! sqlx's pool sends a round trip (`Sync`, waiting for `ReadyForQuery`) on
//! every connection it takes back, and that cannot be turned off. A request
//! that commits has already had its answer from Postgres, so that check is
//! one more message for both sides on every request: a subscription makes six
//! round trips where its SQL needs five. This cache hands connections out and
//! takes them back without it. What the check was for is kept another way: a
//! connection goes back only when the code holding it says its last exchange
//! succeeded (a lease dropped on an error or a cancelled request closes its
//! connection instead), and a connection that sat idle is pinged before it is
//! handed out again.
//!
//! A cache belongs to one worker thread, like the runtime its sockets are
//! driven by; the delivery workers keep sqlx's pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::configuration::DatabaseSettings;

/// A connection idle for longer than this is pinged before use: Postgres may
/// have restarted, or a proxy dropped it, since it was last used.
pub(crate) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// A connection idle for longer than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Connections are replaced after this long, so that server-side memory and
/// a failover's old routes do not live for ever.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// Up to `max_connections` connections to Postgres, opened on demand.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
    connect: PgConnectOptions,
    acquire_timeout: Duration,
}

struct Idle {
    connection: PgConnection,
    opened: Instant,
    since: Instant,
}

impl Idle {
    fn is_stale(&self) -> bool {
        self.since.elapsed() > IDLE_TIMEOUT || self.opened.elapsed() > MAX_LIFETIME
    }
}

impl Connections {
    /// Opens nothing yet: the server starts and answers its health check
    /// while Postgres is still coming up, and requests that need the
    /// database fail with 503 until it is reachable.
    pub fn new(settings: &DatabaseSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(settings.max_connections as usize)),
                connect: settings.with_db(),
                acquire_timeout: settings.acquire_timeout(),
            }),
        }
    }

    /// A connection for one request: the most recently used idle one, or a
    /// new one. Waits at most the acquire timeout, for a free place and for
    /// opening a connection together, then fails with
    /// [`sqlx::Error::PoolTimedOut`].
    pub async fn acquire(&self) -> Result<Lease, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.inner.acquire_timeout;
        let permit = tokio::time::timeout_at(deadline, self.inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .expect("the semaphore is never closed");
        loop {
            let Some(mut idle) = self.take_idle() else {
                let connection = tokio::time::timeout_at(
                    deadline,
                    PgConnection::connect_with(&self.inner.connect),
                )
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
                return Ok(self.lease(connection, Instant::now(), permit));
            };
            if idle.since.elapsed() < IDLE_BEFORE_PING {
                return Ok(self.lease(idle.connection, idle.opened, permit));
            }
            match tokio::time::timeout_at(deadline, idle.connection.ping()).await {
                Ok(Ok(())) => return Ok(self.lease(idle.connection, idle.opened, permit)),
                // Dead, or too slow to say: drop it and try the next.
                Ok(Err(error)) => {
                    tracing::info!(%error, "An idle Postgres connection failed its ping")
                }
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            }
        }
    }

    /// The most recently used idle connection still worth using. Ones past
    /// their idle time or lifetime are closed on the way.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.inner.idle.lock().expect("never held across a panic");
        let expired: Vec<Idle> = idle.extract_if(.., |entry| entry.is_stale()).collect();
        // Connections go back on the end, so the last is the freshest.
        let taken = idle.pop();
        drop(idle);
        for stale in expired {
            close_politely(stale.connection);
        }
        taken
    }

    fn lease(
        &self,
        connection: PgConnection,
        opened: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Lease {
        Lease {
            connection: Some(connection),
            opened,
            home: self.inner.clone(),
            reusable: false,
            _permit: permit,
        }
    }

    /// Connections open and waiting for a request.
    pub fn idle(&self) -> usize {
        self.inner
            .idle
            .lock()
            .expect("never held across a panic")
            .len()
    }
}

fn close_politely(connection: PgConnection) {
    // Only where a runtime is running: a cache dropped with its worker
    // thread just drops its sockets.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), connection.close()).await;
        });
    }
}

/// One request's use of a connection. Dropped as it is, it closes the
/// connection; [`Lease::give_back`] returns it to the cache.
pub struct Lease {
    connection: Option<PgConnection>,
    opened: Instant,
    home: Arc<Inner>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Returns the connection for the next request. Call it only after the
    /// connection's last exchange succeeded and nothing is left open on it
    /// (a transaction committed or rolled back); any other way out of a
    /// request, an error or a cancelled future, may leave it mid-exchange.
    pub fn give_back(mut self) {
        self.reusable = true;
    }
}

impl std::ops::Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("present until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.reusable {
            self.home
                .idle
                .lock()
                .expect("never held across a panic")
                .push(Idle {
                    connection,
                    opened: self.opened,
                    since: Instant::now(),
                });
        }
        // Otherwise the connection drops here, closing its socket; Postgres
        // rolls back whatever it had open. The permit is released after the
        // connection is back, so a waiting request finds it.
    }
}
