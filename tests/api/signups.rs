//! The sign-up writers, against a real Postgres: sign-ups that queue up
//! share a transaction, and none of them can make another fail.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use newsletter::db::wakeups::Notifier;
use newsletter::db::{self, Db};
use newsletter::domain::{NewSubscriber, Newsletter, SubscriberEmail, SubscriberName};
use newsletter::keys::Keys;
use newsletter::outbox::Outbox;
use newsletter::signups::{SignupSettings, Signups, Stored};
use newsletter::subscribers::suppression::{self, Reason};
use tokio::task::{JoinHandle, LocalSet};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestDatabase, database_with_pool, eventually};

/// One writer on a pool of one connection, on a migrated database. The
/// writers are tasks of the thread that starts them, as on an HTTP worker.
async fn one_writer(acquire_timeout_milliseconds: u64) -> (Rc<Signups>, Db, TestDatabase) {
    let (db, database) = database_with_pool(1, acquire_timeout_milliseconds).await;
    let settings = Arc::new(SignupSettings {
        newsletter: Newsletter::parse("Rust Weekly", "", "The Rust Desk").unwrap(),
        base_url: "http://127.0.0.1".into(),
        token_lifetime: chrono::Duration::days(1),
        message_stream: "outbound".into(),
        keys: keys(),
    });
    // No delivery in this process: the email stays in the outbox.
    let (outbox, _) = Outbox::start(None, Notifier::silent(), CancellationToken::new());
    let signups = Rc::new(Signups::start(db.clone(), outbox, settings, 1));
    (signups, db, database)
}

fn keys() -> Keys {
    Keys::derive(&secrecy::SecretString::from(
        "a secret for the sign-up writer tests only",
    ))
    .unwrap()
}

fn sign_up(
    signups: &Rc<Signups>,
    name: &str,
    email: &str,
) -> JoinHandle<Result<Stored, db::Error>> {
    let subscriber = NewSubscriber {
        name: SubscriberName::parse(name).unwrap(),
        email: SubscriberEmail::parse(email).unwrap(),
        lists: Vec::new(),
    };
    let signups = signups.clone();
    tokio::task::spawn_local(async move { signups.store(subscriber).await })
}

/// Starts a sign-up for each `(name, email)` while the only connection is
/// taken, and lets them go once the writer holds the first and the others
/// wait in the queue: they are written as one batch.
async fn one_batch(
    signups: &Rc<Signups>,
    db: &Db,
    people: &[(&str, &str)],
) -> Vec<Result<Stored, db::Error>> {
    let busy = db.acquire().await.unwrap();
    let pending: Vec<_> = people
        .iter()
        .map(|(name, email)| sign_up(signups, name, email))
        .collect();
    eventually("the sign-ups are queued behind the first", || async {
        (signups.queued() == people.len() - 1).then_some(())
    })
    .await;
    drop(busy);
    let mut results = Vec::new();
    for handle in pending {
        results.push(handle.await.unwrap());
    }
    results
}

const THREE: [(&str, &str); 3] = [
    ("Le Guin", "a@example.com"),
    ("Le Guin", "b@example.com"),
    ("Le Guin", "c@example.com"),
];

async fn count(database: &TestDatabase, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

async fn stored(database: &TestDatabase) -> [i64; 3] {
    [
        count(database, "SELECT count(*) FROM subscriptions").await,
        count(database, "SELECT count(*) FROM confirmation_tokens").await,
        count(database, "SELECT count(*) FROM email_outbox").await,
    ]
}

#[tokio::test]
async fn sign_ups_waiting_for_a_connection_are_stored_in_one_transaction() {
    LocalSet::new()
        .run_until(async {
            let (signups, db, database) = one_writer(5_000).await;

            let results = one_batch(&signups, &db, &THREE).await;

            for result in results {
                assert!(result.unwrap().subscriber_id.is_some());
            }
            // Rows written by one transaction carry its id in xmin.
            let transactions = count(
                &database,
                "SELECT count(DISTINCT xmin::text) FROM (
                     SELECT xmin FROM subscriptions
                     UNION ALL SELECT xmin FROM confirmation_tokens
                     UNION ALL SELECT xmin FROM email_outbox) AS written",
            )
            .await;
            assert_eq!(transactions, 1);
            assert_eq!(stored(&database).await, [3, 3, 3]);
        })
        .await;
}

#[tokio::test]
async fn a_sign_up_postgres_refuses_fails_alone_and_the_rest_of_its_batch_is_stored() {
    LocalSet::new()
        .run_until(async {
            let (signups, db, database) = one_writer(5_000).await;
            // Postgres now refuses one name: the batch fails as a whole.
            sqlx::query(
                "ALTER TABLE subscriptions ADD CONSTRAINT refuse_poison \
                 CHECK (name <> 'Poison') NOT VALID",
            )
            .execute(&database.pool)
            .await
            .unwrap();

            let results = one_batch(
                &signups,
                &db,
                &[
                    ("Le Guin", "a@example.com"),
                    ("Poison", "p@example.com"),
                    ("Le Guin", "c@example.com"),
                ],
            )
            .await;

            assert!(results[0].is_ok(), "{:?}", results[0]);
            let refused = results[1].as_ref().unwrap_err();
            assert!(!refused.is_unavailable(), "{refused:?}");
            assert!(results[2].is_ok(), "{:?}", results[2]);
            assert_eq!(stored(&database).await, [2, 2, 2]);
        })
        .await;
}

