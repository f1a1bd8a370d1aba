//! The local inbox: with `inbox` as the provider, every email the service
//! sends is kept and shown at `/admin/inbox`, as its recipient would get it
//! and with links that work; erasing a subscriber takes their emails with
//! them; and where the inbox is off, or an address names no email, its
//! pages answer 404 with the reason.

use std::time::Duration;

use newsletter::campaigns::DeliveryId;
use newsletter::db::Db;
use newsletter::delivery::answer::Answer;
use newsletter::delivery::inbox::InboxProvider;
use newsletter::delivery::provider::Provider;
use newsletter::domain::SubscriberEmail;
use newsletter::emails::{Email, EmailContent};
use reqwest::{StatusCode, Url};
use uuid::Uuid;

use crate::campaigns::{add_subscribers, publish, wait_for_state};
use crate::erasure::{ADDRESS, SIGN_UP, found_in, pg_dump};
use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with_the_inbox};
use crate::newsroom::{Browser, PASSWORD, create_admin};

/// The signed-in admin's browser.
async fn admin(app: &TestApp) -> Browser {
    create_admin(app, "desk", PASSWORD).await;
    Browser::signed_in(app, "desk", PASSWORD).await
}

/// The local inbox as a sender drives it, on a pool of its own: for
/// emails a sender held while the test changed the database under it.
fn the_inbox(app: &TestApp) -> InboxProvider {
    let settings = &app.settings;
    let from = newsletter::delivery::sender(
        &settings.email_client,
        &settings.newsletter.parse().unwrap(),
    )
    .unwrap();
    InboxProvider::new(
        Db::connect_lazy(&settings.database, 2),
        from,
        Duration::from_secs(10),
    )
}

/// An email to `to` as a sender holds it once it has claimed the message:
/// an outbox row, or a delivery of an issue.
fn claimed(to: &str, outbox_id: Option<Uuid>, delivery: Option<DeliveryId>) -> Email {
    Email {
        to: SubscriberEmail::parse(to).unwrap(),
        content: EmailContent {
            subject: format!("For {to}"),
            html_body: format!("<p>Hello {to}</p>"),
            text_body: format!("Hello {to}"),
        },
        message_stream: "outbound".into(),
        delivery,
        outbox_id,
        unsubscribe: None,
    }
}

