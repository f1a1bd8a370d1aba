use crate::helpers::{TestApp, spawn_app};

async fn subscribe_and_get_link(app: &TestApp) -> reqwest::Url {
    app.mock_email_api_ok().await;
    let response = app
        .post_subscriptions("name=le%20guin&email=ursula_le_guin%40gmail.com")
        .await;
    assert_eq!(response.status().as_u16(), 200);
    app.confirmation_links(&app.wait_for_emails(1).await[0])
        .html
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

#[tokio::test]
async fn an_expired_link_is_gone_with_a_hint_to_subscribe_again() {
    let app = spawn_app().await;
    let link = subscribe_and_get_link(&app).await;
    sqlx::query("UPDATE confirmation_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.db_pool)
        .await
        .unwrap();

    let response = app.click(&link).await;

    assert_eq!(response.status().as_u16(), 410);
    let reason = response.text().await.unwrap();
    assert!(reason.contains("Subscribe again"), "{reason}");
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
}

#[tokio::test]
async fn links_expire_after_the_configured_lifetime() {
    let app = crate::helpers::spawn_app_with(|s| s.subscriptions.token_expiry_hours = 48).await;
    subscribe_and_get_link(&app).await;

    let lifetime_hours: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 / 3600 FROM confirmation_tokens",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();

    assert!((lifetime_hours - 48.0).abs() < 0.01, "{lifetime_hours}");
}

#[tokio::test]
async fn a_used_link_clicked_after_it_expired_still_shows_the_confirmation() {
    let app = spawn_app().await;
    let link = subscribe_and_get_link(&app).await;
    app.click(&link).await;
    sqlx::query("UPDATE confirmation_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.db_pool)
        .await
        .unwrap();

    let response = app.click(&link).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn no_table_holds_a_token_in_plain_text_once_its_email_is_sent() {
    let app = spawn_app().await;
    let link = subscribe_and_get_link(&app).await;
    app.wait_for_outbox_to_settle().await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned();

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT t::text FROM "{table}" t"#
        )))
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
        assert!(
            rows.iter().all(|row| !row.contains(&token)),
            "table {table} holds the token in plain text"
        );
    }
}
