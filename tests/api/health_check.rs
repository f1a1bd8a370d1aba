use crate::helpers::{spawn_app, spawn_app_with};

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