/// The id of the outbox's email to `address`.
async fn outbox_id_to(app: &TestApp, address: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM email_outbox WHERE lower(recipient) = lower($1)")
        .bind(address)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn emails_kept_under(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM inbox_emails WHERE id::text = $1")
        .bind(id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// The page's text as a browser shows it: the entities askama escapes
/// read back as characters.
async fn page(browser: &Browser, path: &str) -> (StatusCode, String) {
    let response = browser.get(path).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, unescape(&text))
}

fn unescape(html: &str) -> String {
    let mut text = html.to_owned();
    for (entity, character) in [
        ("&#60;", "<"),
        ("&#62;", ">"),
        ("&#34;", "\""),
        ("&#39;", "'"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
    ] {
        text = text.replace(entity, character);
    }
    // Last: an `&` it decodes must not start another entity.
    text.replace("&#38;", "&").replace("&amp;", "&")
}

/// The addresses of the emails the inbox lists, newest first.
fn listed(page: &str) -> Vec<String> {
    page.split(r#"href="/admin/inbox/"#)
        .skip(1)
        .map(|rest| format!("/admin/inbox/{}", &rest[..rest.find('"').unwrap()]))
        .collect()
}

/// Waits until the inbox lists `n` emails; their addresses, newest first.
async fn wait_for_inbox(browser: &Browser, n: usize) -> Vec<String> {
    eventually(&format!("{n} emails in the inbox"), || async {
        let (status, page) = page(browser, "/admin/inbox").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let emails = listed(&page);
        (emails.len() >= n).then_some(emails)
    })
    .await
}

/// The one link in `text` that starts with `prefix`.
fn link_in(text: &str, prefix: &str) -> Url {
    let links: Vec<Url> = linkify::LinkFinder::new()
        .links(text)
        .map(|link| link.as_str())
        .filter(|link| link.starts_with(prefix))
        .map(|link| Url::parse(link).unwrap())
        .collect();
    assert_eq!(links.len(), 1, "one link to {prefix} in {text}");
    links.into_iter().next().unwrap()
}

/// What `<pre id="email-text">` holds.
fn text_version(page: &str) -> &str {
    let start = page
        .find(r#"<pre id="email-text">"#)
        .expect("the text version")
        + 21;
    &page[start..start + page[start..].find("</pre>").unwrap()]
}

#[tokio::test]
async fn a_confirmation_sent_through_the_inbox_is_listed_and_shown_with_links_that_confirm() {
    let app = spawn_app_with_the_inbox().await;
    let browser = admin(&app).await;

    let subscribed = app
        .post_subscriptions("name=Ursula%20Le%20Guin&email=ursula%40example.com")
        .await;
    assert_eq!(subscribed.status(), StatusCode::OK);

    let emails = wait_for_inbox(&browser, 1).await;
    let (_, list) = page(&browser, "/admin/inbox").await;
    assert!(list.contains("ursula@example.com"), "{list}");
    assert!(list.contains(r#"<a href="/admin/inbox">Inbox</a>"#));
    let (status, shown) = page(&browser, &emails[0]).await;
    assert_eq!(status, StatusCode::OK);
    for what in [
        r#"<dd id="email-from">"Our newsletter" <newsletter@example.com></dd>"#,
        r#"<dd id="email-to">ursula@example.com</dd>"#,
        "Hello Ursula Le Guin,",
        &format!(r#"<iframe src="{}/body""#, emails[0]),
    ] {
        assert!(
            shown.contains(what),
            "the page does not show {what}: {shown}"
        );
    }
    let response = browser.get(&emails[0]).await;
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(policy.contains("frame-src 'self'"), "{policy}");
    assert!(policy.contains("style-src 'self'"), "{policy}");

    // The HTML, as the frame gets it: sandboxed, its links to the top.
    let body = browser.get(&format!("{}/body", emails[0])).await;
    assert_eq!(body.status(), StatusCode::OK);
    let headers = body.headers().clone();
    let html = body.text().await.unwrap();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("sandbox allow-top-navigation-by-user-activation")
            && policy.contains("frame-ancestors 'self'")
            && !policy.contains("script"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "SAMEORIGIN");
    assert!(html.starts_with(r#"<base target="_top">"#), "{html}");

    let confirm = format!(
        "{}/subscriptions/confirm?",
        app.settings.application.base_url
    );
    let in_html = link_in(&html, &confirm);
    let in_text = link_in(text_version(&shown), &confirm);
    assert_eq!(in_html, in_text);
    assert_eq!(app.click(&in_html).await.status(), StatusCode::OK);
    assert_eq!(app.subscriber_status().await, "confirmed");
    let provider: Option<String> = sqlx::query_scalar("SELECT provider FROM email_outbox")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(provider.as_deref(), Some("inbox"));
}

#[tokio::test]
async fn a_newsletter_in_the_inbox_shows_its_list_unsubscribe_header_and_its_stream() {
    let app = spawn_app_with_the_inbox().await;
    add_subscribers(&app, 1, "confirmed").await;
    let browser = admin(&app).await;

    let issue = publish(&app, "Winter notes", "Hello there.").await;
    wait_for_state(&app, issue, "done").await;

    let emails = wait_for_inbox(&browser, 1).await;
    let (status, shown) = page(&browser, &emails[0]).await;
    assert_eq!(status, StatusCode::OK);
    let unsubscribe = format!("{}/unsubscribe/", app.settings.application.base_url);
    assert!(
        shown.contains(&format!(
            r#"<dd data-header="List-Unsubscribe"><{unsubscribe}"#
        )),
        "{shown}"
    );
    assert!(
        shown
            .contains(r#"<dd data-header="List-Unsubscribe-Post">List-Unsubscribe=One-Click</dd>"#),
        "{shown}"
    );
    assert!(shown.contains(&format!(
        r#"<dd id="email-stream">{}</dd>"#,
        app.settings.email_client.broadcast_stream
    )));
    // The ledger's message id is the inbox's id for the email.
    let (provider, message_id): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT provider, message_id FROM deliveries WHERE issue_id = $1")
            .bind(issue)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(provider.as_deref(), Some("inbox"));
    assert_eq!(
        format!("/admin/inbox/{}", message_id.unwrap()),
        emails[0],
        "the delivery's message id names the email"
    );
}

#[tokio::test]
async fn erasing_a_subscriber_takes_their_emails_out_of_the_inbox_and_leaves_no_form_of_them() {
    let app = spawn_app_with_the_inbox().await;
    let browser = admin(&app).await;
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    let other = "name=Adamant%20Byron&email=adamant%40example.com";
    assert_eq!(app.post_subscriptions(other).await.status(), StatusCode::OK);
    let emails = wait_for_inbox(&browser, 2).await;
    app.wait_for_outbox_to_settle().await;
    let kept_in_the_inbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inbox_emails WHERE text_body LIKE '%Zebulon%'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(kept_in_the_inbox, 1, "their confirmation, with their name");
    let id: Uuid =
        sqlx::query_scalar("SELECT id FROM subscriptions WHERE lower(email) = lower($1)")
            .bind(ADDRESS)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();

    let response = browser.erase_subscriber(id, ADDRESS).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let after = found_in(&pg_dump(&app));
    assert!(after.is_empty(), "the dump still holds them: {after:#?}");
    let (_, list) = page(&browser, "/admin/inbox").await;
    let left = listed(&list);
    assert_eq!(left.len(), 1, "{list}");
    assert!(list.contains("adamant@example.com"), "{list}");
    assert!(emails.contains(&left[0]));
}

#[tokio::test]
async fn emails_a_sender_held_when_their_recipient_was_erased_are_dropped_and_leave_no_form_of_them()
 {
    let app = spawn_app_with_the_inbox().await;
    let browser = admin(&app).await;
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    app.wait_for_outbox_to_settle().await;
    let confirmation = outbox_id_to(&app, ADDRESS).await;
    let subscriber: Uuid = sqlx::query_scalar(
        "UPDATE subscriptions SET status = 'confirmed', confirmed_at = now() \
         WHERE lower(email) = lower($1) RETURNING id",
    )
    .bind(ADDRESS)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    let issue = publish(&app, "Winter notes", "Hello there.").await;
    wait_for_state(&app, issue, "done").await;
    let seq: i32 = sqlx::query_scalar("SELECT seq FROM deliveries WHERE subscriber_id = $1")
        .bind(subscriber)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    // What a sender claimed before the erasure and keeps after it.
    let held = [
        claimed(ADDRESS, Some(confirmation), None),
        claimed(
            ADDRESS,
            None,
            Some(DeliveryId {
                issue_id: issue,
                seq,
            }),
        ),
        claimed("adamant@example.com", None, None),
    ];

    let response = browser.erase_subscriber(subscriber, ADDRESS).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let answers = the_inbox(&app)
        .send(&held.iter().collect::<Vec<_>>())
        .await
        .expect("the inbox answers for each email");

    assert!(
        matches!(
            &answers[..],
            [Answer::Refused(_), Answer::Refused(_), Answer::Sent { .. }]
        ),
        "the erased recipient's emails are refused, the other is kept: {answers:?}"
    );
    let after = found_in(&pg_dump(&app));
    assert!(after.is_empty(), "the dump still holds them: {after:#?}");
}

#[tokio::test]
async fn an_email_kept_while_an_erasure_deletes_its_message_waits_for_the_erasure_and_is_dropped() {
    let app = spawn_app_with_the_inbox().await;
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    app.wait_for_outbox_to_settle().await;
    let message = outbox_id_to(&app, ADDRESS).await;
    // An erasure half done: the message deleted, not yet committed.
    let mut erasure = app.db_pool.begin().await.unwrap();
    sqlx::query("DELETE FROM email_outbox WHERE id = $1")
        .bind(message)
        .execute(&mut *erasure)
        .await
        .unwrap();

    let inbox = the_inbox(&app);
    let sending = tokio::spawn(async move {
        let email = claimed(ADDRESS, Some(message), None);
        inbox.send(&[&email]).await
    });
    eventually("the inbox's insert to wait for the erasure", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO inbox_emails%'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (waiting > 0).then_some(())
    })
    .await;
    sqlx::query("DELETE FROM inbox_emails WHERE lower(recipient) = lower($1)")
        .bind(ADDRESS)
        .execute(&mut *erasure)
        .await
        .unwrap();
    erasure.commit().await.unwrap();
    let answers = sending.await.unwrap().expect("an answer for the email");

    assert!(matches!(&answers[..], [Answer::Refused(_)]), "{answers:?}");
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM inbox_emails WHERE lower(recipient) = lower($1)")
            .bind(ADDRESS)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(kept, 0, "the email outlived the erasure");
}

#[tokio::test]
async fn a_message_tried_again_after_an_insert_that_may_have_committed_is_kept_once() {
    let app = spawn_app_with_the_inbox().await;
    add_subscribers(&app, 1, "confirmed").await;
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    app.wait_for_outbox_to_settle().await;
    let issue = publish(&app, "Winter notes", "Hello there.").await;
    wait_for_state(&app, issue, "done").await;
    let confirmation = outbox_id_to(&app, ADDRESS).await;
    // The outbox records no provider's id: the inbox's own, then.
    let kept_as: String =
        sqlx::query_scalar("SELECT id::text FROM inbox_emails WHERE lower(recipient) = lower($1)")
            .bind(ADDRESS)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    let (seq, reader, delivered_as): (i32, String, String) = sqlx::query_as(
        "SELECT d.seq, s.email, d.message_id FROM deliveries d \
         JOIN subscriptions s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 AND lower(s.email) <> lower($2)",
    )
    .bind(issue)
    .bind(ADDRESS)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    let inbox = the_inbox(&app);

    for (case, email, first_id) in [
        (
            "a confirmation",
            claimed(ADDRESS, Some(confirmation), None),
            kept_as,
        ),
        (
            "a newsletter",
            claimed(
                &reader,
                None,
                Some(DeliveryId {
                    issue_id: issue,
                    seq,
                }),
            ),
            delivered_as,
        ),
    ] {
        // What the engine does after a timeout: the same message again.
        for attempt in 2..=3 {
            let answers = inbox.send(&[&email]).await.expect("an answer");
            assert_eq!(
                answers,
                [Answer::Sent {
                    message_id: Some(first_id.clone()),
                    provider: "inbox",
                    code: None,
                }],
                "{case}, attempt {attempt}"
            );
        }
        assert_eq!(emails_kept_under(&app, &first_id).await, 1, "{case}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox_emails")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(total, 2, "one confirmation and one newsletter, each once");
}

#[tokio::test]
async fn markup_in_a_kept_email_is_shown_as_text_on_the_inbox_pages_never_as_markup() {
    let app = spawn_app_with_the_inbox().await;
    let browser = admin(&app).await;
    // What the name parser lets through (no angle brackets, no double
    // quotes): enough to leave a single-quoted attribute.
    let name = "Zeb' autofocus onfocus='alert&#40;1&#41;";
    let sign_up =
        serde_urlencoded::to_string([("name", name), ("email", "zeb@example.com")]).unwrap();
    assert_eq!(
        app.post_subscriptions(sign_up).await.status(),
        StatusCode::OK
    );
    // What only a provider's caller can hand the inbox: any subject, text
    // and stream, and an address with an apostrophe and an ampersand.
    let hostile = r#""><img src=x onerror=alert(1)>"#;
    let email = Email {
        to: SubscriberEmail::parse("o'hara&co@example.com").unwrap(),
        content: EmailContent {
            subject: hostile.into(),
            html_body: "<p>Hi</p>".into(),
            text_body: format!("</pre>{hostile}<script>alert(2)</script>"),
        },
        message_stream: format!("<b>{hostile}</b>"),
        delivery: None,
        outbox_id: None,
        unsubscribe: None,
    };
    the_inbox(&app).send(&[&email]).await.expect("kept");

    let emails = wait_for_inbox(&browser, 2).await;
    let mut pages = vec![("the list", "/admin/inbox".to_owned())];
    pages.extend(emails.iter().map(|path| ("an email", path.clone())));
    for (which, path) in pages {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{which}");
        let raw = response.text().await.unwrap();
        for markup in [
            "<img src=x",
            "<script>alert",
            "<b>\"",
            "</pre>\"",
            "' autofocus onfocus='",
            "o'hara&co",
        ] {
            assert!(
                !raw.contains(markup),
                "{which} ({path}) holds {markup} unescaped: {raw}"
            );
        }
    }
    let (_, list) = page(&browser, "/admin/inbox").await;
    assert!(
        list.contains(hostile),
        "the subject is shown as text: {list}"
    );
    assert!(list.contains("o'hara&co@example.com"), "{list}");
    let mut shown = String::new();
    for path in &emails {
        shown.push_str(&page(&browser, path).await.1);
    }
    for text in [
        format!("Hello {name},"),
        format!("</pre>{hostile}<script>alert(2)</script>"),
        format!("<b>{hostile}</b>"),
    ] {
        assert!(
            shown.contains(&text),
            "{text} is not shown as text: {shown}"
        );
    }
}

#[tokio::test]
async fn where_the_inbox_is_off_its_pages_answer_404_saying_where_emails_go() {
    let app = spawn_app().await;
    let browser = admin(&app).await;
    let reason = "The local inbox is off: emails go through postmark.";

    for path in [
        "/admin/inbox".to_owned(),
        format!("/admin/inbox/{}", Uuid::new_v4()),
        format!("/admin/inbox/{}/body", Uuid::new_v4()),
    ] {
        let (status, page) = page(&browser, &path).await;

        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.contains(reason), "{path}: {page}");
    }
    let (_, dashboard) = page(&browser, "/admin/dashboard").await;
    assert!(
        !dashboard.contains(r#"href="/admin/inbox""#),
        "the navigation links to an inbox that is off"
    );
}

#[tokio::test]
async fn an_email_address_that_is_no_uuid_or_names_no_email_is_a_404_with_the_reason() {
    let app = spawn_app_with_the_inbox().await;
    let browser = admin(&app).await;
    let unknown = Uuid::new_v4();
    let cases = [
        (
            "not a uuid",
            "not-an-id".to_owned(),
            "does not hold an email id",
        ),
        (
            "a cut uuid",
            unknown.to_string()[..20].to_owned(),
            "does not hold an email id",
        ),
        ("a NUL", "%00".to_owned(), "does not hold an email id"),
        (
            "an unknown uuid",
            unknown.to_string(),
            "No email in the inbox has this id",
        ),
    ];

    for (case, id, reason) in cases {
        for path in [
            format!("/admin/inbox/{id}"),
            format!("/admin/inbox/{id}/body"),
        ] {
            let (status, page) = page(&browser, &path).await;

            assert_eq!(status, StatusCode::NOT_FOUND, "{case}: {path}");
            assert!(page.contains(reason), "{case}: {path}: {page}");
        }
    }
}
