//! The sign-up writers, against a real Postgres: sign-ups that queue up
//! share a transaction, and share its fate.

use std::sync::Arc;

use newsletter::connections::Connections;
use newsletter::domain::{NewSubscriber, SubscriberEmail, SubscriberName};
use newsletter::outbox::{Doorbell, Handoff};
use newsletter::signups::{SignupSettings, Signups, StoreError, Stored};

use crate::helpers::{TestDatabase, connection_cache, eventually};

/// One writer on a cache of one connection, on a migrated database.
async fn one_writer() -> (Arc<Signups>, Connections, TestDatabase) {
    let (connections, database) = connection_cache(1, 5_000).await;
    database.migrate().await;
    let settings = Arc::new(SignupSettings {
        base_url: "http://127.0.0.1".into(),
        token_lifetime: chrono::Duration::days(1),
        message_stream: "outbound".into(),
    });
    let signups = Arc::new(Signups::start(connections.clone(), settings, 1));
    (signups, connections, database)
}

fn sign_up(
    signups: &Arc<Signups>,
    email: &str,
) -> tokio::task::JoinHandle<Result<Stored, StoreError>> {
    let subscriber = NewSubscriber {
        name: SubscriberName::parse("Le Guin").unwrap(),
        email: SubscriberEmail::parse(email).unwrap(),
    };
    let slot = Handoff::doorbell_only(Doorbell::default()).reserve();
    let signups = signups.clone();
    tokio::spawn(async move { signups.store(subscriber, slot).await })
}

/// Starts three sign-ups while the only connection is taken, and lets them
/// go once the writer holds the first and the other two wait in the queue.
async fn three_sign_ups_behind_a_busy_connection(
    signups: &Arc<Signups>,
    connections: &Connections,
) -> Vec<Result<Stored, StoreError>> {
    let busy = connections.acquire().await.unwrap();
    let pending: Vec<_> = ["a@example.com", "b@example.com", "c@example.com"]
        .into_iter()
        .map(|email| sign_up(signups, email))
        .collect();
    eventually("two sign-ups are queued behind the first", || async {
        (signups.queued() == 2).then_some(())
    })
    .await;
    busy.give_back();
    let mut results = Vec::new();
    for handle in pending {
        results.push(handle.await.unwrap());
    }
    results
}

async fn count(database: &TestDatabase, query: &'static str) -> i64 {
    sqlx::query_scalar(query)
        .fetch_one(&database.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_ups_waiting_for_a_connection_are_stored_in_one_transaction() {
    let (signups, connections, database) = one_writer().await;

    let results = three_sign_ups_behind_a_busy_connection(&signups, &connections).await;

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
    assert_eq!(
        count(&database, "SELECT count(*) FROM subscriptions").await,
        3
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM confirmation_tokens").await,
        3
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM email_outbox").await,
        3
    );
}

#[tokio::test]
async fn when_a_batch_fails_every_sign_up_in_it_fails_and_none_is_stored() {
    let (signups, connections, database) = one_writer().await;
    // Every token insert now fails, after the subscribers went in.
    sqlx::query(
        "ALTER TABLE confirmation_tokens ADD CONSTRAINT refuse_all CHECK (false) NOT VALID",
    )
    .execute(&database.pool)
    .await
    .unwrap();

    let results = three_sign_ups_behind_a_busy_connection(&signups, &connections).await;

    for result in results {
        let error = result.unwrap_err();
        assert_eq!(error.to_string(), "Failed to store the confirmation tokens");
    }
    assert_eq!(
        count(&database, "SELECT count(*) FROM subscriptions").await,
        0
    );
    assert_eq!(
        count(&database, "SELECT count(*) FROM email_outbox").await,
        0
    );
}
