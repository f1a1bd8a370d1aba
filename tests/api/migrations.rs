//! The schema evolves in expand/contract steps so that the release before a
//! change keeps working while the change is rolled out. These tests pin that
//! down for the `status` column: the earlier release's insert survives step 2
//! (expand) and breaks only at step 3 (contract).

use std::time::Duration;

use chrono::Utc;
use newsletter::configuration::get_configuration;
use newsletter::migrate::MIGRATOR;
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
    let code = case_variant
        .expect_err("a case variant must not become a second subscriber")
        .as_database_error()
        .and_then(|e| e.code())
        .unwrap()
        .into_owned();
    assert_eq!(code, "23505");
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
