use crate::helpers::{eventually, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_check_answers_200_with_an_empty_body() {
    let app = spawn_app().await;

    let response = app.get("/health_check").await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.content_length(), Some(0));
}

#[tokio::test]
async fn health_check_answers_even_when_the_database_is_unreachable() {
    let app = spawn_app_with(|s| s.database.port = 1).await;

    let response = app.get("/health_check").await;

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn readiness_reports_both_dependencies_when_they_are_up() {
    let app = spawn_app().await;

    // Each HTTP worker opens its Redis connection as it starts; on a busy
    // machine the first checks can come before that connection is up.
    eventually("readiness to report Redis as ok", || async {
        let response = app.get("/ready").await;
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["postgres"], "ok");
        (body["redis"] == "ok").then_some(())
    })
    .await;
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable() {
    let app = spawn_app_with(|s| s.database.port = 1).await;

    let response = app.get("/ready").await;

    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["postgres"], "unavailable");
}

#[tokio::test]
async fn readiness_holds_without_redis_since_limits_fall_back_to_the_process() {
    let app = spawn_app_with(|s| s.redis_uri = "redis://127.0.0.1:1".to_owned().into()).await;

    let response = app.get("/ready").await;

    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_ne!(body["redis"], "ok");
}

#[tokio::test]
async fn readiness_answers_while_every_request_connection_is_taken() {
    // One connection per HTTP worker, and room to wait on a lock.
    let app = spawn_app_with(|s| {
        s.database.max_connections = 1;
        s.database.lock_timeout_milliseconds = 20_000;
        s.database.statement_timeout_milliseconds = 20_000;
        s.database.transaction_timeout_milliseconds = 20_000;
    })
    .await;
    eventually("the first readiness check", || async {
        (app.get("/ready").await.status().as_u16() == 200).then_some(())
    })
    .await;

    // Confirmation links wait on this lock, each holding its worker's one
    // connection while it waits.
    let mut lock = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE confirmation_tokens, subscriptions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let token = "a".repeat(32);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let waiting: Vec<_> = (0..2 * workers)
        .map(|_| {
            let request = app
                .api_client
                .get(format!(
                    "{}/subscriptions/confirm?subscription_token={token}",
                    app.address
                ))
                .send();
            tokio::spawn(request)
        })
        .collect();
    eventually("every request connection to wait on the lock", || async {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (blocked >= workers as i64).then_some(())
    })
    .await;

    let response = app.get("/ready").await;

    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    lock.rollback().await.unwrap();
    for request in waiting {
        request.await.unwrap().unwrap();
    }
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["postgres"], "ok");
}
