//! Schema migrations, embedded in the binary so that `newsletter migrate`
//! needs no other tool. A deploy job runs it before new instances start; the
//! server itself never migrates.
//!
//! A migration runs while the previous release serves traffic. A DDL
//! statement that waits for a lock (behind a long transaction) makes every
//! query on that table queue behind it, so each transactional migration runs
//! with a short `lock_timeout`: it gives up quickly, lets traffic through,
//! and is tried again a little later.

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::{Connection, PgConnection, PgPool};

use crate::configuration::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates the configured database if it does not exist, so that a fresh
/// Postgres server needs no manual step.
pub async fn ensure_database_exists(settings: &DatabaseSettings) -> Result<(), anyhow::Error> {
    let mut connection = PgConnection::connect_with(&settings.without_db().database("postgres"))
        .await
        .with_context(|| {
            format!(
                "Failed to connect to Postgres at {}:{}",
                settings.host, settings.port
            )
        })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&settings.database_name)
            .fetch_one(&mut connection)
            .await
            .context("Failed to check whether the database exists")?;
    if !exists {
        let statement = format!(
            r#"CREATE DATABASE "{}""#,
            settings.database_name.replace('"', "\"\"")
        );
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .with_context(|| format!("Failed to create database {}", settings.database_name))?;
        tracing::info!(database = %settings.database_name, "Created the database");
    }
    Ok(())
}

/// How patient a migration is with locks.
#[derive(Debug, Clone, Copy)]
pub struct LockPolicy {
    /// The longest one statement waits for a lock before giving up.
    pub lock_timeout: Duration,
    /// Attempts per migration before the deploy fails.
    pub max_attempts: u32,
    /// Pause between attempts, letting the queries that waited go through.
    pub retry_delay: Duration,
}

impl Default for LockPolicy {
    fn default() -> Self {
        Self {
            lock_timeout: Duration::from_secs(2),
            max_attempts: 30,
            retry_delay: Duration::from_secs(2),
        }
    }
}

/// The SQLSTATE of `lock_not_available`, raised when `lock_timeout` expires.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Applies pending migrations one at a time, logging each, so an operator
/// watching a deploy sees where it is.
pub async fn run_pending(pool: &PgPool) -> Result<(), anyhow::Error> {
    run_pending_with(pool, LockPolicy::default()).await
}

pub async fn run_pending_with(pool: &PgPool, policy: LockPolicy) -> Result<(), anyhow::Error> {
    let applied = applied_versions(pool).await?;
    let pending: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .collect();
    tracing::info!(
        applied = applied.len(),
        pending = pending.len(),
        "Checked the schema"
    );
    for (n, migration) in pending.iter().enumerate() {
        tracing::info!(
            version = migration.version,
            description = %migration.description,
            "Applying migration {} of {}",
            n + 1,
            pending.len()
        );
        apply(pool, migration, policy).await.with_context(|| {
            format!(
                "Failed to apply migration {} ({})",
                migration.version, migration.description
            )
        })?;
    }
    tracing::info!("The schema is up to date");
    Ok(())
}

/// Applies one migration on a connection of its own, retrying when it timed
/// out waiting for a lock. Migrations that run outside a transaction build
/// indexes CONCURRENTLY, which block no writer; they get no lock timeout,
/// since one expiring halfway would leave an invalid index behind.
async fn apply(
    pool: &PgPool,
    migration: &Migration,
    policy: LockPolicy,
) -> Result<(), MigrateError> {
    let mut attempt = 1;
    loop {
        let mut connection = pool.acquire().await?.detach();
        if !migration.no_tx {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET lock_timeout = {}",
                policy.lock_timeout.as_millis().max(1)
            )))
            .execute(&mut connection)
            .await?;
        }
        let result = MIGRATOR.run_to(migration.version, &mut connection).await;
        // The session carries lock_timeout: close it rather than reuse it.
        let _ = connection.close().await;
        match result {
            Err(e) if waited_too_long_for_a_lock(&e) && attempt < policy.max_attempts => {
                tracing::warn!(
                    version = migration.version,
                    attempt,
                    "The migration waited over {:?} for a lock; trying again in {:?}",
                    policy.lock_timeout,
                    policy.retry_delay
                );
                attempt += 1;
                tokio::time::sleep(policy.retry_delay).await;
            }
            other => return other,
        }
    }
}

fn waited_too_long_for_a_lock(error: &MigrateError) -> bool {
    let database_error = match error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => e.as_database_error(),
        _ => None,
    };
    database_error.and_then(|e| e.code()).as_deref() == Some(LOCK_NOT_AVAILABLE)
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, anyhow::Error> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("Failed to read the migration history")?;
    if !has_table {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .context("Failed to read the migration history")
}
