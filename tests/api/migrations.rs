//! The schema evolves in expand/contract steps so that the release before a
//! change keeps working while the change is rolled out. These tests pin that
//! down for the `status` column: the earlier release's insert survives step 2
//! (expand) and breaks only at step 3 (contract). They also check that a
//! step building an index CONCURRENTLY is never recorded as applied while
//! the index it built is invalid.

use std::time::Duration;

use chrono::Utc;
use newsletter::configuration::{DatabaseSettings, get_configuration};
use newsletter::migrate::{MIGRATOR, ensure_database_exists_via};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::helpers::TestDatabase;

/// The version of each step, by its position in `migrations/`.
fn version_of_step(step: usize) -> i64 {
    MIGRATOR.iter().nth(step - 1).unwrap().version
}

/// The insert of the release that predates the `status` column.
async fn insert_as_the_release_before_status(
    pool: &PgPool,
    email: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::new_v4())
    .bind(email)
    .bind("Ursula")
    .bind(Utc::now())
    .execute(pool)
    .await
    .map(|_| ())
}

async fn fresh_database() -> TestDatabase {
    let settings = get_configuration().unwrap();
    TestDatabase::create(&settings.database).await
}

#[tokio::test]
async fn the_release_before_status_can_still_insert_after_step_2() {
    let db = fresh_database().await;
    MIGRATOR.run_to(version_of_step(2), &db.pool).await.unwrap();

    let result = insert_as_the_release_before_status(&db.pool, "a@example.com").await;

    assert!(
        result.is_ok(),
        "step 2 broke the previous release: {result:?}"
    );
}

#[tokio::test]
async fn the_release_before_status_can_no_longer_insert_after_step_3() {
    let db = fresh_database().await;
    MIGRATOR.run_to(version_of_step(3), &db.pool).await.unwrap();

    let result = insert_as_the_release_before_status(&db.pool, "a@example.com").await;

    let error = result.expect_err("the insert without a status should violate NOT NULL");
    let code = error.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "23502", "expected a not_null_violation, got {error}");
}

#[tokio::test]
async fn step_3_backfills_rows_written_by_the_previous_release() {
    let db = fresh_database().await;
    MIGRATOR.run_to(version_of_step(2), &db.pool).await.unwrap();
    insert_as_the_release_before_status(&db.pool, "early@example.com")
        .await
        .unwrap();

    MIGRATOR.run_to(version_of_step(3), &db.pool).await.unwrap();

    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "confirmed");
}

#[tokio::test]
async fn the_migrate_command_creates_the_database_and_applies_every_migration() {
    let settings = get_configuration().unwrap();
    let db = TestDatabase::create(&settings.database).await;
    // Let the command create the database itself.
    drop_database(&db).await;

    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_newsletter"))
            .arg("migrate")
            .env("APP_DATABASE__DATABASE_NAME", &db.settings.database_name)
            .output()
            .unwrap()
    };
    let first = run();
    let second = run();

    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(second.status.success(), "a second run should be a no-op");
    let stdout = String::from_utf8_lossy(&first.stdout);
    let total = MIGRATOR.iter().count();
    assert!(
        stdout.contains(&format!("Applying migration {total} of {total}")),
        "{stdout}"
    );
    let pool = PgPool::connect_with(db.settings.with_db()).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    pool.close().await;
}

