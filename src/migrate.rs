//! Schema migrations, embedded in the binary so that `newsletter migrate`
//! needs no other tool. A deploy job runs it before new instances start; the
//! server itself never migrates.
//!
//! A migration runs while the previous release serves traffic. A DDL
//! statement that waits for a lock (behind a long transaction) makes every
//! query on that table queue behind it, so each transactional migration runs
//! with a short `lock_timeout`: it gives up quickly, lets traffic through,
//! and is tried again a little later.
//!
//! A migration that runs outside a transaction (`-- no-transaction`) builds
//! an index CONCURRENTLY. When such a build fails it leaves the index behind
//! marked invalid: present, ignored by queries, and, for a unique index, not
//! enforcing anything. A later `CREATE INDEX CONCURRENTLY IF NOT EXISTS` of
//! the same name then skips it and the step is recorded as applied, while the
//! constraint it was meant to add does not exist. So after every such
//! migration the migrator looks for invalid indexes in the schemas the app
//! uses and rebuilds each one with `REINDEX INDEX CONCURRENTLY`, which blocks
//! no writer either (and drops the copies a failed REINDEX leaves behind).
//! Rebuilding first, rather than failing at once, is what most invalid indexes
//! need: they come from a build that was interrupted (a cancelled deploy, a
//! lost connection, a deadlock) and succeed when built again. A rebuild that
//! fails again fails for a reason a person must fix, such as rows that break a
//! unique index; then the step is taken out of the migration history, so that
//! the next `newsletter migrate` runs it again, and the deploy stops with an
//! error that names the index and what to do. It must stop: the steps after it
//! may rely on the index, as the contract step that drops the case-sensitive
//! unique constraint relies on the case-insensitive one.

use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::{MigrateError, Migration, Migrator};
use sqlx::{Connection, PgConnection, PgPool};

use crate::configuration::DatabaseSettings;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where `ensure_database_exists` goes to create a missing database: the
/// `postgres` database of a plain server, then `defaultdb`, the default
/// database of DigitalOcean's (and other providers') managed clusters.
pub const MAINTENANCE_DATABASES: &[&str] = &["postgres", "defaultdb"];

/// The SQLSTATE of `invalid_catalog_name`: the database does not exist.
const INVALID_CATALOG_NAME: &str = "3D000";
/// The SQLSTATE of `duplicate_database`: another run created it first.
const DUPLICATE_DATABASE: &str = "42P04";
/// The SQLSTATE of `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Creates the configured database if it does not exist, so that a fresh
/// Postgres server needs no manual step. See
/// [`ensure_database_exists_via`].
pub async fn ensure_database_exists(settings: &DatabaseSettings) -> Result<(), anyhow::Error> {
    ensure_database_exists_via(settings, MAINTENANCE_DATABASES).await
}

/// Connects to the configured database first: when it exists, as it always
/// does on a managed cluster, nothing else is needed, and the app's user may
/// well be unable to reach any other database. Only when Postgres says it
/// does not exist does this connect to the first of `maintenance` it can
/// reach and create it there.
pub async fn ensure_database_exists_via(
    settings: &DatabaseSettings,
    maintenance: &[&str],
) -> Result<(), anyhow::Error> {
    let name = &settings.database_name;
    let server = format!("{}:{}", settings.host, settings.port);
    match PgConnection::connect_with(&settings.with_db()).await {
        Ok(connection) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Err(e) if sqlstate(&e).as_deref() == Some(INVALID_CATALOG_NAME) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "Failed to connect to database {name} at {server} as {}",
                settings.username
            )));
        }
    }
    tracing::info!(database = %name, "The database does not exist; creating it");

    let mut unreachable = Vec::new();
    for maintenance_database in maintenance {
        let options = settings.without_db().database(maintenance_database);
        let mut connection = match PgConnection::connect_with(&options).await {
            Ok(connection) => connection,
            Err(e) => {
                unreachable.push(format!("{maintenance_database} ({e})"));
                continue;
            }
        };
        let created = create_database(&mut connection, settings).await;
        let _ = connection.close().await;
        return created;
    }
    Err(anyhow::anyhow!(
        "Database {name} does not exist at {server}, and user {user} could reach none of the \
         databases to create it from: {}. Create it as an administrator \
         (CREATE DATABASE \"{name}\" OWNER \"{user}\"), then run `newsletter migrate` again.",
        unreachable.join("; "),
        user = settings.username,
    ))
}

