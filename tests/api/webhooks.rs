//! `POST /webhooks/postmark`: bounces, spam complaints, subscription changes
//! and deliveries reported by Postmark, and the suppression list they feed,
//! which campaigns and the outbox obey.

use chrono::{DateTime, Duration as Span, Utc};
use newsletter::keys::Keys;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::campaigns::{add_subscribers, deliveries, progress_of, publish, wait_for_state};
use crate::helpers::{
    HeldEmailApi, TestApp, WEBHOOK_PASSWORD, WEBHOOK_USERNAME, eventually, spawn_app,
    spawn_app_with,
};
use crate::newsroom::{Browser, PASSWORD, create_admin};

pub async fn post_webhook(app: &TestApp, record: &Value) -> reqwest::Response {
    post_webhook_as(
        app,
        Some((WEBHOOK_USERNAME, WEBHOOK_PASSWORD)),
        record.to_string(),
    )
    .await
}

async fn post_webhook_as(
    app: &TestApp,
    credentials: Option<(&str, &str)>,
    body: String,
) -> reqwest::Response {
    let mut request = app
        .api_client
        .post(format!("{}/webhooks/postmark", app.address))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some((username, password)) = credentials {
        request = request.basic_auth(username, Some(password));
    }
    request.send().await.expect("Failed to post a webhook")
}

/// Posts a record and checks it was taken.
async fn deliver(app: &TestApp, record: &Value) {
    let response = post_webhook(app, record).await;
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{record}: {body}");
}

fn at(seconds_ago: i64) -> String {
    (Utc::now() - Span::seconds(seconds_ago)).to_rfc3339()
}

pub fn bounce(
    id: i64,
    type_name: &str,
    email: &str,
    inactive: bool,
    delivery: Option<&str>,
) -> Value {
    let metadata = match delivery {
        Some(delivery) => json!({ "delivery_id": delivery }),
        None => json!({}),
    };
    json!({
        "RecordType": "Bounce",
        "ID": id,
        "Type": type_name,
        "TypeCode": 1,
        "Name": type_name,
        "MessageID": Uuid::new_v4().to_string(),
        "ServerID": 23,
        "MessageStream": "broadcast",
        "Description": "The server was unable to deliver your message.",
        "Details": "smtp;550 5.1.1 The email account does not exist.",
        "Email": email,
        "From": "desk@newsletter.test",
        "BouncedAt": at(60),
        "DumpAvailable": false,
        "Inactive": inactive,
        "CanActivate": true,
        "Subject": "Issue one",
        "Metadata": metadata
    })
}

pub fn complaint(id: i64, email: &str, delivery: Option<&str>) -> Value {
    let mut record = bounce(id, "SpamComplaint", email, true, delivery);
    record["RecordType"] = json!("SpamComplaint");
    record["TypeCode"] = json!(512);
    record
}

fn subscription_change(email: &str, changed_at: &str, reason: Option<&str>) -> Value {
    json!({
        "RecordType": "SubscriptionChange",
        "MessageID": null,
        "ServerID": 123456,
        "MessageStream": "broadcast",
        "ChangedAt": changed_at,
        "Recipient": email,
        "Origin": "Recipient",
        "SuppressSending": reason.is_some(),
        "SuppressionReason": reason,
        "Tag": null,
        "Metadata": {}
    })
}

fn delivery(email: &str, delivered_at: &str) -> Value {
    json!({
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "broadcast",
        "MessageID": Uuid::new_v4().to_string(),
        "Recipient": email,
        "Tag": "",
        "DeliveredAt": delivered_at,
        "Details": "Test delivery webhook details",
        "Metadata": {}
    })
}

/// The address's entry on the suppression list: (reason, changed_at).
async fn suppression(app: &TestApp, email: &str) -> Option<(String, DateTime<Utc>)> {
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    sqlx::query_as("SELECT reason, changed_at FROM suppressions WHERE address_hash = $1")
        .bind(keys.address_hash(email))
        .fetch_optional(&app.db_pool)
        .await
        .unwrap()
}