/// The previous release's subscribe: a subscriber with a status, and its
/// token in plain text in `subscription_tokens`.
async fn subscribe_as_the_release_before_hashed_tokens(pool: &PgPool, token: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         VALUES ($1, $2, 'Ursula', now(), 'pending_confirmation')",
    )
    .bind(id)
    .bind(format!("{id}@example.com"))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscription_tokens (subscription_token, subscriber_id) VALUES ($1, $2)",
    )
    .bind(token)
    .bind(id)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn hashed_twin(pool: &PgPool, token: &str) -> Option<Uuid> {
    let hash = newsletter::domain::SubscriptionToken::parse(token)
        .unwrap()
        .hash();
    sqlx::query_scalar("SELECT subscriber_id FROM confirmation_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The step that creates `confirmation_tokens`.
fn confirmation_tokens_step() -> usize {
    MIGRATOR
        .iter()
        .position(|m| m.description.contains("create confirmation tokens"))
        .unwrap()
        + 1
}

#[tokio::test]
async fn tokens_issued_before_the_hashed_table_existed_are_backfilled_into_it() {
    let db = fresh_database().await;
    let step = confirmation_tokens_step();
    MIGRATOR
        .run_to(version_of_step(step - 1), &db.pool)
        .await
        .unwrap();
    let token = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
    let subscriber = subscribe_as_the_release_before_hashed_tokens(&db.pool, token).await;

    MIGRATOR
        .run_to(version_of_step(step), &db.pool)
        .await
        .unwrap();

    assert_eq!(hashed_twin(&db.pool, token).await, Some(subscriber));
}

#[tokio::test]
async fn tokens_the_previous_release_writes_after_the_expand_get_a_hashed_twin() {
    let db = fresh_database().await;
    MIGRATOR
        .run_to(version_of_step(confirmation_tokens_step()), &db.pool)
        .await
        .unwrap();
    let token = "ZyXwVuTsRqPoNmLkJiHgFeDcBa987654";

    let subscriber = subscribe_as_the_release_before_hashed_tokens(&db.pool, token).await;

    assert_eq!(hashed_twin(&db.pool, token).await, Some(subscriber));
}

#[tokio::test]
async fn the_previous_release_still_upserts_after_the_case_insensitive_index() {
    let db = fresh_database().await;
    let step = MIGRATOR
        .iter()
        .position(|m| m.description.contains("case insensitively"))
        .unwrap()
        + 1;
    MIGRATOR
        .run_to(version_of_step(step), &db.pool)
        .await
        .unwrap();
    let upsert = |email: &'static str| {
        sqlx::query(
            "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
             VALUES ($1, $2, 'Ada', now(), 'pending_confirmation') \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(email)
        .execute(&db.pool)
    };

    let first = upsert("ada@example.com").await;
    let same = upsert("ada@example.com").await;
    let case_variant = upsert("ADA@example.com").await;

    assert!(first.is_ok() && same.is_ok(), "{first:?} {same:?}");
    assert_unique_violation(
        case_variant,
        "a case variant must not become a second subscriber",
    );
}

#[tokio::test]
async fn a_migration_blocked_by_a_long_transaction_lets_traffic_through_and_retries() {
    let db = fresh_database().await;
    let add_confirmed_at = MIGRATOR
        .iter()
        .position(|m| m.description.contains("add confirmed at"))
        .unwrap()
        + 1;
    MIGRATOR
        .run_to(version_of_step(add_confirmed_at - 1), &db.pool)
        .await
        .unwrap();
    // A long transaction that has read the table holds a lock the migration's
    // ALTER TABLE must wait for.
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM subscriptions")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let policy = newsletter::migrate::LockPolicy {
        lock_timeout: Duration::from_millis(100),
        max_attempts: 100,
        retry_delay: Duration::from_millis(200),
    };
    let migration = newsletter::migrate::run_pending_with(&db.pool, policy);
    let traffic = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Meanwhile the release still serving keeps writing. Without the lock
        // timeout this insert would queue behind the waiting ALTER TABLE until
        // the long transaction ends.
        let mut writer = db.pool.begin().await.unwrap();
        sqlx::query("SET LOCAL statement_timeout = '2s'")
            .execute(&mut *writer)
            .await
            .unwrap();
        let insert = sqlx::query(
            "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
             VALUES ($1, 'live@example.com', 'Live', now(), 'pending_confirmation')",
        )
        .bind(Uuid::new_v4())
        .execute(&mut *writer)
        .await;
        writer.commit().await.unwrap();
        let applied_meanwhile: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        blocker.commit().await.unwrap();
        (insert, applied_meanwhile)
    };

    let (migrated, (insert, applied_meanwhile)) = tokio::join!(migration, traffic);

    assert!(
        insert.is_ok(),
        "traffic queued behind the migration: {insert:?}"
    );
    assert_eq!(
        applied_meanwhile as usize,
        add_confirmed_at - 1,
        "the migration did not wait for the lock"
    );
    migrated.expect("the migration failed after the lock was released");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
}