async fn create_database(
    connection: &mut PgConnection,
    settings: &DatabaseSettings,
) -> Result<(), anyhow::Error> {
    let name = &settings.database_name;
    let statement = format!(r#"CREATE DATABASE "{}""#, name.replace('"', "\"\""));
    match sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(connection)
        .await
    {
        Ok(_) => {
            tracing::info!(database = %name, "Created the database");
            Ok(())
        }
        Err(e) if sqlstate(&e).as_deref() == Some(DUPLICATE_DATABASE) => Ok(()),
        Err(e) if sqlstate(&e).as_deref() == Some(INSUFFICIENT_PRIVILEGE) => Err(anyhow::anyhow!(
            "Database {name} does not exist, and user {user} may not create databases ({e}). \
                 Create it as an administrator (CREATE DATABASE \"{name}\" OWNER \"{user}\"), \
                 or grant the user CREATEDB, then run `newsletter migrate` again.",
            user = settings.username,
        )),
        Err(e) => Err(anyhow::Error::new(e).context(format!("Failed to create database {name}"))),
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
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
        apply(pool, migration, policy)
            .await
            .map_err(explain_missing_privilege)
            .with_context(|| {
                format!(
                    "Failed to apply migration {} ({})",
                    migration.version, migration.description
                )
            })?;
        if migration.no_tx {
            ensure_indexes_are_valid(pool, migration).await?;
        }
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

/// From PostgreSQL 15 on, only a database's owner may create in its `public`
/// schema; a managed cluster's app user is not the owner, and may not create
/// extensions either. Say what to do.
fn explain_missing_privilege(error: MigrateError) -> anyhow::Error {
    let database_error = match &error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => e.as_database_error(),
        _ => None,
    };
    let denied = database_error.and_then(|e| e.code()).as_deref() == Some(INSUFFICIENT_PRIVILEGE);
    let extension = database_error
        .map(|e| e.message().contains("create extension"))
        .unwrap_or(false);
    let error = anyhow::Error::new(error);
    if denied && extension {
        // A trusted extension such as pg_trgm needs CREATE on the database,
        // which a managed cluster's app user does not have either.
        error.context(
            "The database's user may not create the extensions the schema needs. As an \
             administrator, in that database, run CREATE EXTENSION IF NOT EXISTS pg_trgm \
             (or GRANT CREATE ON DATABASE <database> TO <user>), then run `newsletter migrate` \
             again (docs/deploying.md).",
        )
    } else if denied {
        error.context(
            "The database's user may not change the schema. From PostgreSQL 15 on, only the \
             database's owner may create in schema public: as an administrator, run \
             ALTER DATABASE <database> OWNER TO <user>, or, in that database, \
             GRANT USAGE, CREATE ON SCHEMA public TO <user> (docs/deploying.md).",
        )
    } else {
        error
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

/// An index Postgres has marked invalid.
#[derive(Debug, sqlx::FromRow)]
struct InvalidIndex {
    /// Schema-qualified and quoted, ready to go into a statement.
    name: String,
    /// `CREATE [UNIQUE] INDEX …`, for the operator to see what it covers.
    definition: String,
    /// A copy that a failed `REINDEX … CONCURRENTLY` left behind
    /// (`<name>_ccnew`, or `<name>_ccold` when only the final drop failed).
    /// Postgres's advice for these is to drop them: the index they copy
    /// still exists, and rebuilding the copy would give the table a second,
    /// redundant index.
    reindex_leftover: bool,
}

/// Makes every invalid index valid after `migration` (which ran outside a
/// transaction), rebuilding it or, for a leftover copy, dropping it. If one
/// stays invalid, takes the step out of the migration history and fails, so
/// that the step is never recorded while an index does not work.
async fn ensure_indexes_are_valid(
    pool: &PgPool,
    migration: &Migration,
) -> Result<(), anyhow::Error> {
    let mut connection = pool
        .acquire()
        .await
        .context("Failed to connect to check the indexes")?;
    let invalid = invalid_indexes(&mut connection).await?;
    if invalid.is_empty() {
        tracing::info!(version = migration.version, "Every index is valid");
        return Ok(());
    }
    let mut failures = Vec::new();
    for index in &invalid {
        let outcome = if index.reindex_leftover {
            tracing::warn!(
                index = %index.name,
                "Dropping an invalid copy left by a failed REINDEX"
            );
            drop_index(&mut connection, &index.name).await
        } else {
            tracing::warn!(
                version = migration.version,
                index = %index.name,
                "The index is invalid (a concurrent build failed); rebuilding it"
            );
            rebuild(&mut connection, index).await
        };
        match outcome {
            Ok(()) => tracing::info!(index = %index.name, "The index is no longer invalid"),
            Err(e) => failures.push((index.name.as_str(), e)),
        }
    }
    // Check again rather than trust the statements: only the catalog says
    // whether an index is in use.
    let still_invalid = invalid_indexes(&mut connection).await?;
    if still_invalid.is_empty() {
        return Ok(());
    }

    let unrecorded = sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(migration.version)
        .execute(&mut *connection)
        .await;
    let mut report = format!(
        "After migration {} ({}), {} index(es) are still invalid: they exist, but Postgres \
         does not use them, and a unique one enforces nothing.",
        migration.version,
        migration.description,
        still_invalid.len()
    );
    for index in &still_invalid {
        report.push_str(&format!("\n- {}: {}", index.name, index.definition));
        if let Some((_, e)) = failures.iter().find(|(name, _)| *name == index.name) {
            report.push_str(&format!("\n  {e:#}"));
        }
    }
    match unrecorded {
        Ok(_) => report.push_str(
            "\nThe migration is no longer recorded as applied. Fix what the rebuild reported \
             (for a unique index: merge or delete the rows that share a key), then run \
             `newsletter migrate` again: it rebuilds the index and records the migration.",
        ),
        Err(e) => report.push_str(&format!(
            "\nThe migration is STILL RECORDED as applied: removing it failed ({e}). Run \
             `DELETE FROM _sqlx_migrations WHERE version = {}`, fix what the rebuild reported, \
             then run `newsletter migrate` again.",
            migration.version
        )),
    }
    Err(anyhow::anyhow!(report))
}

/// The invalid indexes in the schemas on the search path: the ones the app's
/// tables live in.
async fn invalid_indexes(
    connection: &mut PgConnection,
) -> Result<Vec<InvalidIndex>, anyhow::Error> {
    sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name, \
                pg_get_indexdef(c.oid) AS definition, \
                c.relname ~ '_cc(new|old)[0-9]*$' AS reindex_leftover \
         FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND n.nspname = ANY (current_schemas(false)) \
         ORDER BY n.nspname, c.relname",
    )
    .fetch_all(connection)
    .await
    .context("Failed to look for invalid indexes")
}

/// `REINDEX INDEX CONCURRENTLY`. When it fails, Postgres leaves the copy it
/// was building behind, itself invalid: it is dropped here, or every later
/// attempt would add one more.
async fn rebuild(connection: &mut PgConnection, index: &InvalidIndex) -> Result<(), anyhow::Error> {
    let before: Vec<String> = invalid_indexes(connection)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let result = sqlx::query(sqlx::AssertSqlSafe(format!(
        "REINDEX INDEX CONCURRENTLY {}",
        index.name
    )))
    .execute(&mut *connection)
    .await;
    let Err(error) = result else {
        return Ok(());
    };
    // sqlx's own message repeats Postgres's; the SQLSTATE tells a duplicate
    // key (23505) from an interruption.
    let reason = match error.as_database_error() {
        Some(e) => format!(
            "{} (SQLSTATE {})",
            e.message(),
            e.code().unwrap_or_default()
        ),
        None => error.to_string(),
    };
    let error = anyhow::anyhow!("REINDEX INDEX CONCURRENTLY {} failed: {reason}", index.name);
    for leftover in invalid_indexes(connection).await? {
        if leftover.reindex_leftover && !before.contains(&leftover.name) {
            drop_index(connection, &leftover.name)
                .await
                .map_err(|e| e.context(format!("{error:#}")))?;
        }
    }
    Err(error)
}

async fn drop_index(connection: &mut PgConnection, name: &str) -> Result<(), anyhow::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {name}"
    )))
    .execute(connection)
    .await
    .with_context(|| format!("Failed to drop the invalid index {name}"))?;
    Ok(())
}
