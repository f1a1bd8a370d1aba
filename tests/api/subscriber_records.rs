//! One subscriber as the newsroom sees them: their page, the export of
//! everything stored about them, and their erasure.

use chrono::Utc;
use newsletter::keys::Keys;
use newsletter::subscribers::suppression::{self, Reason};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::campaigns::{publish, wait_for_state};
use crate::helpers::{TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin, location};

const ADDRESS: &str = "ursula@example.com";

fn keys(app: &TestApp) -> Keys {
    Keys::derive(&app.settings.application.hmac_secret).unwrap()
}

/// Signs `ADDRESS` up through the form and confirms it through the link in
/// the email: a subscriber with a used confirmation token and an outbox
/// email, as real ones have.
async fn a_confirmed_subscriber(app: &TestApp) -> Uuid {
    app.mock_email_api_ok().await;
    let response = app
        .post_subscriptions("name=Ursula%20Le%20Guin&email=ursula%40example.com")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let link = app.confirmation_links(&app.wait_for_emails(1).await[0]);
    assert_eq!(app.click(&link.html).await.status(), StatusCode::OK);
    subscriber_id(app, ADDRESS).await
}

/// The same, with an issue sent to them.
async fn a_subscriber_sent_an_issue(app: &TestApp) -> (Uuid, Uuid) {
    let id = a_confirmed_subscriber(app).await;
    let issue = publish(app, "Winter notes", "Hello {{name}}.").await;
    wait_for_state(app, issue, "done").await;
    (id, issue)
}

/// A subscriber stored directly, with the status given.
async fn insert_subscriber(app: &TestApp, email: &str, status: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO subscriptions \
           (id, email, name, subscribed_at, status, confirmed_at, unsubscribed_at) \
         VALUES (gen_random_uuid(), $1, 'Someone', now() - interval '2 days', $2, \
                 now() - interval '1 day', \
                 CASE WHEN $2 = 'unsubscribed' THEN now() - interval '1 hour' END) \
         RETURNING id",
    )
    .bind(email)
    .bind(status)
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