/// The step that builds the case-insensitive unique index CONCURRENTLY.
fn case_insensitive_index_step() -> usize {
    MIGRATOR
        .iter()
        .position(|m| m.description.contains("case insensitively"))
        .unwrap()
        + 1
}

const CASE_INSENSITIVE_INDEX: &str = "subscriptions_email_lower_key";

async fn is_recorded(pool: &PgPool, step: usize) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1)")
        .bind(version_of_step(step))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The names of the indexes Postgres has marked invalid.
async fn invalid_indexes(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE NOT i.indisvalid ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A database where the case-insensitive index could not be built: two
/// subscribers differ only by case (the release before the index allowed
/// it), so the first `newsletter migrate` failed on that step and left the
/// index behind, invalid. This is how the silent case starts: the step's
/// `CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS` skips an index that
/// exists, valid or not.
async fn database_after_a_failed_case_insensitive_build() -> TestDatabase {
    let db = fresh_database().await;
    let step = case_insensitive_index_step();
    MIGRATOR
        .run_to(version_of_step(step - 1), &db.pool)
        .await
        .unwrap();
    for email in ["ada@example.com", "Ada@Example.com"] {
        sqlx::query(
            "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
             VALUES ($1, $2, 'Ada', now(), 'confirmed')",
        )
        .bind(Uuid::new_v4())
        .bind(email)
        .execute(&db.pool)
        .await
        .unwrap();
    }

    let first_run = newsletter::migrate::run_pending(&db.pool).await;

    assert!(
        first_run.is_err(),
        "the build should fail on the duplicates"
    );
    assert_eq!(
        invalid_indexes(&db.pool).await,
        vec![CASE_INSENSITIVE_INDEX],
        "the failed build should leave its index invalid"
    );
    assert!(!is_recorded(&db.pool, step).await);
    db
}

#[tokio::test]
async fn a_step_whose_unique_index_stays_invalid_is_not_recorded_and_fails_naming_the_index() {
    let db = database_after_a_failed_case_insensitive_build().await;
    let step = case_insensitive_index_step();

    // The deploy is run again without the duplicates being merged.
    let second_run = newsletter::migrate::run_pending(&db.pool).await;

    let error = format!(
        "{:?}",
        second_run.expect_err("a step with an invalid index succeeded")
    );
    assert!(error.contains(CASE_INSENSITIVE_INDEX), "{error}");
    assert!(
        error.contains("newsletter migrate"),
        "no way forward: {error}"
    );
    assert!(
        !is_recorded(&db.pool, step).await,
        "the step is recorded as applied while its unique index is invalid"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        step - 1,
        "the steps after it ran, and the next drops the case-sensitive constraint"
    );
    assert_eq!(
        invalid_indexes(&db.pool).await,
        vec![CASE_INSENSITIVE_INDEX],
        "the failed rebuild left a copy behind"
    );
}

#[tokio::test]
async fn once_the_duplicates_are_merged_the_next_run_rebuilds_the_index_and_drops_failed_copies() {
    let db = database_after_a_failed_case_insensitive_build().await;
    // An operator tries a rebuild by hand before merging the duplicates. It
    // fails and leaves the copy it was building, invalid too.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "REINDEX INDEX CONCURRENTLY {CASE_INSENSITIVE_INDEX}"
    )))
    .execute(&db.pool)
    .await
    .expect_err("the duplicates are still there");
    assert_eq!(invalid_indexes(&db.pool).await.len(), 2);
    sqlx::query("DELETE FROM subscriptions WHERE email = 'Ada@Example.com'")
        .execute(&db.pool)
        .await
        .unwrap();

    newsletter::migrate::run_pending(&db.pool)
        .await
        .expect("the index should be rebuilt once the duplicates are gone");

    assert_eq!(invalid_indexes(&db.pool).await, Vec::<String>::new());
    let copies: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class \
         WHERE relkind = 'i' AND relname ~ '_cc(new|old)[0-9]*$'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        copies.is_empty(),
        "a failed rebuild's copy was kept: {copies:?}"
    );
    assert!(is_recorded(&db.pool, case_insensitive_index_step()).await);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    let case_variant = sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         VALUES ($1, 'ADA@example.com', 'Ada', now(), 'confirmed')",
    )
    .bind(Uuid::new_v4())
    .execute(&db.pool)
    .await;
    assert_unique_violation(case_variant, "the rebuilt index must enforce uniqueness");
}

