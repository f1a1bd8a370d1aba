use crate::helpers::{TestApp, spawn_app};

async fn subscribe_and_get_link(app: &TestApp) -> reqwest::Url {
    app.mock_email_api_ok().await;
    let response = app
        .post_subscriptions("name=le%20guin&email=ursula_le_guin%40gmail.com")
        .await;
    assert_eq!(response.status().as_u16(), 200);
    app.confirmation_links(&app.sent_emails().await[0]).html
}

#[tokio::test]
async fn confirm_without_a_token_is_rejected_with_400() {
    let app = spawn_app().await;

    let response = app.get_confirm("").await;

    assert_eq!(response.status().as_u16(), 400);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("subscription_token"), "{reason}");
}

#[tokio::test]
async fn confirm_with_a_token_of_the_wrong_shape_is_rejected_with_400() {
    let app = spawn_app().await;

    for token in [
        "short",
        "a-token-with-dashes-that-is-32-ch",
        &"a".repeat(200),
    ] {
        let response = app
            .get_confirm(&format!("?subscription_token={token}"))
            .await;

        assert_eq!(response.status().as_u16(), 400, "token {token:?}");
    }
}

#[tokio::test]
async fn confirm_with_an_unknown_token_is_rejected_with_401() {
    let app = spawn_app().await;
    subscribe_and_get_link(&app).await;

    let response = app
        .get_confirm(&format!("?subscription_token={}", "A".repeat(32)))
        .await;

    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
}

#[tokio::test]
async fn clicking_the_confirmation_link_confirms_the_subscriber() {
    let app = spawn_app().await;
    let link = subscribe_and_get_link(&app).await;

    let response = app.click(&link).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn clicking_the_confirmation_link_twice_answers_200_both_times() {
    let app = spawn_app().await;
    let link = subscribe_and_get_link(&app).await;

    let first = app.click(&link).await;
    let second = app.click(&link).await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}