async fn soft_bounces_in_a_row(app: &TestApp, email: &str) -> i32 {
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    sqlx::query_scalar("SELECT in_a_row FROM soft_bounces WHERE address_hash = $1")
        .bind(keys.address_hash(email))
        .fetch_optional(&app.db_pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

async fn webhook_records(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_records")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn subscriber_email(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// A delivery's status and reason.
async fn delivery_row(app: &TestApp, issue: Uuid, seq: i32) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, last_error FROM deliveries WHERE issue_id = $1 AND seq = $2")
        .bind(issue)
        .bind(seq)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// An issue sent to `n` confirmed subscribers: its id, and each email's
/// address and delivery id.
async fn sent_issue(app: &TestApp, n: i32) -> (Uuid, Vec<(String, String)>) {
    app.mock_email_api_ok().await;
    add_subscribers(app, n, "confirmed").await;
    let issue = publish(app, "Issue one", "Hello {{name}}.").await;
    wait_for_state(app, issue, "done").await;
    let sent = app
        .sent_emails()
        .await
        .iter()
        .map(|email| {
            (
                email["To"].as_str().unwrap().to_owned(),
                email["Metadata"]["delivery_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    (issue, sent)
}

fn seq_of(delivery_id: &str) -> i32 {
    delivery_id.rsplit_once(':').unwrap().1.parse().unwrap()
}

// ---------------------------------------------------------------------------
// Each record and its effect.

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_and_marks_its_delivery_bounced() {
    let app = spawn_app().await;
    let (issue, sent) = sent_issue(&app, 2).await;
    let (email, delivery_id) = &sent[0];

    deliver(
        &app,
        &bounce(1, "HardBounce", email, true, Some(delivery_id)),
    )
    .await;

    let (reason, _) = suppression(&app, email).await.expect("suppressed");
    assert_eq!(reason, "hard_bounce");
    let (status, why) = delivery_row(&app, issue, seq_of(delivery_id)).await;
    assert_eq!(status, "bounced");
    assert!(why.unwrap().starts_with("hard bounce: HardBounce"));
    let progress = progress_of(&app, issue).await;
    assert_eq!(
        (progress.summary.sent, progress.summary.bounced),
        (2, 1),
        "sent keeps counting what the API accepted"
    );
    assert!(suppression(&app, &sent[1].0).await.is_none());
}

#[tokio::test]
async fn a_complaint_suppresses_the_address_and_moves_a_bounced_delivery_and_both_counts() {
    let app = spawn_app().await;
    let (issue, sent) = sent_issue(&app, 1).await;
    let (email, delivery_id) = &sent[0];
    deliver(
        &app,
        &bounce(1, "HardBounce", email, true, Some(delivery_id)),
    )
    .await;

    deliver(&app, &complaint(2, email, Some(delivery_id))).await;

    // The complaint is the newer fact: it is the reason now.
    assert_eq!(suppression(&app, email).await.unwrap().0, "spam_complaint");
    let (status, _) = delivery_row(&app, issue, seq_of(delivery_id)).await;
    assert_eq!(status, "complained");
    let summary = progress_of(&app, issue).await.summary;
    assert_eq!((summary.bounced, summary.complained), (0, 1));

    // A bounce after the complaint changes neither.
    deliver(
        &app,
        &bounce(3, "HardBounce", email, true, Some(delivery_id)),
    )
    .await;
    let summary = progress_of(&app, issue).await.summary;
    assert_eq!((summary.bounced, summary.complained), (0, 1));
}

#[tokio::test]
async fn a_spam_complaint_alone_suppresses_for_spam() {
    let app = spawn_app().await;
    let (issue, sent) = sent_issue(&app, 1).await;
    let (email, delivery_id) = &sent[0];

    deliver(&app, &complaint(9, email, Some(delivery_id))).await;

    assert_eq!(suppression(&app, email).await.unwrap().0, "spam_complaint");
    assert_eq!(progress_of(&app, issue).await.summary.complained, 1);
}

#[tokio::test]
async fn the_issue_page_counts_bounces_and_complaints_and_lists_them_with_who_did_not_get_it() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let (issue, sent) = sent_issue(&app, 3).await;
    deliver(
        &app,
        &bounce(1, "HardBounce", &sent[0].0, true, Some(&sent[0].1)),
    )
    .await;
    deliver(&app, &complaint(2, &sent[1].0, Some(&sent[1].1))).await;

    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page = browser
        .get(&format!("/admin/newsletters/{issue}"))
        .await
        .text()
        .await
        .unwrap();

    assert!(page.contains(r#"<dd id="count-bounced">1</dd>"#), "{page}");
    assert!(
        page.contains(r#"<dd id="count-complained">1</dd>"#),
        "{page}"
    );
    let list = page.split("undelivered-list").nth(1).unwrap();
    assert!(
        list.contains(&sent[0].0) && list.contains("bounced"),
        "{list}"
    );
    assert!(
        list.contains(&sent[1].0) && list.contains("complained"),
        "{list}"
    );
    assert!(
        !list.contains(&sent[2].0),
        "the one who got it is not listed"
    );
}

#[tokio::test]
async fn subscription_changes_suppress_with_postmarks_reason_and_a_newer_reactivation_lifts() {
    let app = spawn_app().await;
    for (email, reason, ours) in [
        ("a@example.com", "HardBounce", "hard_bounce"),
        ("b@example.com", "SpamComplaint", "spam_complaint"),
        ("c@example.com", "ManualSuppression", "provider_unsubscribe"),
        // A reason Postmark adds later: it stopped sending all the same.
        (
            "d@example.com",
            "SomethingPostmarkAddsNextYear",
            "provider_unsubscribe",
        ),
    ] {
        deliver(&app, &subscription_change(email, &at(60), Some(reason))).await;
        assert_eq!(suppression(&app, email).await.unwrap().0, ours, "{reason}");
    }

    deliver(&app, &subscription_change("a@example.com", &at(30), None)).await;

    assert!(suppression(&app, "a@example.com").await.is_none());
    assert!(suppression(&app, "b@example.com").await.is_some());
}

#[tokio::test]
async fn a_reactivation_older_than_the_suppression_arriving_late_keeps_it() {
    let app = spawn_app().await;
    let email = "late@example.com";
    // Suppressed a minute ago; the reactivation from two minutes ago was
    // held up and arrives only now.
    deliver(
        &app,
        &subscription_change(email, &at(60), Some("HardBounce")),
    )
    .await;

    deliver(&app, &subscription_change(email, &at(120), None)).await;

    assert!(suppression(&app, email).await.is_some());
}

#[tokio::test]
async fn soft_bounces_in_a_row_suppress_at_the_limit_and_a_delivery_between_starts_again() {
    let app = spawn_app_with(|s| s.webhooks.soft_bounce_limit = 3).await;
    let email = "flaky@example.com";
    deliver(&app, &bounce(1, "SoftBounce", email, false, None)).await;
    deliver(&app, &bounce(2, "Transient", email, false, None)).await;
    assert_eq!(soft_bounces_in_a_row(&app, email).await, 2);

    deliver(&app, &delivery(email, &at(0))).await;
    assert_eq!(soft_bounces_in_a_row(&app, email).await, 0);
    deliver(&app, &bounce(3, "SoftBounce", email, false, None)).await;
    deliver(&app, &bounce(4, "DnsError", email, false, None)).await;
    assert!(suppression(&app, email).await.is_none(), "two in a row");

    deliver(&app, &bounce(5, "SoftBounce", email, false, None)).await;

    assert_eq!(suppression(&app, email).await.unwrap().0, "soft_bounce");
}

#[tokio::test]
async fn an_unsubscribe_reply_suppresses_the_address_even_while_postmark_keeps_it_active() {
    let app = spawn_app().await;
    let (issue, sent) = sent_issue(&app, 1).await;
    let (email, delivery_id) = &sent[0];

    deliver(
        &app,
        &bounce(1, "Unsubscribe", email, false, Some(delivery_id)),
    )
    .await;

    assert_eq!(
        suppression(&app, email).await.unwrap().0,
        "provider_unsubscribe"
    );
    let (status, _) = delivery_row(&app, issue, seq_of(delivery_id)).await;
    assert_eq!(status, "sent", "the email arrived: it is no bounce");
}

#[tokio::test]
async fn a_hard_bounce_before_the_send_was_recorded_marks_the_delivery_bounced_and_counts_it_once()
{
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 1;
    })
    .await;
    add_subscribers(&app, 2, "confirmed").await;
    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    // The email is with the API, whose answer is held: the ledger still
    // has it queued when Postmark reports the bounce.
    api.wait_for_requests(1).await;
    let delivery_id = api.requests()[0][0]["Metadata"]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seq = seq_of(&delivery_id);
    let email = seq_email(&app, issue, seq).await;
    assert_eq!(delivery_row(&app, issue, seq).await.0, "queued");

    deliver(
        &app,
        &bounce(1, "HardBounce", &email, true, Some(&delivery_id)),
    )
    .await;

    assert_eq!(delivery_row(&app, issue, seq).await.0, "bounced");
    let summary = progress_of(&app, issue).await.summary;
    assert_eq!(
        (summary.sent, summary.bounced),
        (1, 1),
        "sent and bounced each count it"
    );

    // The sender's answer arrives afterwards and changes nothing.
    api.release();
    let summary = wait_for_state(&app, issue, "done").await.summary;
    assert_eq!(delivery_row(&app, issue, seq).await.0, "bounced");
    assert_eq!(
        (summary.sent, summary.bounced, summary.failed),
        (2, 1, 0),
        "counted once"
    );
}

#[tokio::test]
async fn bounces_that_say_nothing_about_the_address_are_recorded_without_effect() {
    let app = spawn_app().await;
    for (id, type_name) in [
        (1, "AutoResponder"),
        (2, "AddressChange"),
        (3, "ChallengeVerification"),
    ] {
        deliver(
            &app,
            &bounce(id, type_name, "away@example.com", false, None),
        )
        .await;
    }

    assert_eq!(webhook_records(&app).await, 3);
    assert!(suppression(&app, "away@example.com").await.is_none());
    assert_eq!(soft_bounces_in_a_row(&app, "away@example.com").await, 0);
}

#[tokio::test]
async fn a_delivery_id_that_is_not_ours_is_ignored_and_the_address_still_suppressed() {
    let app = spawn_app().await;

    deliver(
        &app,
        &bounce(
            1,
            "HardBounce",
            "x@example.com",
            true,
            Some("someone else's"),
        ),
    )
    .await;

    assert!(suppression(&app, "x@example.com").await.is_some());
}

// ---------------------------------------------------------------------------
// Repeats, credentials and bad bodies.

#[tokio::test]
async fn the_same_record_twice_changes_nothing_the_second_time() {
    let app = spawn_app_with(|s| s.webhooks.soft_bounce_limit = 2).await;
    let email = "twice@example.com";
    let record = bounce(77, "SoftBounce", email, false, None);

    deliver(&app, &record).await;
    deliver(&app, &record).await;

    assert_eq!(soft_bounces_in_a_row(&app, email).await, 1, "counted once");
    assert!(suppression(&app, email).await.is_none());
    assert_eq!(webhook_records(&app).await, 1);

    // A record without an ID is recognised by its content.
    let change = subscription_change(email, &at(10), Some("HardBounce"));
    deliver(&app, &change).await;
    deliver(&app, &change).await;
    assert_eq!(webhook_records(&app).await, 2);
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused_with_401_and_nothing_is_recorded() {
    let app = spawn_app().await;
    let record = bounce(1, "HardBounce", "ada@example.com", true, None).to_string();
    for (credentials, case) in [
        (Some((WEBHOOK_USERNAME, "wrong password")), "wrong password"),
        (Some(("someone", WEBHOOK_PASSWORD)), "wrong username"),
        (None, "no credentials"),
    ] {
        let response = post_webhook_as(&app, credentials, record.clone()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{case}"
        );
    }

    assert_eq!(webhook_records(&app).await, 0);
    assert!(suppression(&app, "ada@example.com").await.is_none());
}

#[tokio::test]
async fn an_oversized_body_gets_401_without_credentials_and_413_with_them() {
    let app = spawn_app().await;
    let huge = format!(
        r#"{{"RecordType":"Bounce","Padding":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );

    let stranger = post_webhook_as(&app, None, huge.clone()).await;
    let postmark = post_webhook_as(&app, Some((WEBHOOK_USERNAME, WEBHOOK_PASSWORD)), huge).await;

    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(postmark.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(webhook_records(&app).await, 0);
}

#[tokio::test]
async fn without_configured_credentials_every_webhook_is_refused() {
    let app = spawn_app_with(|s| s.webhooks.postmark_password = None).await;

    let response = post_webhook(&app, &bounce(1, "HardBounce", "a@example.com", true, None)).await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(webhook_records(&app).await, 0);
}

#[tokio::test]
async fn a_garbage_body_or_an_unknown_record_type_is_refused_with_400_and_a_reason() {
    let app = spawn_app().await;
    for (body, says) in [
        ("this is not json".to_owned(), "not a Postmark webhook record"),
        ("".to_owned(), "not a Postmark webhook record"),
        (
            json!({"RecordType": "Open", "Recipient": "a@example.com"}).to_string(),
            "`Open`",
        ),
        (
            json!({"RecordType": "Bounce", "ID": 1, "Type": "HardBounce", "Email": "a@example.com"})
                .to_string(),
            "BouncedAt",
        ),
        (
            {
                let mut record = bounce(1, "HardBounce", "a@example.com", true, None);
                record["Email"] = json!("a\u{0}b@example.com");
                record.to_string()
            },
            "Email",
        ),
    ] {
        let response =
            post_webhook_as(&app, Some((WEBHOOK_USERNAME, WEBHOOK_PASSWORD)), body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let reason = response.text().await.unwrap();
        assert!(reason.contains(says), "{body}: {reason}");
    }
    assert_eq!(webhook_records(&app).await, 0);
}

// ---------------------------------------------------------------------------
// The complaint guard.

#[tokio::test]
async fn the_complaint_guard_pauses_a_sending_issue_only_once_its_sample_is_sent() {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 2;
        s.campaigns.complaint_min_sent = 4;
        s.campaigns.complaint_limit_percent = 10.0;
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    add_subscribers(&app, 6, "confirmed").await;
    let issue = publish(&app, "Too much", "Hello {{name}}.").await;

    // Two sent, one complaint: 50 %, but below the sample of 4.
    api.wait_for_requests(1).await;
    api.release_one();
    wait_for_sent(&app, issue, 2).await;
    let first = seq_email(&app, issue, 1).await;
    deliver(&app, &complaint(1, &first, Some(&format!("{issue}:1")))).await;
    assert_eq!(
        progress_of(&app, issue).await.summary.state().as_str(),
        "sending"
    );

    // Four sent, two complaints: 50 % of a full sample.
    api.wait_for_requests(2).await;
    api.release_one();
    wait_for_sent(&app, issue, 4).await;
    let third = seq_email(&app, issue, 3).await;
    deliver(&app, &complaint(2, &third, Some(&format!("{issue}:3")))).await;
    api.release();

    let progress = progress_of(&app, issue).await;
    assert_eq!(progress.summary.state().as_str(), "paused");
    let reason = progress.summary.paused_reason.clone().unwrap();
    assert!(
        reason.contains("2 spam complaints for 4 emails sent"),
        "{reason}"
    );

    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page = browser
        .get(&format!("/admin/newsletters/{issue}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Paused by the complaint guard"), "{page}");

    // Resuming is the admin's decision, and clears the reason.
    let response = browser
        .submit(&format!("/admin/newsletters/{issue}/resume"), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let summary = progress_of(&app, issue).await.summary;
    assert_eq!(summary.paused_reason, None);
    assert_ne!(summary.state().as_str(), "paused");
}

#[tokio::test]
async fn after_an_admin_resumes_the_complaint_guard_judges_only_what_was_sent_since() {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 2;
        s.campaigns.complaint_min_sent = 4;
        s.campaigns.complaint_limit_percent = 10.0;
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    add_subscribers(&app, 12, "confirmed").await;
    let issue = publish(&app, "Too much", "Hello {{name}}.").await;
    // Four sent, one complaint: 25 % of a full sample.
    api.wait_for_requests(1).await;
    api.release_one();
    api.wait_for_requests(2).await;
    api.release_one();
    wait_for_sent(&app, issue, 4).await;
    complain_about_a_sent_one(&app, issue, 1).await;
    assert_eq!(state_of(&app, issue).await, "paused");

    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let response = browser
        .submit(&format!("/admin/newsletters/{issue}/resume"), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // A late complaint about an email sent before the pause: 2 of 4 in
    // all, but nothing sent since the resume to judge it on.
    complain_about_a_sent_one(&app, issue, 2).await;
    assert_eq!(state_of(&app, issue).await, "sending");

    // Four more sent, and a second complaint since the resume: 2 of 4.
    api.release_one();
    api.release_one();
    wait_for_sent(&app, issue, 8).await;
    complain_about_a_sent_one(&app, issue, 3).await;
    api.release();

    let summary = progress_of(&app, issue).await.summary;
    assert_eq!(summary.state().as_str(), "paused");
    let reason = summary.paused_reason.unwrap();
    assert!(
        reason.contains("2 spam complaints for 4 emails sent"),
        "{reason}"
    );
}

async fn state_of(app: &TestApp, issue: Uuid) -> &'static str {
    progress_of(app, issue).await.summary.state().as_str()
}

/// Posts a complaint, with `record_id`, about the first delivery of the
/// issue that is sent and not complained about yet.
async fn complain_about_a_sent_one(app: &TestApp, issue: Uuid, record_id: i64) {
    let seq: i32 = sqlx::query_scalar(
        "SELECT seq FROM deliveries WHERE issue_id = $1 AND status = 'sent' ORDER BY seq LIMIT 1",
    )
    .bind(issue)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    let email = seq_email(app, issue, seq).await;
    deliver(
        app,
        &complaint(record_id, &email, Some(&format!("{issue}:{seq}"))),
    )
    .await;
}

async fn wait_for_sent(app: &TestApp, issue: Uuid, n: i64) {
    eventually(&format!("{n} sent"), || async {
        (progress_of(app, issue).await.summary.sent >= n).then_some(())
    })
    .await;
}

async fn seq_email(app: &TestApp, issue: Uuid, seq: i32) -> String {
    sqlx::query_scalar(
        "SELECT s.email FROM deliveries d JOIN subscriptions s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 AND d.seq = $2",
    )
    .bind(issue)
    .bind(seq)
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// Campaigns and the outbox obey the list.

#[tokio::test]
async fn a_suppressed_subscriber_is_skipped_with_the_reason_when_the_audience_is_recorded() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let ids = add_subscribers(&app, 3, "confirmed").await;
    // In another letter case than stored: addresses compare case-blind.
    let suppressed = subscriber_email(&app, ids[1]).await.to_uppercase();
    deliver(
        &app,
        &subscription_change(&suppressed, &at(10), Some("ManualSuppression")),
    )
    .await;

    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    let sent: Vec<String> = app
        .sent_emails()
        .await
        .iter()
        .map(|email| email["To"].as_str().unwrap().to_lowercase())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(!sent.contains(&suppressed.to_lowercase()), "{sent:?}");
    let s = &progress.summary;
    assert_eq!((s.recipients, s.sent, s.skipped), (3, 2, 1));
    let skipped: Vec<_> = deliveries(&app, issue)
        .await
        .into_iter()
        .filter(|(_, status, _)| status == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1);
    let (_, why) = delivery_row(&app, issue, skipped[0].0).await;
    assert_eq!(
        why.as_deref(),
        Some("suppressed: unsubscribed at the email provider")
    );
}

#[tokio::test]
async fn a_subscriber_suppressed_after_the_audience_was_recorded_is_skipped_before_sending() {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 1;
    })
    .await;
    add_subscribers(&app, 2, "confirmed").await;
    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    // The first batch is with the API: both are recorded by now.
    api.wait_for_requests(1).await;
    let second = seq_email(&app, issue, 2).await;

    deliver(&app, &bounce(1, "HardBounce", &second, true, None)).await;
    api.release();
    wait_for_state(&app, issue, "done").await;

    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_ne!(sent[0]["To"], json!(second));
    let (status, why) = delivery_row(&app, issue, 2).await;
    assert_eq!(status, "skipped");
    assert_eq!(why.as_deref(), Some("suppressed: hard bounce"));
}

#[tokio::test]
async fn a_sign_up_after_its_address_was_suppressed_queues_and_sends_nothing() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let email = "ursula_le_guin@gmail.com";
    let body = format!("name=le%20guin&email={}", email.replace('@', "%40"));
    assert_eq!(app.post_subscriptions(body.clone()).await.status(), 200);
    app.wait_for_emails(1).await;
    app.wait_for_outbox_to_settle().await;
    // The address is reported suppressed while its subscriber waits to
    // confirm; a second sign-up would otherwise send a new confirmation.
    deliver(
        &app,
        &subscription_change(email, &at(10), Some("SpamComplaint")),
    )
    .await;

    let answer = app.post_subscriptions(body).await;
    let outbox = app.wait_for_outbox_to_settle().await;

    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(outbox.len(), 1, "a second confirmation was queued");
    assert_eq!(app.sent_emails().await.len(), 1, "only the first went out");
}

#[tokio::test]
async fn an_email_queued_before_its_address_was_suppressed_is_failed_not_sent() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    let email = "queued@example.com";
    let signed_up = app
        .post_subscriptions("name=Reader&email=queued%40example.com")
        .await;
    assert_eq!(signed_up.status(), 200);
    // Queued, and nobody has sent it yet when the address is suppressed.
    assert_eq!(app.outbox().await[0].status, "pending");
    deliver(
        &app,
        &subscription_change(email, &at(10), Some("HardBounce")),
    )
    .await;

    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(outbox[0].status, "failed");
    assert_eq!(
        outbox[0].last_error.as_deref(),
        Some("suppressed: hard bounce")
    );
    assert!(app.sent_emails().await.is_empty());
}

#[tokio::test]
async fn an_address_another_entry_already_holds_is_suppressed_without_a_conflict() {
    let app = spawn_app().await;
    let ada = add_subscribers(&app, 1, "confirmed").await[0];
    let email = subscriber_email(&app, ada).await;
    // An entry made for another spelling of the address, which hashed apart.
    sqlx::query(
        "INSERT INTO suppressions (address_hash, email, reason, changed_at) \
         VALUES ('\\x00'::bytea, lower($1), 'hard_bounce', now() - interval '1 day')",
    )
    .bind(&email)
    .execute(&app.db_pool)
    .await
    .unwrap();

    deliver(&app, &complaint(7, &email, None)).await;

    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM suppressions")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(entries, 2);
}
