//! A reader's own page of lists, from the link in every issue: opening it
//! changes nothing, its form saves the lists ticked, and leaving the last
//! list is leaving everything.

use newsletter::keys::Keys;
use newsletter::subscribers::lists::{self, List, ListFields};
use uuid::Uuid;

use crate::campaigns::add_subscribers;
use crate::helpers::{BROWSER_ACCEPT, TestApp, spawn_app};
use crate::lists::owned;

fn keys(app: &TestApp) -> Keys {
    Keys::derive(&app.settings.application.hmac_secret).unwrap()
}

fn page_path(app: &TestApp, subscriber_id: Uuid) -> String {
    format!(
        "/preferences/{}",
        keys(app).unsubscribe_token(subscriber_id).as_ref()
    )
}

async fn add_list(app: &TestApp, name: &str, public: bool) -> List {
    let mut connection = app.db_pool.acquire().await.unwrap();
    lists::create(
        &mut connection,
        &ListFields {
            name: name.into(),
            description: String::new(),
            public,
            double_opt_in: true,
        },
    )
    .await
    .unwrap()
}

/// (list name, status) of the subscriber's memberships, by name.
async fn memberships(app: &TestApp, subscriber_id: Uuid) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT l.name, m.status FROM memberships m JOIN lists l ON l.id = m.list_id \
         WHERE m.subscriber_id = $1 ORDER BY l.name",
    )
    .bind(subscriber_id)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

async fn save(app: &TestApp, path: &str, fields: &[(&str, String)]) -> reqwest::Response {
    app.api_client
        .post(format!("{}{path}", app.address))
        .header("Accept", BROWSER_ACCEPT)
        .body(serde_urlencoded::to_string(fields).unwrap())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn opening_the_page_shows_the_readers_lists_ticked_and_changes_nothing() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    add_list(&app, "Events", true).await;
    add_list(&app, "Staff", false).await;

    let page = app.get(&page_path(&app, reader)).await;

    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(
        page.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Newsletter") && page.contains("Events"),
        "{page}"
    );
    assert!(
        !page.contains("Staff"),
        "a private list was offered: {page}"
    );
    assert_eq!(page.matches(" checked>").count(), 1, "{page}");
    assert!(page.contains("name=\"form_token\""), "{page}");
    assert_eq!(
        memberships(&app, reader).await,
        owned(&[("Newsletter", "confirmed")])
    );
}

#[tokio::test]
async fn saving_joins_the_lists_ticked_and_leaves_the_others_without_a_new_confirmation() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let events = add_list(&app, "Events", true).await;
    let path = page_path(&app, reader);
    let form_token = keys(&app).preferences_form_token(reader);

    let response = save(
        &app,
        &path,
        &[("form_token", form_token), ("list", events.id.to_string())],
    )
    .await;

    assert_eq!(response.status().as_u16(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("Your lists are saved."), "{page}");
    assert_eq!(
        memberships(&app, reader).await,
        owned(&[("Events", "confirmed"), ("Newsletter", "unsubscribed")])
    );
    assert_eq!(app.sent_emails().await.len(), 0);
}

#[tokio::test]
async fn leaving_the_last_list_is_unsubscribing_from_everything() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let path = page_path(&app, reader);
    let form_token = keys(&app).preferences_form_token(reader);

    let response = save(&app, &path, &[("form_token", form_token)]).await;

    assert_eq!(response.status().as_u16(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("You left your last list"), "{page}");
    assert!(page.contains("/resubscribe"), "{page}");
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
        .bind(reader)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(status, "unsubscribed");
}

#[tokio::test]
async fn a_save_without_the_pages_form_token_is_refused_with_403_and_changes_nothing() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let other = add_subscribers(&app, 1, "confirmed").await[0];
    let path = page_path(&app, reader);

    for form_token in [
        None,
        Some(String::new()),
        Some("zz".repeat(16)),
        Some(keys(&app).preferences_form_token(other)),
    ] {
        let fields: Vec<(&str, String)> = form_token
            .clone()
            .map(|token| vec![("form_token", token)])
            .unwrap_or_default();
        let response = save(&app, &path, &fields).await;

        assert_eq!(response.status().as_u16(), 403, "{form_token:?}");
    }
    assert_eq!(
        memberships(&app, reader).await,
        owned(&[("Newsletter", "confirmed")])
    );
}

#[tokio::test]
async fn a_forged_token_is_refused_with_400_and_a_test_emails_link_saves_nothing() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let forged = format!("/preferences/{}", "ab".repeat(32));
    for path in [forged.as_str(), "/preferences/not-a-token"] {
        assert_eq!(app.get(path).await.status().as_u16(), 400, "{path}");
    }

    let test = format!(
        "/preferences/{}",
        keys(&app).test_unsubscribe_token().as_ref()
    );
    let page = app.get(&test).await.text().await.unwrap();
    assert!(page.contains("test email"), "{page}");
    let response = save(&app, &test, &[("list", Uuid::new_v4().to_string())]).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        memberships(&app, reader).await,
        owned(&[("Newsletter", "confirmed")])
    );
}

#[tokio::test]
async fn a_hostile_list_field_is_refused_with_the_reason() {
    let app = spawn_app().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let path = page_path(&app, reader);
    let form_token = keys(&app).preferences_form_token(reader);

    for list in ["\0", "'; DROP TABLE lists; --", "1e400"] {
        let response = save(
            &app,
            &path,
            &[("form_token", form_token.clone()), ("list", list.into())],
        )
        .await;
        assert_eq!(response.status().as_u16(), 400, "{list:?}");
    }
    // A list id that names no list is left out, like an unticked box.
    let response = save(
        &app,
        &path,
        &[
            ("form_token", form_token.clone()),
            ("list", Uuid::new_v4().to_string()),
            ("list", lists_default(&app).await.to_string()),
        ],
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        memberships(&app, reader).await,
        owned(&[("Newsletter", "confirmed")])
    );
}

async fn lists_default(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}
