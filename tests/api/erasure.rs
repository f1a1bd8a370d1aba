//! Erasure leaves nothing: a subscriber goes through everything the service
//! does with an address (sign-up, confirmation, an issue the provider first
//! turns away, webhooks, the admin's searches and exports, unsubscribing),
//! is erased, and then a dump of the whole database, data and all, holds
//! neither their address in any form nor their name. Only the keyed hash on
//! the suppression list remains, and it still refuses them.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::Utc;
use newsletter::keys::Keys;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::campaigns::{deliveries, publish, wait_for_state};
use crate::helpers::{EMAIL_API, TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin, location};
use crate::webhooks::{complaint, post_webhook};

pub const ADDRESS: &str = "Zebulon.Quaxley+Letters@Example.org";
const NAME: &str = "Zebulon Quaxley";
/// The sign-up form's body for them.
pub const SIGN_UP: &str = "name=Zebulon%20Quaxley&email=Zebulon.Quaxley%2BLetters%40Example.org";

/// Every form of them the dump is searched for, and whether the search
/// ignores letter case.
fn forms() -> Vec<(&'static str, String)> {
    vec![
        ("the address as typed", ADDRESS.to_owned()),
        ("the address in lower case", ADDRESS.to_lowercase()),
        ("the address in upper case", ADDRESS.to_uppercase()),
        (
            "the address URL-encoded",
            "Zebulon.Quaxley%2BLetters%40Example.org".to_owned(),
        ),
        ("the local part", "zebulon.quaxley+letters".to_owned()),
        (
            "the mailbox without its tag",
            "zebulon.quaxley@example.org".to_owned(),
        ),
        ("the name", NAME.to_owned()),
        ("the first name", "zebulon".to_owned()),
        ("the surname", "quaxley".to_owned()),
    ]
}

/// Where each form is found in `dump`, letter case aside: the lines that
/// hold it.
pub fn found_in(dump: &str) -> Vec<(&'static str, Vec<String>)> {
    let lowered = dump.to_lowercase();
    forms()
        .into_iter()
        .filter_map(|(what, form)| {
            let lines: Vec<String> = lowered
                .lines()
                .filter(|line| line.contains(&form.to_lowercase()))
                .map(|line| line.chars().take(300).collect())
                .collect();
            (!lines.is_empty() || dump.contains(&form)).then_some((what, lines))
        })
        .collect()
}

/// The whole database as `pg_dump` writes it: schema and data.
pub fn pg_dump(app: &TestApp) -> String {
    let database = &app.settings.database;
    let output = Command::new("/usr/bin/pg_dump")
        .args(["--host", &database.host])
        .args(["--port", &database.port.to_string()])
        .args(["--username", &database.username])
        .args(["--dbname", &database.database_name])
        .arg("--no-password")
        .env("PGPASSWORD", database.password.expose_secret())
        .output()
        .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the dump is UTF-8")
}

fn keys(app: &TestApp) -> Keys {
    Keys::derive(&app.settings.application.hmac_secret).unwrap()
}