#[tokio::test]
async fn a_batch_whose_connection_is_killed_mid_transaction_is_written_on_a_fresh_one() {
    LocalSet::new()
        .run_until(async {
            let (signups, db, database) = one_writer(5_000).await;
            // Slow enough to be caught in the middle.
            sqlx::raw_sql(
                "CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$; \
                 CREATE TRIGGER slow_down AFTER INSERT ON subscriptions \
                 FOR EACH STATEMENT EXECUTE FUNCTION slow_down();",
            )
            .execute(&database.pool)
            .await
            .unwrap();
            let killer = tokio::spawn({
                let pool = database.pool.clone();
                async move {
                    eventually("the batch to be inside its transaction", || async {
                        let killed: Option<bool> = sqlx::query_scalar(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE datname = current_database() \
                               AND query LIKE '%INSERT INTO subscriptions%' \
                               AND pid <> pg_backend_pid() AND state = 'active'",
                        )
                        .fetch_optional(&pool)
                        .await
                        .unwrap();
                        killed
                    })
                    .await
                }
            });

            let results = one_batch(&signups, &db, &THREE).await;

            assert!(killer.await.unwrap(), "no connection was killed");
            for result in results {
                assert!(result.unwrap().subscriber_id.is_some());
            }
            assert_eq!(stored(&database).await, [3, 3, 3]);
        })
        .await;
}

#[tokio::test]
async fn a_sign_up_that_cannot_get_a_connection_in_time_fails_as_unavailable_and_stores_nothing() {
    LocalSet::new()
        .run_until(async {
            let (signups, db, database) = one_writer(300).await;
            let busy = db.acquire().await.unwrap();

            let started = std::time::Instant::now();
            let result = sign_up(&signups, "Le Guin", "a@example.com").await.unwrap();

            let error = result.unwrap_err();
            assert!(error.is_unavailable(), "{error:?}");
            assert!(started.elapsed() < Duration::from_secs(5));
            drop(busy);
            assert_eq!(stored(&database).await, [0, 0, 0]);
        })
        .await;
}

#[tokio::test]
async fn a_suppressed_address_in_a_batch_gets_nothing_and_the_others_are_stored() {
    LocalSet::new()
        .run_until(async {
            let (signups, db, database) = one_writer(5_000).await;
            let mut conn = database.pool.acquire().await.unwrap();
            suppression::suppress(
                &mut conn,
                &keys(),
                "b@example.com",
                Reason::HardBounce,
                None,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
            drop(conn);

            let results = one_batch(
                &signups,
                &db,
                &[
                    ("Le Guin", "a@example.com"),
                    ("Le Guin", "B@Example.com"),
                    ("Le Guin", "c@example.com"),
                ],
            )
            .await;

            let ids: Vec<bool> = results
                .into_iter()
                .map(|r| r.unwrap().subscriber_id.is_some())
                .collect();
            assert_eq!(ids, [true, false, true]);
            assert_eq!(stored(&database).await, [2, 2, 2]);
            let recipients: Vec<String> =
                sqlx::query_scalar("SELECT recipient FROM email_outbox ORDER BY recipient")
                    .fetch_all(&database.pool)
                    .await
                    .unwrap();
            assert_eq!(recipients, ["a@example.com", "c@example.com"]);
        })
        .await;
}

#[tokio::test]
async fn a_pending_sign_up_deleted_between_the_insert_and_the_look_up_is_inserted_again() {
    LocalSet::new()
        .run_until(async {
            let (signups, _db, database) = one_writer(5_000).await;
            let first = sign_up(&signups, "Le Guin", "a@example.com")
                .await
                .unwrap()
                .unwrap()
                .subscriber_id
                .unwrap();
            // Plays the retention job: right after the next insert finds
            // the address taken, the old pending sign-up is deleted, once.
            sqlx::raw_sql(
                "CREATE TABLE deleted_once (done boolean); \
                 CREATE FUNCTION expire_pending() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN \
                     IF NOT EXISTS (SELECT 1 FROM deleted_once) THEN \
                         INSERT INTO deleted_once VALUES (true); \
                         DELETE FROM confirmation_tokens; \
                         DELETE FROM subscriptions; \
                     END IF; \
                     RETURN NULL; \
                 END $$; \
                 CREATE TRIGGER expire_pending AFTER INSERT ON subscriptions \
                 FOR EACH STATEMENT EXECUTE FUNCTION expire_pending();",
            )
            .execute(&database.pool)
            .await
            .unwrap();

            let again = sign_up(&signups, "Le Guin", "a@example.com").await.unwrap();

            let again = again.expect("the sign-up is stored").subscriber_id.unwrap();
            assert_ne!(again, first, "a new subscriber row");
            let deleted: i64 = count(&database, "SELECT count(*) FROM deleted_once").await;
            assert_eq!(deleted, 1, "the old sign-up was deleted under the writer");
            let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM subscriptions")
                .fetch_all(&database.pool)
                .await
                .unwrap();
            assert_eq!(ids, [again]);
            assert_eq!(stored(&database).await, [1, 1, 2]);
        })
        .await;
}
