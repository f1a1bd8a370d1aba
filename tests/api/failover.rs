//! Both sources (the outbox, the campaign ledger) sending through both
//! providers (Postmark's stand-in, a real SMTP server), and what happens
//! when one of them, or both, are down.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use newsletter::configuration::{EmailBackend, Settings};
use uuid::Uuid;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::campaigns::{add_subscribers, publish, wait_for_state};
use crate::helpers::{TestApp, accept_every_message, eventually, spawn_app_with};
use crate::newsroom::{Browser, PASSWORD, create_admin};
use crate::smtp_server::{SmtpServer, SmtpServerOptions};

/// An address nothing listens on: connections to it are refused until a
/// test starts a server there.
fn refused_address() -> SocketAddr {
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    reserved.local_addr().unwrap()
}

/// Providers in this order; circuits open after two "down" failures and
/// are probed again after 300 ms.
fn providers(s: &mut Settings, order: &[EmailBackend]) {
    s.email_client.providers = order.to_vec();
    s.email_client.open_circuit_after_failures = 2;
    s.email_client.probe_after_milliseconds = 300;
}

fn body(n: usize) -> String {
    format!("name=reader%20{n}&email=reader{n}%40example.com")
}

/// Signs up `readers` and waits for every confirmation to be recorded sent.
async fn sign_up(app: &TestApp, readers: std::ops::Range<usize>) {
    for n in readers {
        let answer = app.post_subscriptions(body(n)).await;
        assert_eq!(answer.status().as_u16(), 200);
    }
}

/// Each outbox email's recipient, status and provider.
async fn outbox_providers(app: &TestApp) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT recipient, status, provider FROM email_outbox ORDER BY recipient")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

async fn wait_for_outbox_sent(
    app: &TestApp,
    emails: usize,
) -> Vec<(String, String, Option<String>)> {
    eventually(&format!("{emails} outbox emails to be sent"), || async {
        let rows = outbox_providers(app).await;
        (rows.len() == emails && rows.iter().all(|(_, status, _)| status == "sent")).then_some(rows)
    })
    .await
}

fn provider_of<'a>(rows: &'a [(String, String, Option<String>)], recipient: &str) -> &'a str {
    rows.iter()
        .find(|(to, _, _)| to == recipient)
        .and_then(|(_, _, provider)| provider.as_deref())
        .unwrap_or_else(|| panic!("no provider recorded for {recipient}: {rows:?}"))
}

/// Each of `readers`' confirmations went out through `provider`.
fn assert_sent_by(
    rows: &[(String, String, Option<String>)],
    readers: std::ops::Range<usize>,
    provider: &str,
) {
    for n in readers {
        assert_eq!(
            provider_of(rows, &format!("reader{n}@example.com")),
            provider
        );
    }
}

