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
