//! The request handlers' connection cache, against a real Postgres.

use std::time::Duration;

use newsletter::connections::{Connections, Lease};

use crate::helpers::{TestDatabase, connection_cache as cache, eventually};

async fn backend_pid(lease: &mut Lease) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut **lease)
        .await
        .expect("Failed to ask for the backend's pid")
}

/// Takes a connection, runs a query on it and gives it back: the backend's pid.
async fn use_and_give_back(connections: &Connections) -> i32 {
    let mut lease = connections.acquire().await.unwrap();
    let pid = backend_pid(&mut lease).await;
    lease.give_back();
    pid
}

async fn backend_is_gone(database: &TestDatabase, pid: i32) -> bool {
    let alive: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
            .bind(pid)
            .fetch_one(&database.pool)
            .await
            .unwrap();
    !alive
}

#[tokio::test]
async fn a_connection_given_back_serves_the_next_request() {
    let (connections, _database) = cache(2, 1_000).await;
    let pid = use_and_give_back(&connections).await;
    assert_eq!(connections.idle(), 1);

    let mut second = connections.acquire().await.unwrap();
    assert_eq!(backend_pid(&mut second).await, pid);
    assert_eq!(connections.idle(), 0);
}

#[tokio::test]
async fn a_connection_dropped_without_being_given_back_is_closed() {
    let (connections, database) = cache(2, 1_000).await;
    let mut first = connections.acquire().await.unwrap();
    let pid = backend_pid(&mut first).await;
    drop(first);
    assert_eq!(connections.idle(), 0);

    let mut second = connections.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut second).await, pid);
    eventually("the dropped connection's backend to exit", || async {
        backend_is_gone(&database, pid).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_request_waits_for_a_connection_to_come_back_and_gives_up_at_the_acquire_timeout() {
    let (connections, _database) = cache(1, 300).await;
    let mut held = connections.acquire().await.unwrap();
    let pid = backend_pid(&mut held).await;

    let refused = connections.acquire().await;
    assert!(
        matches!(refused, Err(sqlx::Error::PoolTimedOut)),
        "expected a time-out, got {:?}",
        refused.map(|_| ())
    );

    let waiting = tokio::spawn({
        let connections = connections.clone();
        async move {
            let mut lease = connections.acquire().await?;
            Ok::<_, sqlx::Error>(backend_pid(&mut lease).await)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.give_back();
    assert_eq!(waiting.await.unwrap().unwrap(), pid);
}

#[tokio::test]
async fn an_idle_connection_whose_backend_died_is_replaced_before_it_is_handed_out() {
    let (connections, database) = cache(1, 1_000).await;
    let pid = use_and_give_back(&connections).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&database.pool)
        .await
        .unwrap();
    eventually("the backend to exit", || async {
        backend_is_gone(&database, pid).await.then_some(())
    })
    .await;
    // Past the idle time after which a connection is checked before use.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let mut second = connections.acquire().await.unwrap();
    assert_ne!(backend_pid(&mut second).await, pid);
}