#[tokio::test]
async fn on_a_fresh_database_every_step_is_recorded_and_every_index_is_valid() {
    let db = fresh_database().await;

    newsletter::migrate::run_pending(&db.pool).await.unwrap();

    assert_eq!(invalid_indexes(&db.pool).await, Vec::<String>::new());
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
}

/// Asserts that `result` is Postgres refusing a duplicate (SQLSTATE 23505).
fn assert_unique_violation<T: std::fmt::Debug>(result: Result<T, sqlx::Error>, why: &str) {
    let code = result
        .expect_err(why)
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("23505"), "{why}");
}

/// A login role of its own, without the right to create databases, and the
/// name of a database for it; the database (whoever owns it) and the role are
/// dropped when the value is dropped. Nothing else on the server changes.
struct OwnRole {
    /// Connects as the role, to its database.
    settings: DatabaseSettings,
    admin: DatabaseSettings,
}

impl OwnRole {
    async fn create() -> Self {
        let admin = get_configuration().unwrap().database;
        let name = format!("test_role_{}", Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect_with(&admin.without_db())
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE ROLE "{name}" LOGIN NOCREATEDB PASSWORD 'role-password'"#
        )))
        .execute(&mut connection)
        .await
        .unwrap();
        let mut settings = admin.clone();
        settings.username = name.clone();
        settings.password = SecretString::from("role-password");
        settings.database_name = name;
        Self { settings, admin }
    }

    async fn as_admin(&self, database: Option<&str>, statement: String) {
        let options = match database {
            Some(database) => self.admin.without_db().database(database),
            None => self.admin.without_db(),
        };
        let mut connection = sqlx::PgConnection::connect_with(&options).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
    }

    /// Creates the role's database, owned by the role or by the administrator.
    async fn create_database(&self, owned_by_the_role: bool) {
        let name = &self.settings.database_name;
        let owner = if owned_by_the_role {
            name.as_str()
        } else {
            self.admin.username.as_str()
        };
        self.as_admin(None, format!(r#"CREATE DATABASE "{name}" OWNER "{owner}""#))
            .await;
    }

    async fn database_exists(&self) -> bool {
        let mut connection = sqlx::PgConnection::connect_with(&self.admin.without_db())
            .await
            .unwrap();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&self.settings.database_name)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    }

    /// `newsletter migrate`, connecting as the role.
    fn run_migrate(&self) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_newsletter"))
            .arg("migrate")
            .env("APP_DATABASE__USERNAME", &self.settings.username)
            .env(
                "APP_DATABASE__PASSWORD",
                self.settings.password.expose_secret(),
            )
            .env("APP_DATABASE__DATABASE_NAME", &self.settings.database_name)
            .output()
            .unwrap()
    }

    async fn applied_migrations(&self) -> usize {
        let pool = PgPool::connect_with(self.settings.with_db()).await.unwrap();
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        applied as usize
    }
}

impl Drop for OwnRole {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.settings.database_name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut connection = sqlx::PgConnection::connect_with(&admin.without_db()).await?;
                for statement in [
                    format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#),
                    format!(r#"DROP ROLE IF EXISTS "{name}""#),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(statement))
                        .execute(&mut connection)
                        .await?;
                }
                Ok::<_, sqlx::Error>(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!(
                "Failed to drop the test role and database {}: {e}",
                self.settings.database_name
            );
        }
    }
}