#[tokio::test]
async fn confirmations_and_issues_go_out_through_smtp_with_their_message_ids_recorded() {
    let smtp = SmtpServer::start(SmtpServerOptions::default()).await;
    let app = spawn_app_with(|s| {
        providers(s, &[EmailBackend::Smtp]);
        s.email_client.smtp = Some(smtp.app_settings());
    })
    .await;

    sign_up(&app, 0..1).await;
    let rows = wait_for_outbox_sent(&app, 1).await;
    assert_eq!(provider_of(&rows, "reader0@example.com"), "smtp");
    let confirmation = &smtp.wait_for_messages(1).await[0];
    assert_eq!(confirmation.rcpt_to, "reader0@example.com");
    assert!(confirmation.header("List-Unsubscribe").is_none());

    add_subscribers(&app, 3, "confirmed").await;
    let issue = publish(&app, "By SMTP", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;
    assert_eq!(progress.summary.sent, 3);
    create_admin(&app, "ada", PASSWORD).await;
    let page = Browser::signed_in(&app, "ada", PASSWORD)
        .await
        .get(&format!("/admin/newsletters/{issue}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<dd data-provider="smtp">3</dd>"#),
        "{page}"
    );
    let received = smtp.wait_for_messages(4).await;
    let deliveries: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT s.email, d.provider, d.message_id FROM deliveries d \
         JOIN subscriptions s ON s.id = d.subscriber_id WHERE d.issue_id = $1",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(deliveries.len(), 3);
    for (email, provider, message_id) in deliveries {
        assert_eq!(provider.as_deref(), Some("smtp"), "{email}");
        let message = received
            .iter()
            .find(|m| m.rcpt_to == email)
            .unwrap_or_else(|| panic!("{email} got nothing"));
        assert_eq!(
            message.header("Message-ID"),
            message_id.as_deref(),
            "{email}"
        );
        assert!(message.header("List-Unsubscribe").is_some(), "{email}");
        assert_eq!(
            message.header("List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
    }
}

#[tokio::test]
async fn while_postmark_refuses_connections_smtp_carries_on_and_sending_returns_once_it_listens() {
    let smtp = SmtpServer::start(SmtpServerOptions::default()).await;
    let postmark = refused_address();
    let app = spawn_app_with(|s| {
        providers(s, &[EmailBackend::Postmark, EmailBackend::Smtp]);
        s.email_client.base_url = format!("http://{postmark}");
        s.email_client.smtp = Some(smtp.app_settings());
    })
    .await;

    sign_up(&app, 0..3).await;
    let rows = wait_for_outbox_sent(&app, 3).await;
    assert_sent_by(&rows, 0..3, "smtp");
    assert_eq!(smtp.wait_for_messages(3).await.len(), 3);

    let back = MockServer::builder()
        .listener(TcpListener::bind(postmark).unwrap())
        .start()
        .await;
    Mock::given(any())
        .respond_with(accept_every_message)
        .mount(&back)
        .await;
    // Once a probe finds it listening, Postmark takes over again.
    let readers = std::sync::atomic::AtomicUsize::new(3);
    eventually("a confirmation to go through Postmark again", || {
        let reader = readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let app = &app;
        async move {
            sign_up(app, reader..reader + 1).await;
            let rows = wait_for_outbox_sent(app, reader + 1).await;
            (provider_of(&rows, &format!("reader{reader}@example.com")) == "postmark").then_some(())
        }
    })
    .await;
    assert!(!back.received_requests().await.unwrap().is_empty());
}

/// Postmark answers `answer` to every call; SMTP takes the emails, each
/// with `attempts`.
async fn postmark_failing_with(answer: ResponseTemplate, attempts: i32) {
    let smtp = SmtpServer::start(SmtpServerOptions::default()).await;
    let app = spawn_app_with(|s| {
        providers(s, &[EmailBackend::Postmark, EmailBackend::Smtp]);
        s.email_client.smtp = Some(smtp.app_settings());
        s.delivery.sending.max_attempts = attempts;
    })
    .await;
    Mock::given(any())
        .respond_with(answer)
        .mount(&app.email_server)
        .await;

    sign_up(&app, 0..2).await;

    let rows = wait_for_outbox_sent(&app, 2).await;
    assert_sent_by(&rows, 0..2, "smtp");
    assert_eq!(smtp.wait_for_messages(2).await.len(), 2);
}

#[tokio::test]
async fn postmark_answering_500_fails_over_to_smtp_in_the_same_call() {
    // One attempt each: the call that found Postmark down went on to SMTP
    // and took no second attempt.
    postmark_failing_with(ResponseTemplate::new(500), 1).await;
}

#[tokio::test]
async fn postmark_hanging_past_its_timeout_fails_over_to_smtp() {
    // Longer than the client's timeout (2 s in the tests). A batch whose
    // claim has no time left for a second call after the timeout goes to
    // SMTP on its next attempt.
    let hanging = ResponseTemplate::new(200).set_delay(Duration::from_secs(30));
    postmark_failing_with(hanging, 2).await;
}

#[tokio::test]
async fn while_smtp_is_down_postmark_carries_on() {
    let dead = refused_address();
    let app = spawn_app_with(|s| {
        providers(s, &[EmailBackend::Smtp, EmailBackend::Postmark]);
        s.email_client.smtp = Some(crate::smtp_server::plain_settings(dead.port()));
    })
    .await;
    app.mock_email_api_ok().await;

    sign_up(&app, 0..2).await;

    let rows = wait_for_outbox_sent(&app, 2).await;
    assert_sent_by(&rows, 0..2, "postmark");
    assert_eq!(app.sent_emails().await.len(), 2);
}

#[tokio::test]
async fn with_both_providers_down_nothing_is_lost_and_sending_resumes_when_one_is_back() {
    let (postmark, smtp) = (refused_address(), refused_address());
    let app = spawn_app_with(|s| {
        providers(s, &[EmailBackend::Postmark, EmailBackend::Smtp]);
        s.email_client.base_url = format!("http://{postmark}");
        s.email_client.smtp = Some(crate::smtp_server::plain_settings(smtp.port()));
        // One more than the failures that open a circuit, and far fewer
        // than the calls the outage takes.
        s.delivery.sending.max_attempts = 3;
        s.campaigns.sending.max_attempts = 3;
    })
    .await;
    sign_up(&app, 0..3).await;
    add_subscribers(&app, 5, "confirmed").await;
    let issue = publish(&app, "Through an outage", "Hello {{name}}.").await;
    // Both circuits open, and the emails keep waiting.
    eventually("both circuits to open", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM email_outbox WHERE status = 'pending' AND last_error IS NOT NULL",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (waiting == 3).then_some(())
    })
    .await;
    wait_calls_go_unanswered(&app).await;

    let back = MockServer::builder()
        .listener(TcpListener::bind(postmark).unwrap())
        .start()
        .await;
    Mock::given(any())
        .respond_with(accept_every_message)
        .mount(&back)
        .await;

    let rows = wait_for_outbox_sent(&app, 3).await;
    assert!(
        rows.iter()
            .all(|(_, _, p)| p.as_deref() == Some("postmark")),
        "{rows:?}"
    );
    let progress = wait_for_state(&app, issue, "done").await;
    assert_eq!((progress.summary.sent, progress.summary.failed), (5, 0));
    assert_no_failures(&app, issue).await;
}

/// Lets the outage outlast the emails' attempts: while every circuit is
/// open the calls wait for the probes without counting attempts. Waits
/// until Postmark has failed more calls than an email has attempts, then
/// checks that none failed.
async fn wait_calls_go_unanswered(app: &TestApp) {
    eventually(
        "Postmark to fail more calls than an email has attempts",
        || async {
            let text = app
                .api_client
                .get(format!("{}/metrics", app.metrics_address))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let down = text
                .lines()
                .find(|line| {
                    line.starts_with("newsletter_provider_failures_total{")
                        && line.contains("provider=\"postmark\"")
                        && line.contains("class=\"down\"")
                })
                .and_then(|line| line.rsplit(' ').next())
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0);
            (down >= 5.0).then_some(())
        },
    )
    .await;
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE status = 'failed'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(failed, 0, "an email failed during the outage");
}

async fn assert_no_failures(app: &TestApp, issue: Uuid) {
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deliveries WHERE issue_id = $1 AND status <> 'sent'",
    )
    .bind(issue)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(failed, 0);
}