async fn subscriber_id(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM subscriptions WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn suppress(app: &TestApp, email: &str, reason: Reason, detail: &str) {
    let mut conn = app.db_pool.acquire().await.unwrap();
    let written = suppression::suppress(
        &mut conn,
        &keys(app),
        email,
        reason,
        Some(detail),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(written);
}

async fn admin_browser(app: &TestApp) -> Browser {
    create_admin(app, "ada", PASSWORD).await;
    Browser::signed_in(app, "ada", PASSWORD).await
}

/// Rows that name the subscriber or hold their address, per table.
async fn traces(app: &TestApp, id: Uuid, email: &str) -> Vec<(&'static str, i64)> {
    let hash = keys(app).address_hash(email);
    let mut counts = Vec::new();
    for (table, query) in [
        (
            "subscriptions",
            "SELECT count(*) FROM subscriptions WHERE id = $1 OR lower(email) = lower($2)",
        ),
        (
            "confirmation_tokens",
            "SELECT count(*) FROM confirmation_tokens WHERE subscriber_id = $1",
        ),
        (
            "email_outbox",
            "SELECT count(*) FROM email_outbox WHERE lower(recipient) = lower($2)",
        ),
        (
            "suppressions.email",
            "SELECT count(*) FROM suppressions WHERE lower(email) = lower($2)",
        ),
        (
            "soft_bounces",
            "SELECT count(*) FROM soft_bounces WHERE address_hash = $3",
        ),
    ] {
        let count: i64 = sqlx::query_scalar(query)
            .bind(id)
            .bind(email)
            .bind(&hash)
            .fetch_one(&app.db_pool)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        counts.push((table, count));
    }
    counts
}

/// The suppression list's entries as (hash, email, reason).
async fn suppressions(app: &TestApp) -> Vec<(Vec<u8>, Option<String>, String)> {
    sqlx::query_as("SELECT address_hash, email, reason FROM suppressions ORDER BY reason")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

/// The audit log's (action, detail), oldest first.
async fn audit_log(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, detail FROM audit_log ORDER BY id")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subscribers_page_shows_their_status_consent_suppression_and_deliveries() {
    let app = spawn_app().await;
    let (id, issue) = a_subscriber_sent_an_issue(&app).await;
    suppress(&app, ADDRESS, Reason::SpamComplaint, "Marked as spam").await;
    let (subscribed_at, confirmed_at): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) =
        sqlx::query_as("SELECT subscribed_at, confirmed_at FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    let browser = admin_browser(&app).await;

    let response = browser.get(&format!("/admin/subscribers/{id}")).await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"<dd id="email">ursula@example.com</dd>"#),
        "{page}"
    );
    assert!(page.contains(r#"<dd id="name">Ursula Le Guin</dd>"#));
    assert!(page.contains(r#"data-status="confirmed">Confirmed</dd>"#));
    let minute = |at: chrono::DateTime<Utc>| at.format("%Y-%m-%d %H:%M").to_string();
    assert!(page.contains(&format!(
        r#"<dd id="subscribed-at">{}</dd>"#,
        minute(subscribed_at)
    )));
    assert!(page.contains(&format!(
        r#"<dd id="confirmed-at">{}</dd>"#,
        minute(confirmed_at)
    )));
    assert!(page.contains(r#"<dd id="unsubscribed-at">–</dd>"#));
    assert!(page.contains("<strong>spam complaint</strong>"), "{page}");
    assert!(page.contains(r#"<span id="suppression-detail">Marked as spam</span>"#));
    assert!(page.contains(&format!(
        r#"<a href="/admin/newsletters/{issue}">Winter notes</a></td><td>sent</td>"#
    )));
    assert!(!page.contains(r#"id="more-deliveries""#));
    assert!(page.contains(&format!(r#"action="/admin/subscribers/{id}/erase""#)));
    assert!(page.contains(&format!(r#"href="/admin/subscribers/{id}/export""#)));
}

#[tokio::test]
async fn the_page_says_when_a_subscriber_left_and_how_many_deliveries_it_leaves_out() {
    let app = spawn_app().await;
    let id = insert_subscriber(&app, "gone@example.com", "unsubscribed").await;
    // More issues than the page lists, straight into the ledger.
    sqlx::query(
        "INSERT INTO deliveries (issue_id, seq, subscriber_id, status) \
         SELECT gen_random_uuid(), 1, $1, 'skipped' FROM generate_series(1, 23)",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let unsubscribed_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT unsubscribed_at FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    let browser = admin_browser(&app).await;

    let page = browser
        .get(&format!("/admin/subscribers/{id}"))
        .await
        .text()
        .await
        .unwrap();

    let at = unsubscribed_at.format("%Y-%m-%d %H:%M").to_string();
    assert!(
        page.contains(&format!(
            r#"data-status="unsubscribed">Unsubscribed since {at} UTC</dd>"#
        )),
        "{page}"
    );
    assert!(page.contains(&format!(r#"<dd id="unsubscribed-at">{at}</dd>"#)));
    assert!(page.contains(r#"data-suppressed="false""#));
    assert!(
        page.contains(r#"<p class="hint" id="more-deliveries">3 earlier issues are not shown"#)
    );
}

#[tokio::test]
async fn the_list_filters_unsubscribed_subscribers_and_links_each_to_their_page() {
    let app = spawn_app().await;
    let gone = insert_subscriber(&app, "gone@example.com", "unsubscribed").await;
    insert_subscriber(&app, "here@example.com", "confirmed").await;
    let browser = admin_browser(&app).await;

    let response = browser.get("/admin/subscribers?status=unsubscribed").await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert_eq!(page.matches("<tr><td>").count(), 1, "{page}");
    assert!(page.contains("<tr><td>gone@example.com</td>"));
    assert!(page.contains("<td>Unsubscribed</td>"));
    assert!(page.contains(&format!(r#"<a href="/admin/subscribers/{gone}""#)));
    assert!(page.contains(r#"<option value="unsubscribed" selected>"#));
}

#[tokio::test]
async fn a_signed_out_browser_asking_for_a_subscriber_is_sent_to_sign_in() {
    let app = spawn_app().await;
    let id = insert_subscriber(&app, "someone@example.com", "confirmed").await;

    let response = Browser::new(&app)
        .get(&format!("/admin/subscribers/{id}"))
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login");
}

#[tokio::test]
async fn the_export_holds_every_part_of_the_record_without_tokens_or_bodies_and_is_audited() {
    let app = spawn_app().await;
    let (id, issue) = a_subscriber_sent_an_issue(&app).await;
    suppress(&app, ADDRESS, Reason::HardBounce, "Mailbox does not exist").await;
    let browser = admin_browser(&app).await;

    let response = browser
        .get(&format!("/admin/subscribers/{id}/export"))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment") && disposition.contains(&format!("{id}.json")),
        "{disposition}"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = response.text().await.unwrap();
    let export: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(export["subscriber"]["id"], id.to_string());
    assert_eq!(export["subscriber"]["email"], ADDRESS);
    assert_eq!(export["subscriber"]["name"], "Ursula Le Guin");
    assert_eq!(export["subscriber"]["status"], "confirmed");
    assert!(export["consent"]["subscribed_at"].is_string(), "{text}");
    assert!(export["consent"]["confirmed_at"].is_string());
    assert!(export["consent"]["unsubscribed_at"].is_null());
    let tokens = export["confirmation_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "{text}");
    assert!(tokens[0]["created_at"].is_string() && tokens[0]["used_at"].is_string());
    let deliveries = export["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{text}");
    assert_eq!(deliveries[0]["issue_id"], issue.to_string());
    assert_eq!(deliveries[0]["issue_title"], "Winter notes");
    assert_eq!(deliveries[0]["status"], "sent");
    assert!(deliveries[0]["message_id"].is_string());
    let outbox = export["outbox_emails"].as_array().unwrap();
    assert_eq!(outbox.len(), 1, "the confirmation email: {text}");
    assert!(outbox[0]["subject"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(outbox[0]["message_stream"].is_string() && outbox[0]["enqueued_at"].is_string());
    assert_eq!(export["suppression"]["reason"], "hard_bounce");
    assert_eq!(export["suppression"]["detail"], "Mailbox does not exist");
    for secret in [
        "token_hash",
        "html_body",
        "text_body",
        "HtmlBody",
        "subscription_token",
    ] {
        assert!(!text.contains(secret), "the export holds {secret}: {text}");
    }
    let (action, detail) = audit_log(&app).await.pop().unwrap();
    assert_eq!(action, "subscriber-exported");
    assert!(detail.contains(&id.to_string()), "{detail}");
    assert!(!detail.contains(ADDRESS), "{detail}");
}

#[tokio::test]
async fn erasing_a_subscriber_removes_their_address_everywhere_keeps_the_ledger_and_is_audited() {
    let app = spawn_app().await;
    let (id, issue) = a_subscriber_sent_an_issue(&app).await;
    // A run of soft bounces, short of suppression.
    sqlx::query("INSERT INTO soft_bounces (address_hash, in_a_row, last_at) VALUES ($1, 2, now())")
        .bind(keys(&app).address_hash(ADDRESS))
        .execute(&app.db_pool)
        .await
        .unwrap();
    let before = traces(&app, id, ADDRESS).await;
    assert!(
        before
            .iter()
            .filter(|(table, _)| *table != "suppressions.email")
            .all(|(_, count)| *count > 0),
        "every table holds something to erase first: {before:?}"
    );
    let browser = admin_browser(&app).await;

    let response = browser.erase_subscriber(id, "Ursula@Example.com").await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/subscribers?notice=erased");
    for (table, count) in traces(&app, id, ADDRESS).await {
        assert_eq!(count, 0, "{table} still holds the subscriber");
    }
    assert!(
        suppressions(&app).await.is_empty(),
        "someone who never left is not kept on the list"
    );
    let ledger: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT subscriber_id, status FROM deliveries WHERE issue_id = $1")
            .bind(issue)
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        ledger,
        [(id, "sent".to_owned())],
        "the ledger keeps its row"
    );
    let log = audit_log(&app).await;
    let (action, detail) = log.last().unwrap();
    assert_eq!(action, "subscriber-erased");
    assert!(detail.contains(&id.to_string()), "{detail}");
    assert!(
        log.iter()
            .all(|(_, detail)| !detail.to_lowercase().contains(ADDRESS)),
        "{log:?}"
    );
    let list = browser.get(location(&response)).await.text().await.unwrap();
    assert!(list.contains(r#"id="subscribers-notice""#), "{list}");
}

#[tokio::test]
async fn an_unsubscribed_or_complaining_subscriber_leaves_only_the_hash_on_the_suppression_list() {
    let app = spawn_app().await;
    let unsubscribed = insert_subscriber(&app, "Left@Example.com", "unsubscribed").await;
    let complained = insert_subscriber(&app, "angry@example.com", "confirmed").await;
    suppress(&app, "angry@example.com", Reason::SpamComplaint, "Spam").await;
    let stays = insert_subscriber(&app, "stays@example.com", "confirmed").await;
    let browser = admin_browser(&app).await;

    for (id, address) in [
        (unsubscribed, "Left@Example.com"),
        (complained, "angry@example.com"),
    ] {
        let response = browser.erase_subscriber(id, address).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{address}");
    }

    let keys = keys(&app);
    assert_eq!(
        suppressions(&app).await,
        [
            (
                keys.address_hash("angry@example.com"),
                None,
                "spam_complaint".to_owned()
            ),
            (
                keys.address_hash("left@example.com"),
                None,
                "unsubscribed".to_owned()
            ),
        ]
    );
    // The hash still recognises the address, in any letter case.
    let mut conn = app.db_pool.acquire().await.unwrap();
    let entry = suppression::find(&mut conn, &keys, "LEFT@example.com")
        .await
        .unwrap();
    assert_eq!(entry.map(|e| e.reason), Some(Reason::Unsubscribed));
    // Someone not erased is untouched.
    assert_eq!(subscriber_id(&app, "stays@example.com").await, stays);
}

#[tokio::test]
async fn erasing_without_typing_the_address_is_refused_and_erases_nothing() {
    let app = spawn_app().await;
    let id = a_confirmed_subscriber(&app).await;
    let before = traces(&app, id, ADDRESS).await;
    let browser = admin_browser(&app).await;

    let missing = browser
        .submit(&format!("/admin/subscribers/{id}/erase"), &[])
        .await;
    let wrong = browser
        .erase_subscriber(id, "someone-else@example.com")
        .await;
    let blank = browser.erase_subscriber(id, "   ").await;

    for (case, response) in [("missing", missing), ("wrong", wrong), ("blank", blank)] {
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains(r#"id="subscriber-error""#), "{case}: {page}");
        assert!(page.contains("Nothing was erased"), "{case}");
    }
    assert_eq!(traces(&app, id, ADDRESS).await, before);
    assert!(
        !audit_log(&app)
            .await
            .iter()
            .any(|(action, _)| action == "subscriber-erased")
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_subscriber_id_is_a_404_that_says_which() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    let unknown = Uuid::new_v4();

    for path in [
        format!("/admin/subscribers/{unknown}"),
        format!("/admin/subscribers/{unknown}/export"),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("may have been erased"), "{path}: {page}");
    }
    for path in [
        "/admin/subscribers/not-an-id",
        "/admin/subscribers/not-an-id/export",
        "/admin/subscribers/%00/export",
    ] {
        let response = browser.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let page = response.text().await.unwrap();
        assert!(page.contains("does not hold a subscriber id"), "{path}");
    }
    let erase_malformed = browser
        .submit(
            "/admin/subscribers/not-an-id/erase",
            &[("confirm_address", ADDRESS)],
        )
        .await;
    assert_eq!(erase_malformed.status(), StatusCode::NOT_FOUND);
    assert!(
        !audit_log(&app)
            .await
            .iter()
            .any(|(action, _)| action.starts_with("subscriber-")),
        "nothing was exported or erased"
    );
}

#[tokio::test]
async fn erasing_an_already_erased_subscriber_is_a_404() {
    let app = spawn_app().await;
    let id = insert_subscriber(&app, "once@example.com", "confirmed").await;
    let browser = admin_browser(&app).await;
    let first = browser.erase_subscriber(id, "once@example.com").await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);

    let again = browser.erase_subscriber(id, "once@example.com").await;
    let page = browser.get(&format!("/admin/subscribers/{id}")).await;

    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(again.text().await.unwrap().contains("may have been erased"));
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let erasures = audit_log(&app)
        .await
        .into_iter()
        .filter(|(action, _)| action == "subscriber-erased")
        .count();
    assert_eq!(erasures, 1);
}