/// The mock Postmark: the first message of each stream to them is turned
/// away for now, with a message that quotes their address as providers'
/// messages do; everything else is taken.
async fn a_provider_that_quotes_them_once(app: &TestApp) {
    let turned_away: Arc<[AtomicBool; 2]> = Arc::default();
    let broadcast = app.settings.email_client.broadcast_stream.clone();
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(move |request: &Request| {
            let messages: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
            let answers: Vec<Value> = messages
                .iter()
                .map(|message| {
                    let stream = usize::from(message["MessageStream"] == broadcast.as_str());
                    let to_them = message["To"].as_str().unwrap_or("").contains(ADDRESS);
                    if to_them && !turned_away[stream].swap(true, Ordering::SeqCst) {
                        json!({
                            "ErrorCode": 100,
                            "Message": format!("Delivery to '{ADDRESS}' ({NAME}) postponed."),
                            "To": message["To"],
                        })
                    } else {
                        json!({
                            "ErrorCode": 0,
                            "Message": "OK",
                            "To": message["To"],
                            "MessageID": Uuid::new_v4().to_string(),
                        })
                    }
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(answers)
        })
        .mount(&app.email_server)
        .await;
}

/// A bounce record about them, its texts quoting their address.
fn soft_bounce(id: i64, delivery: &str) -> Value {
    json!({
        "RecordType": "Bounce",
        "ID": id,
        "Type": "SoftBounce",
        "TypeCode": 4096,
        "Name": "Soft bounce",
        "MessageID": Uuid::new_v4().to_string(),
        "Description": format!("The mailbox of {NAME} <{ADDRESS}> is full."),
        "Details": format!("smtp;452 4.2.2 <{ADDRESS}>: mailbox full"),
        "Email": ADDRESS,
        "BouncedAt": (Utc::now() - chrono::Duration::seconds(30)).to_rfc3339(),
        "Inactive": false,
        "Metadata": { "delivery_id": delivery }
    })
}

/// The value of `name` among a sent message's headers.
fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["Headers"]
        .as_array()?
        .iter()
        .find(|h| h["Name"] == name)?["Value"]
        .as_str()
}

async fn subscriber_id(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM subscriptions WHERE lower(email) = lower($1)")
        .bind(ADDRESS)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// What the previous release wrote into free-text columns, which this one
/// no longer does: during a rolling update both run, so the erasure must
/// clear these too.
async fn what_the_previous_release_wrote(app: &TestApp, subscriber: Uuid) {
    let pool = &app.db_pool;
    let reason =
        format!("the email API refused it (error 100): Delivery to '{ADDRESS}' postponed.");
    let written = sqlx::query("UPDATE deliveries SET last_error = $1 WHERE subscriber_id = $2")
        .bind(reason)
        .bind(subscriber)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(written.rows_affected(), 1, "the delivery's reason");
    let detail = format!(
        "SoftBounce: The mailbox of {NAME} <{ADDRESS}> is full. \
         smtp;452 4.2.2 <{ADDRESS}>: mailbox full"
    );
    let written = sqlx::query("UPDATE suppressions SET detail = $1 WHERE address_hash = $2")
        .bind(detail)
        .bind(keys(app).address_hash(ADDRESS))
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(written.rows_affected(), 1, "the suppression's detail");
    // Searches as admins type them: the address, the name, the address
    // pasted from a link, the mailbox without its tag.
    for search in [
        ADDRESS,
        &NAME.to_lowercase(),
        "Zebulon.Quaxley%2BLetters%40Example.org",
        "zebulon.quaxley@example.org",
    ] {
        let search = format!("search {search:?}, status \"\"");
        sqlx::query(
            "INSERT INTO audit_log (username, action, detail) \
             VALUES ('desk', 'subscribers-exported', $1)",
        )
        .bind(search)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn after_an_erasure_a_dump_of_the_whole_database_holds_no_form_of_their_address_or_name() {
    let app = spawn_app().await;
    a_provider_that_quotes_them_once(&app).await;

    // Sign-up and confirmation; the first confirmation email is turned away.
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    let emails = app.wait_for_emails(2).await;
    let link = app.confirmation_links(emails.last().unwrap());
    assert_eq!(app.click(&link.html).await.status(), StatusCode::OK);
    assert_eq!(app.subscriber_status().await, "confirmed");
    let id = subscriber_id(&app).await;

    // The admin: a failed sign-in with their address typed as the
    // username, then searches, an export of the list and of their record.
    create_admin(&app, "desk", PASSWORD).await;
    Browser::new(&app).log_in(ADDRESS, "not the password").await;
    let browser = Browser::signed_in(&app, "desk", PASSWORD).await;
    for search in [
        "/admin/subscribers?q=Zebulon.Quaxley%2BLetters%40Example.org",
        "/admin/subscribers?q=Quaxley&status=confirmed",
        "/admin/subscribers.csv?q=zebulon.quaxley",
        &format!("/admin/subscribers/{id}"),
        &format!("/admin/subscribers/{id}/export"),
    ] {
        let response = browser.get(search).await;
        assert_eq!(response.status(), StatusCode::OK, "{search}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains(ADDRESS),
            "{search} does not show them: {body}"
        );
    }

    // An issue, turned away once, then delivered; the provider's webhooks.
    let issue = publish(&app, "Winter notes", "Hello {{name}}.").await;
    wait_for_state(&app, issue, "done").await;
    let (seq, status, _) = deliveries(&app, issue).await.remove(0);
    assert_eq!(status, "sent");
    let delivery = format!("{issue}:{seq}");
    for record in [
        soft_bounce(7001, &delivery),
        complaint(7002, ADDRESS, Some(&delivery)),
    ] {
        assert_eq!(
            post_webhook(&app, &record).await.status(),
            StatusCode::OK,
            "{record}"
        );
    }

    // They leave through the link of the issue.
    let sent = app.sent_emails().await;
    let newsletter = sent
        .iter()
        .rev()
        .find(|m| m["MessageStream"] == app.settings.email_client.broadcast_stream.as_str())
        .unwrap();
    let link = header(newsletter, "List-Unsubscribe").unwrap();
    let link = reqwest::Url::parse(link.trim_matches(['<', '>'])).unwrap();
    let response = app
        .api_client
        .post(app.local(&link))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.subscriber_status().await, "unsubscribed");

    // This release kept none of what the provider said of them.
    let dump = pg_dump(&app).to_lowercase();
    for words in ["postponed", "is full", "mailbox full"] {
        assert!(
            !dump.contains(words),
            "the provider's words `{words}` were kept"
        );
    }

    what_the_previous_release_wrote(&app, id).await;
    let before = found_in(&pg_dump(&app));
    assert_eq!(
        before.len(),
        forms().len(),
        "the test must leave every form somewhere before the erasure: {before:#?}"
    );

    let response = browser.erase_subscriber(id, ADDRESS).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/subscribers?notice=erased");

    let after = found_in(&pg_dump(&app));
    assert!(after.is_empty(), "the dump still holds them: {after:#?}");

    // The keyed hash stays, and a new sign-up with the address is still
    // answered as usual and stores nothing, sends nothing.
    let entry: (Option<String>, String, Option<String>) =
        sqlx::query_as("SELECT email, reason, detail FROM suppressions WHERE address_hash = $1")
            .bind(keys(&app).address_hash(ADDRESS))
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(entry, (None, "spam_complaint".to_owned(), None));
    let emails_before = app.sent_emails().await.len();
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.subscriber_count().await, 0);
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(queued, 0, "nothing is queued for a suppressed address");
    assert_eq!(app.sent_emails().await.len(), emails_before);
}

#[tokio::test]
async fn an_erasure_leaves_other_subscribers_emails_and_audit_entries_as_they_were() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    assert_eq!(
        app.post_subscriptions(SIGN_UP).await.status(),
        StatusCode::OK
    );
    let other = "name=Adamant%20Byron&email=adamant%40example.com";
    assert_eq!(app.post_subscriptions(other).await.status(), StatusCode::OK);
    let id = subscriber_id(&app).await;
    create_admin(&app, "desk", PASSWORD).await;
    let browser = Browser::signed_in(&app, "desk", PASSWORD).await;
    let kept = "search \"adamant@example.com\", status \"\"";
    sqlx::query(
        "INSERT INTO audit_log (username, action, detail) \
         VALUES ('desk', 'subscribers-exported', $1)",
    )
    .bind(kept)
    .execute(&app.db_pool)
    .await
    .unwrap();

    let response = browser.erase_subscriber(id, ADDRESS).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let details: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_log ORDER BY id")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert!(details.iter().any(|d| d == kept), "{details:?}");
    assert_eq!(app.subscriber_count().await, 1);
    let outbox: Vec<String> = sqlx::query_scalar("SELECT recipient FROM email_outbox")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(outbox, ["adamant@example.com"]);
}