/// Names of maintenance databases that do not exist: a user who can reach
/// nothing but its own database, as on a managed cluster.
fn unreachable_maintenance_databases() -> [String; 2] {
    [
        format!("no_postgres_{}", Uuid::new_v4().simple()),
        format!("no_defaultdb_{}", Uuid::new_v4().simple()),
    ]
}

#[tokio::test]
async fn an_existing_database_is_used_without_reaching_a_maintenance_database() {
    let role = OwnRole::create().await;
    role.create_database(true).await;
    let maintenance = unreachable_maintenance_databases();
    let maintenance: Vec<&str> = maintenance.iter().map(String::as_str).collect();

    let result = ensure_database_exists_via(&role.settings, &maintenance).await;

    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn the_migrate_command_migrates_a_database_its_user_owns_without_createdb() {
    let role = OwnRole::create().await;
    role.create_database(true).await;

    let output = role.run_migrate();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(role.applied_migrations().await, MIGRATOR.iter().count());
}

#[tokio::test]
async fn a_missing_database_is_created_through_the_first_maintenance_database_reachable() {
    let settings = get_configuration().unwrap();
    let db = TestDatabase::create(&settings.database).await;
    db.pool.close().await;
    drop_database(&db).await;
    let missing = format!("no_postgres_{}", Uuid::new_v4().simple());

    ensure_database_exists_via(&db.settings, &[&missing, "postgres"])
        .await
        .expect("the database should have been created through `postgres`");

    let connection = sqlx::PgConnection::connect_with(&db.settings.with_db()).await;
    assert!(connection.is_ok(), "the database was not created");
}

#[tokio::test]
async fn a_missing_database_with_no_maintenance_database_reachable_fails_naming_it() {
    let role = OwnRole::create().await;
    let maintenance = unreachable_maintenance_databases();
    let names: Vec<&str> = maintenance.iter().map(String::as_str).collect();

    let error = ensure_database_exists_via(&role.settings, &names)
        .await
        .expect_err("no database could have been created");

    let message = format!("{error:#}");
    let name = &role.settings.database_name;
    assert!(
        message.contains(&format!("Database {name} does not exist")),
        "{message}"
    );
    assert!(
        message.contains(&maintenance[0]) && message.contains(&maintenance[1]),
        "{message}"
    );
    assert!(message.contains("CREATE DATABASE"), "{message}");
    assert!(!role.database_exists().await);
}

#[tokio::test]
async fn a_user_who_may_not_create_databases_is_told_to_create_it_or_grant_createdb() {
    let role = OwnRole::create().await;

    let error = ensure_database_exists_via(&role.settings, &["postgres"])
        .await
        .expect_err("a role without CREATEDB created a database");

    let message = format!("{error:#}");
    assert!(
        message.contains(&role.settings.database_name) && message.contains("CREATEDB"),
        "{message}"
    );
    assert!(!role.database_exists().await);
}

#[tokio::test]
async fn without_a_grant_on_schema_public_migrate_says_which_grant_and_succeeds_once_given() {
    // From PostgreSQL 15 on, a user that does not own the database may not
    // create in its public schema, as on a managed cluster. Revoking it from
    // everyone in this database makes an older server behave the same.
    let role = OwnRole::create().await;
    role.create_database(false).await;
    let name = &role.settings.database_name;
    role.as_admin(
        Some(name),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_string(),
    )
    .await;
    let refused = role.run_migrate();
    role.as_admin(
        Some(name),
        format!(r#"GRANT USAGE, CREATE ON SCHEMA public TO "{name}""#),
    )
    .await;
    // The other step docs/deploying.md asks of the administrator.
    role.as_admin(
        Some(name),
        "CREATE EXTENSION IF NOT EXISTS pg_trgm".to_string(),
    )
    .await;
    let granted = role.run_migrate();

    assert!(!refused.status.success(), "migrated without a grant");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("GRANT USAGE, CREATE ON SCHEMA public"),
        "{stderr}"
    );
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert_eq!(role.applied_migrations().await, MIGRATOR.iter().count());
}

#[tokio::test]
async fn a_user_who_may_not_create_pg_trgm_is_told_to_have_it_created_and_succeeds_once_it_is() {
    // A managed cluster's app user, granted the schema but not the database.
    let role = OwnRole::create().await;
    role.create_database(false).await;
    let name = &role.settings.database_name;
    role.as_admin(
        Some(name),
        format!(r#"GRANT USAGE, CREATE ON SCHEMA public TO "{name}""#),
    )
    .await;
    let refused = role.run_migrate();
    role.as_admin(
        Some(name),
        "CREATE EXTENSION IF NOT EXISTS pg_trgm".to_string(),
    )
    .await;
    let created = role.run_migrate();

    assert!(
        !refused.status.success(),
        "created pg_trgm without the right"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("CREATE EXTENSION IF NOT EXISTS pg_trgm"),
        "{stderr}"
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert_eq!(role.applied_migrations().await, MIGRATOR.iter().count());
}

/// Drops a test's database now, for a test about what happens without it;
/// the test database's own clean-up then finds nothing to drop.
async fn drop_database(db: &TestDatabase) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE "{}" WITH (FORCE)"#,
        db.settings.database_name
    )))
    .execute(
        &mut sqlx::PgConnection::connect_with(&db.settings.without_db())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
}

