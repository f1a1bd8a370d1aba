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

/// A reader's way through the form and their inbox, by address: each
/// sign-up's link is the newest email the API received for it.
mod returning {
    use newsletter::configuration::get_configuration;
    use newsletter::db::Db;
    use newsletter::keys::Keys;
    use newsletter::retention::{Outcome, Retention, When};
    use reqwest::{StatusCode, Url};
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use crate::helpers::{BROWSER_ACCEPT, TestApp, eventually, spawn_app};
    use crate::newsroom::{Browser, PASSWORD, create_admin};
    use crate::webhooks::{complaint, post_webhook};

    /// Submits the form for `address` and returns the confirmation link of
    /// the email that sign-up sent.
    async fn sign_up(app: &TestApp, address: &str) -> Url {
        let before = emails_to(app, address).await.len();
        let response = app
            .api_client
            .post(format!("{}/subscriptions", app.address))
            .form(&[("name", "Ursula"), ("email", address)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{address}");
        let emails = eventually(&format!("a confirmation for {address}"), || async {
            let emails = emails_to(app, address).await;
            (emails.len() > before).then_some(emails)
        })
        .await;
        app.confirmation_links(emails.last().unwrap()).html
    }

    async fn emails_to(app: &TestApp, address: &str) -> Vec<serde_json::Value> {
        app.sent_emails()
            .await
            .into_iter()
            .filter(|email| email["To"] == address)
            .collect()
    }

    async fn subscriber(app: &TestApp, address: &str) -> (Uuid, String) {
        sqlx::query_as("SELECT id, status FROM subscriptions WHERE lower(email) = lower($1)")
            .bind(address)
            .fetch_one(&app.db_pool)
            .await
            .unwrap()
    }

    async fn status(app: &TestApp, address: &str) -> String {
        subscriber(app, address).await.1
    }

    fn token(link: &Url) -> String {
        link.query_pairs()
            .find(|(k, _)| k == "subscription_token")
            .unwrap()
            .1
            .into_owned()
    }

    /// What a link scanner does: opens the link, asking for a page.
    async fn scan(app: &TestApp, link: &Url) -> String {
        let opened = app.browse(app.local(link)).await;
        assert_eq!(opened.status(), StatusCode::OK);
        opened.text().await.unwrap()
    }

    fn assert_offers_the_button(page: &str, link: &Url, case: &str) {
        assert!(
            page.contains(r#"<form method="post" action="/subscriptions/confirm">"#)
                && page.contains(&format!(r#"value="{}""#, token(link))),
            "{case}: no button for this link: {page}"
        );
    }

    /// What a person does on that page.
    async fn press(app: &TestApp, link: &Url) -> reqwest::Response {
        app.api_client
            .post(format!("{}/subscriptions/confirm", app.address))
            .header("Accept", BROWSER_ACCEPT)
            .form(&[("subscription_token", token(link))])
            .send()
            .await
            .unwrap()
    }

    async fn unsubscribe(app: &TestApp, address: &str) {
        let (id, _) = subscriber(app, address).await;
        let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
        let token = keys.unsubscribe_token(id);
        let response = app
            .api_client
            .post(format!("{}/unsubscribe/{token}", app.address))
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// An admin erases the subscriber with `address`.
    async fn erase(app: &TestApp, address: &str) {
        let (id, _) = subscriber(app, address).await;
        create_admin(app, "ada", PASSWORD).await;
        let admin = Browser::signed_in(app, "ada", PASSWORD).await;
        let erased = admin.erase_subscriber(id, address).await;
        assert_eq!(erased.status(), StatusCode::SEE_OTHER, "{address} erased");
    }

    /// Subscribes Ursula, confirms her by opening the link (a first
    /// sign-up's link confirms on opening), and unsubscribes her.
    async fn a_reader_who_left(app: &TestApp) {
        app.mock_email_api_ok().await;
        let first = sign_up(app, "ursula@example.com").await;
        scan(app, &first).await;
        assert_eq!(status(app, "ursula@example.com").await, "confirmed");
        unsubscribe(app, "ursula@example.com").await;
    }

    #[tokio::test]
    async fn a_scanner_opening_the_link_of_a_reader_who_unsubscribed_shows_the_button_and_only_pressing_it_confirms()
     {
        // Someone types her address into the form again, as she spelled it
        // or in another case or with a tag that reaches the same inbox.
        for (case, again, row) in [
            (
                "the same address",
                "ursula@example.com",
                "ursula@example.com",
            ),
            ("another case", "URSULA@Example.com", "ursula@example.com"),
            (
                "a +tag",
                "ursula+again@example.com",
                "ursula+again@example.com",
            ),
        ] {
            let app = spawn_app().await;
            a_reader_who_left(&app).await;

            let link = sign_up(&app, again).await;
            let page = scan(&app, &link).await;

            assert_offers_the_button(&page, &link, case);
            assert_eq!(
                status(&app, "ursula@example.com").await,
                "unsubscribed",
                "{case}: opening the link brought her back"
            );
            assert_ne!(status(&app, row).await, "confirmed", "{case}");

            let pressed = press(&app, &link).await;

            assert_eq!(pressed.status(), StatusCode::OK, "{case}");
            assert_eq!(status(&app, row).await, "confirmed", "{case}");
        }
    }

    #[tokio::test]
    async fn a_scanner_opening_the_link_of_a_suppressed_address_shows_the_button_and_only_pressing_it_confirms()
     {
        let app = spawn_app().await;
        app.mock_email_api_ok().await;
        // She reports the confirmation as spam before anything opens it.
        let link = sign_up(&app, "ursula@example.com").await;
        let response = post_webhook(&app, &complaint(1, "ursula@example.com", None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        // A sign-up of the suppressed address sends nothing; one with a tag
        // reaches her inbox.
        let tagged = sign_up(&app, "ursula+x@example.com").await;

        for (case, link, address) in [
            ("the suppressed address", &link, "ursula@example.com"),
            ("with a +tag", &tagged, "ursula+x@example.com"),
        ] {
            let page = scan(&app, link).await;

            assert_offers_the_button(&page, link, case);
            assert_eq!(
                status(&app, address).await,
                "pending_confirmation",
                "{case}"
            );

            let pressed = press(&app, link).await;

            assert_eq!(pressed.status(), StatusCode::OK, "{case}");
            assert_eq!(status(&app, address).await, "confirmed", "{case}");
        }
    }

    #[tokio::test]
    async fn a_scanner_opening_the_link_of_an_erased_address_shows_the_button_and_only_pressing_it_confirms()
     {
        let app = spawn_app().await;
        a_reader_who_left(&app).await;
        erase(&app, "ursula@example.com").await;
        assert_eq!(app.subscriber_count().await, 0, "nothing left of her");

        let link = sign_up(&app, "ursula+back@example.com").await;
        let page = scan(&app, &link).await;

        assert_offers_the_button(&page, &link, "erased");
        assert_eq!(
            status(&app, "ursula+back@example.com").await,
            "pending_confirmation"
        );

        let pressed = press(&app, &link).await;

        assert_eq!(pressed.status(), StatusCode::OK);
        assert_eq!(status(&app, "ursula+back@example.com").await, "confirmed");
    }

    #[tokio::test]
    async fn a_scanner_opening_the_link_of_an_erased_reader_who_never_left_shows_the_button() {
        let app = spawn_app().await;
        app.mock_email_api_ok().await;
        let first = sign_up(&app, "ursula@example.com").await;
        scan(&app, &first).await;
        assert_eq!(status(&app, "ursula@example.com").await, "confirmed");
        erase(&app, "ursula@example.com").await;
        let suppressed: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
        assert_eq!(suppressed, 0, "she never left: nothing suppresses her");

        let link = sign_up(&app, "ursula@example.com").await;
        let page = scan(&app, &link).await;

        assert_offers_the_button(&page, &link, "erased, never left");
        assert_eq!(
            status(&app, "ursula@example.com").await,
            "pending_confirmation"
        );
        let pressed = press(&app, &link).await;
        assert_eq!(pressed.status(), StatusCode::OK);
        assert_eq!(status(&app, "ursula@example.com").await, "confirmed");
    }

    #[tokio::test]
    async fn a_scanner_opening_the_link_of_any_other_spelling_of_a_mailbox_that_left_shows_the_button()
     {
        for (case, again) in [
            ("without the tag", "ursula@example.com"),
            ("another tag, another case", "Ursula+Other@Example.com"),
        ] {
            let app = spawn_app().await;
            app.mock_email_api_ok().await;
            let first = sign_up(&app, "ursula+news@example.com").await;
            scan(&app, &first).await;
            assert_eq!(status(&app, "ursula+news@example.com").await, "confirmed");
            unsubscribe(&app, "ursula+news@example.com").await;

            let link = sign_up(&app, again).await;
            let page = scan(&app, &link).await;

            assert_offers_the_button(&page, &link, case);
            assert_eq!(
                status(&app, again).await,
                "pending_confirmation",
                "{case}: opening the link brought her back"
            );
        }
    }

    #[tokio::test]
    async fn the_mailbox_of_a_suppressed_sign_up_that_retention_deleted_still_needs_the_button() {
        let app = spawn_app().await;
        app.mock_email_api_ok().await;
        sign_up(&app, "ursula@example.com").await;
        let response = post_webhook(&app, &complaint(1, "ursula@example.com", None)).await;
        assert_eq!(response.status(), StatusCode::OK);
        // Long unconfirmed, her link long expired: retention's to forget.
        sqlx::query("UPDATE confirmation_tokens SET expires_at = now() - interval '40 days'")
            .execute(&app.db_pool)
            .await
            .unwrap();
        sqlx::query("UPDATE subscriptions SET subscribed_at = now() - interval '60 days'")
            .execute(&app.db_pool)
            .await
            .unwrap();
        let retention = Retention::new(
            Db::connect_lazy(&app.settings.database, 1),
            app.settings.retention.clone(),
        )
        .unwrap();
        let outcome = retention
            .run(When::Now, &CancellationToken::new())
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Finished(_)), "{outcome:?}");
        assert_eq!(app.subscriber_count().await, 0, "retention kept her row");

        let link = sign_up(&app, "Ursula+again@example.com").await;
        let page = scan(&app, &link).await;

        assert_offers_the_button(&page, &link, "deleted by retention");
        assert_eq!(
            status(&app, "ursula+again@example.com").await,
            "pending_confirmation"
        );
    }

    #[tokio::test]
    async fn a_first_time_subscribers_link_confirms_on_opening_under_the_local_setting() {
        let local = get_configuration().unwrap();
        assert!(
            !local.subscriptions.confirm_with_button,
            "the local settings ask for the button"
        );
        let app = spawn_app().await;
        // Another reader, with another inbox, has a past: it is not hers.
        a_reader_who_left(&app).await;

        let link = sign_up(&app, "le.guin@example.com").await;
        let opened = app.browse(app.local(&link)).await;

        assert_eq!(opened.status(), StatusCode::OK);
        assert!(
            opened
                .text()
                .await
                .unwrap()
                .contains("Your subscription is confirmed")
        );
        assert_eq!(status(&app, "le.guin@example.com").await, "confirmed");
    }
}
