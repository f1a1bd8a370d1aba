//! Schema migrations, embedded in the binary so that `newsletter migrate`
//! needs no other tool. A deploy job runs it before new instances start; the
//! server itself never migrates.

use anyhow::Context;
use sqlx::migrate::Migrator;
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

/// Applies pending migrations one at a time, logging each, so an operator
/// watching a deploy sees where it is.
pub async fn run_pending(pool: &PgPool) -> Result<(), anyhow::Error> {
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
        MIGRATOR
            .run_to(migration.version, pool)
            .await
            .with_context(|| {
                format!(
                    "Failed to apply migration {} ({})",
                    migration.version, migration.description
                )
            })?;
    }
    tracing::info!("The schema is up to date");
    Ok(())
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