/// The step of `migrations/` with this version.
fn step_of_version(version: i64) -> usize {
    MIGRATOR
        .iter()
        .position(|m| m.version == version)
        .expect("a migration with that version")
        + 1
}

#[tokio::test]
async fn subscribers_move_to_the_default_list_while_the_previous_release_keeps_signing_people_up() {
    let db = fresh_database().await;
    let lists_step = step_of_version(20270102090001);
    MIGRATOR
        .run_to(version_of_step(lists_step - 1), &db.pool)
        .await
        .unwrap();
    // What was there before lists: every status.
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at, \
                                    unsubscribed_at) \
         SELECT gen_random_uuid(), 'before' || n || '@example.com', 'Before ' || n, now(), \
                (ARRAY['pending_confirmation', 'confirmed', 'unsubscribed'])[n % 3 + 1], \
                CASE WHEN n % 3 = 1 THEN now() END, CASE WHEN n % 3 = 2 THEN now() END \
         FROM generate_series(1, 3000) AS n",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    // The previous release signs people up and confirms them throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let pool = db.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let id = Uuid::new_v4();
                sqlx::query(
                    "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
                     VALUES ($1, $2, 'During', now(), 'pending_confirmation')",
                )
                .bind(id)
                .bind(format!("during{n}@example.com"))
                .execute(&pool)
                .await
                .unwrap();
                if n % 2 == 0 {
                    sqlx::query(
                        "UPDATE subscriptions SET status = 'confirmed', confirmed_at = now() \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
                }
            }
            n
        })
    };
    MIGRATOR
        .run_to(version_of_step(lists_step + 1), &db.pool)
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written_during = writer.await.unwrap();
    assert!(written_during > 0, "the previous release wrote nothing");

    // Everyone is on the default list exactly once, with their status.
    let mismatched: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT s.email, s.status, m.status FROM subscriptions s \
         LEFT JOIN memberships m ON m.subscriber_id = s.id \
           AND m.list_id = (SELECT id FROM lists WHERE is_default) \
         WHERE m.status IS DISTINCT FROM CASE s.status WHEN 'confirmed' THEN 'confirmed' \
                                                       WHEN 'unsubscribed' THEN 'unsubscribed' \
                                                       ELSE 'pending' END",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        mismatched.is_empty(),
        "{:?}",
        &mismatched[..mismatched.len().min(5)]
    );
    let (subscribers, memberships): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM subscriptions), (SELECT count(*) FROM memberships)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(subscribers, memberships);
}
