//! Outgoing webhooks: an admin registers an endpoint, and the events it
//! asked for reach it signed (Standard Webhooks), at least once, retried
//! while it fails, never towards an address it must not reach, and a
//! killed worker loses none of them.

use std::collections::HashSet;
use std::time::Duration;

use newsletter::db::Db;
use newsletter::delivery::engine::{Source, Turn};
use newsletter::keys::Keys;
use newsletter::metrics::Metrics;
use newsletter::outgoing_webhooks::endpoints::{self, NewEndpoint};
use newsletter::outgoing_webhooks::events::{self, Event, EventType};
use newsletter::outgoing_webhooks::signing::{self, Secret};
use newsletter::outgoing_webhooks::source::WebhookSource;
use newsletter::outgoing_webhooks::{control, deliveries};
use newsletter::subscribers::record;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::campaigns::{add_subscribers, publish, wait_for_state};
use crate::helpers::{
    TestApp, accept_every_message, eventually, eventually_within, spawn_app, spawn_app_with,
};
use crate::newsroom::{Browser, PASSWORD, create_admin};
use crate::webhooks::{bounce, complaint, post_webhook};

pub const HOOK: &str = "/hook";

/// A receiver that takes every call.
pub async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// Registers an endpoint through the store, as the admin's form does;
/// returns its id and secret.
pub async fn register(app: &TestApp, url: &str, events: &[EventType]) -> (Uuid, Secret) {
    let secret = Secret::generate();
    let text = secret.expose();
    let mut conn = app.db_pool.acquire().await.unwrap();
    let endpoint = endpoints::create(
        &mut conn,
        &NewEndpoint {
            url,
            description: "",
            events,
            secret: &text,
            created_by: "tests",
        },
    )
    .await
    .unwrap();
    (endpoint.id, secret)
}

/// Emits subscriber `events` in a transaction of their own, as the
/// subscriber store would.
pub async fn emit(app: &TestApp, events: &[Event]) {
    let mut transaction = app.db_pool.begin().await.unwrap();
    events::emit(&mut transaction, events, record::event_data)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The signature headers of a call.
fn signed_by(request: &Request) -> signing::Headers<'_> {
    signing::Headers {
        id: header(request, "webhook-id"),
        timestamp: header(request, "webhook-timestamp"),
        signature: header(request, "webhook-signature"),
    }
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The calls `server` received, once there are at least `n`.
async fn calls(server: &MockServer, n: usize) -> Vec<Request> {
    eventually_within(
        Duration::from_secs(15),
        &format!("{n} webhook calls"),
        || async {
            let received = server.received_requests().await.unwrap_or_default();
            (received.len() >= n).then_some(received)
        },
    )
    .await
}

/// (status, attempts, last code, last error) of the endpoint's deliveries.
async fn deliveries(
    app: &TestApp,
    endpoint: Uuid,
) -> Vec<(String, i32, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "SELECT status, attempts, last_code, last_error FROM webhook_deliveries \
         WHERE endpoint_id = $1 ORDER BY created_at",
    )
    .bind(endpoint)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// The secret shown once on the page that answers the form.
fn shown_secret(page: &str) -> String {
    let marker = r#"<code id="webhook-secret">"#;
    let start = page.find(marker).expect("the secret is shown") + marker.len();
    let end = page[start..].find("</code>").unwrap();
    page[start..start + end].to_owned()
}

#[tokio::test]
async fn a_confirmed_sign_up_reaches_the_endpoint_signed_with_the_secret_shown_once() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let receiver = receiver().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let url = format!("{}{HOOK}", receiver.uri());
    let answer = browser
        .submit(
            "/admin/webhooks",
            &[
                ("url", &url),
                ("description", "CRM"),
                ("events", "subscriber.confirmed"),
            ],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let secret = Secret::parse(&shown_secret(&answer.text().await.unwrap())).unwrap();
    let list = browser.get("/admin/webhooks").await.text().await.unwrap();
    assert!(
        !list.contains(&secret.expose()),
        "the secret is shown again"
    );

    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    let email = &app.wait_for_emails(1).await[0];
    let links = app.confirmation_links(email);
    assert_eq!(app.click(&links.html).await.status(), StatusCode::OK);

    let received = calls(&receiver, 1).await;
    let call = &received[0];
    signing::verify(
        &secret,
        &signed_by(call),
        &call.body,
        chrono::Utc::now().timestamp(),
        Duration::from_secs(300),
    )
    .expect("the signature verifies with the endpoint's secret");
    let body = body(call);
    assert_eq!(body["type"], "subscriber.confirmed");
    assert_eq!(body["data"]["email"], "ada@example.com");
    assert_eq!(body["data"]["status"], "confirmed");
    assert!(body["timestamp"].is_string());
    // Tampered, it does not verify.
    let mut tampered = call.body.clone();
    tampered[0] = b' ';
    assert!(
        signing::verify(
            &secret,
            &signed_by(call),
            &tampered,
            chrono::Utc::now().timestamp(),
            Duration::from_secs(300),
        )
        .is_err()
    );
}

#[tokio::test]
async fn the_form_refuses_a_private_url_and_an_unknown_event_with_the_reason() {
    let app = spawn_app_with(|s| s.outgoing_webhooks.allow_private_addresses = false).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    for (case, url, event, error) in [
        (
            "loopback",
            "http://127.0.0.1/hook",
            "issue.published",
            "url-error",
        ),
        (
            "metadata",
            "http://169.254.169.254/",
            "issue.published",
            "url-error",
        ),
        ("not a URL", "hook", "issue.published", "url-error"),
        (
            "unknown event",
            "https://hooks.example.com/",
            "issue.deleted",
            "events-error",
        ),
    ] {
        let answer = browser
            .submit("/admin/webhooks", &[("url", url), ("events", event)])
            .await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        let page = answer.text().await.unwrap();
        assert!(page.contains(&format!(r#"id="{error}""#)), "{case}: {page}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_receiver_that_fails_then_recovers_gets_the_event_under_one_webhook_id() {
    let app = spawn_app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberCreated]).await;
    let subscriber = add_subscribers(&app, 1, "pending_confirmation").await[0];

    emit(&app, &[Event::subscriber_created(subscriber)]).await;

    let received = calls(&receiver, 3).await;
    let ids: HashSet<&str> = received.iter().map(|r| header(r, "webhook-id")).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the event's id");
    eventually("the delivery to be recorded as delivered", || async {
        let rows = deliveries(&app, endpoint).await;
        (rows[0].0 == "delivered").then_some(())
    })
    .await;
    let rows = deliveries(&app, endpoint).await;
    assert_eq!(rows[0].1, 3, "three attempts counted");
}

#[tokio::test]
async fn every_event_is_sent_from_where_it_happens() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    register(&app, &url, &EventType::ALL).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    // Created, then confirmed.
    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    let email = &app.wait_for_emails(1).await[0];
    app.click(&app.confirmation_links(email).html).await;
    let ada: Uuid =
        sqlx::query_scalar("SELECT id FROM subscriptions WHERE email = 'ada@example.com'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    // Bounced and complained about, through Postmark's webhook.
    let bob = add_subscribers(&app, 1, "confirmed").await[0];
    let bob_address: String = sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(bob)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    post_webhook(&app, &bounce(1, "HardBounce", &bob_address, true, None)).await;
    post_webhook(&app, &complaint(2, &bob_address, None)).await;
    // Unsubscribed, with one click.
    let token = Keys::derive(&app.settings.application.hmac_secret)
        .unwrap()
        .unsubscribe_token(ada)
        .to_string();
    app.api_client
        .post(format!("{}/unsubscribe/{token}", app.address))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    // An issue, published and sent to the one confirmed reader left.
    let issue = publish(&app, "Hooks", "Hello.").await;
    wait_for_state(&app, issue, "done").await;
    // Erased.
    assert_eq!(
        browser
            .erase_subscriber(ada, "ada@example.com")
            .await
            .status(),
        StatusCode::SEE_OTHER
    );

    let expected: HashSet<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
    let received = eventually_within(Duration::from_secs(15), "every event type", || async {
        let received = receiver.received_requests().await.unwrap_or_default();
        let types: HashSet<String> = received
            .iter()
            .map(|r| body(r)["type"].as_str().unwrap().to_owned())
            .collect();
        expected
            .iter()
            .all(|e| types.contains(*e))
            .then_some(received)
    })
    .await;
    let of = |kind: &str| -> Vec<Value> {
        received
            .iter()
            .map(body)
            .filter(|b| b["type"] == kind)
            .collect()
    };
    let erased = &of("subscriber.erased")[0];
    assert_eq!(
        erased["data"],
        serde_json::json!({ "id": ada }),
        "the id alone"
    );
    assert_eq!(of("subscriber.bounced")[0]["data"]["id"], bob.to_string());
    assert_eq!(of("subscriber.bounced")[0]["data"]["bounce"], "hard");
    assert_eq!(
        of("subscriber.complained")[0]["data"]["id"],
        bob.to_string()
    );
    assert_eq!(of("issue.published")[0]["data"]["title"], "Hooks");
    assert_eq!(of("issue.finished")[0]["data"]["id"], issue.to_string());
    // The erasure took the address out of what was kept of the others.
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE payload::text LIKE '%ada@example.com%'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(kept, 0, "a payload kept the erased address");
}

#[tokio::test]
async fn calls_towards_loopback_private_and_metadata_addresses_are_refused_and_recorded() {
    let app = spawn_app_with(|s| s.outgoing_webhooks.allow_private_addresses = false).await;
    let receiver = receiver().await;
    let port = receiver.address().port();
    let mut registered = Vec::new();
    for (case, url) in [
        ("127.0.0.1", format!("http://127.0.0.1:{port}{HOOK}")),
        ("[::1]", format!("http://[::1]:{port}{HOOK}")),
        ("10.0.0.0/8", "http://10.1.2.3/hook".to_owned()),
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        (
            "a name for loopback",
            format!("http://localhost:{port}{HOOK}"),
        ),
    ] {
        // Stored as an older release or a direct insert might have: the
        // check at call time is what counts.
        let (id, _) = register(&app, &url, &[EventType::IssuePublished]).await;
        registered.push((case, id));
    }
    publish(&app, "Nowhere", "Hello.").await;

    for (case, endpoint) in registered {
        let rows = eventually(&format!("{case}: a refused attempt"), || async {
            let rows = deliveries(&app, endpoint).await;
            (rows.len() == 1 && rows[0].3.is_some()).then_some(rows)
        })
        .await;
        assert_ne!(rows[0].0, "delivered", "{case}");
        assert_eq!(rows[0].2, None, "{case}: no answer came");
    }
    assert!(
        receiver.received_requests().await.unwrap().is_empty(),
        "a refused call reached the receiver"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let app = spawn_app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("Location", "http://169.254.169.254/"),
        )
        .mount(&receiver)
        .await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::IssuePublished]).await;

    publish(&app, "Redirected", "Hello.").await;

    let rows = eventually("a failed attempt", || async {
        let rows = deliveries(&app, endpoint).await;
        (rows.len() == 1 && rows[0].2.is_some()).then_some(rows)
    })
    .await;
    assert_eq!(rows[0].2, Some(302));
    assert_ne!(rows[0].0, "delivered");
}

#[tokio::test]
async fn an_endpoint_failing_past_its_time_is_disabled_with_a_notice_and_its_delivery_can_go_again()
{
    let app = spawn_app_with(|s| {
        s.outgoing_webhooks.disable_after_hours = 0.0;
        // One attempt: the delivery is given up at once.
        s.outgoing_webhooks.retry_delays_seconds = vec![];
    })
    .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::IssuePublished]).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    publish(&app, "Failing", "Hello.").await;

    eventually("the endpoint to be disabled", || async {
        let enabled: bool =
            sqlx::query_scalar("SELECT enabled FROM webhook_endpoints WHERE id = $1")
                .bind(endpoint)
                .fetch_one(&app.db_pool)
                .await
                .unwrap();
        (!enabled).then_some(())
    })
    .await;
    let rows = deliveries(&app, endpoint).await;
    assert_eq!(rows[0].0, "failed");
    assert_eq!(rows[0].2, Some(503));
    let dashboard = browser.get("/admin/dashboard").await.text().await.unwrap();
    assert!(
        dashboard.contains(r#"id="disabled-webhooks""#),
        "{dashboard}"
    );
    assert!(
        dashboard.contains(&format!("/admin/webhooks/{endpoint}")),
        "{dashboard}"
    );

    let enabled = browser
        .submit(&format!("/admin/webhooks/{endpoint}/enable"), &[])
        .await;
    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    let page = browser
        .get(&format!("/admin/webhooks/{endpoint}"))
        .await
        .text()
        .await
        .unwrap();
    let delivery: Uuid =
        sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(page.contains(&format!("delivery-{delivery}")), "{page}");
    let retried = browser
        .submit(
            &format!("/admin/webhooks/{endpoint}/deliveries/{delivery}/retry"),
            &[],
        )
        .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);

    eventually("the delivery to go again and arrive", || async {
        let rows = deliveries(&app, endpoint).await;
        (rows[0].0 == "delivered").then_some(())
    })
    .await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 2);
    let dashboard = browser.get("/admin/dashboard").await.text().await.unwrap();
    assert!(!dashboard.contains(r#"id="disabled-webhooks""#));
    let actions = crate::newsroom::audit_actions(&app).await;
    assert!(
        actions.iter().any(|a| a == "webhook-delivery-retried"),
        "{actions:?}"
    );
}

/// `newsletter worker`, sending webhooks to local receivers, its output
/// discarded; killed on drop.
struct Worker(std::process::Child);

impl Worker {
    fn start(app: &TestApp) -> Self {
        let mut command = app.newsletter_command(&app.email_server.uri());
        command
            .arg("worker")
            .env("APP_OUTGOING_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true")
            .env("APP_OUTGOING_WEBHOOKS__WORKERS", "2")
            .env("APP_OUTGOING_WEBHOOKS__BATCH_SIZE", "5")
            .env("APP_OUTGOING_WEBHOOKS__CLAIM_TIMEOUT_SECONDS", "3")
            .env("APP_OUTGOING_WEBHOOKS__TIMEOUT_MILLISECONDS", "1000")
            .env("APP_OUTGOING_WEBHOOKS__POLL_INTERVAL_MILLISECONDS", "200")
            .env(
                "APP_OUTGOING_WEBHOOKS__RETRY_DELAYS_SECONDS",
                "0.2,0.2,0.2,0.2,0.2",
            )
            .env("APP_RETENTION__ENABLED", "false");
        Self(
            command
                .spawn()
                .expect("Failed to start `newsletter worker`"),
        )
    }

    /// SIGKILL: the process ends wherever it is, recording nothing.
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_killed_with_webhook_calls_in_flight_leaves_no_event_undelivered() {
    // Only the worker processes send.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    Mock::given(method("POST"))
        .respond_with(accept_every_message)
        .mount(&app.email_server)
        .await;
    // Slow answers, so that calls are in flight when the kill comes.
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(150)))
        .mount(&receiver)
        .await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberCreated]).await;
    let subscribers = add_subscribers(&app, 60, "pending_confirmation").await;
    let created: Vec<Event> = subscribers
        .iter()
        .copied()
        .map(Event::subscriber_created)
        .collect();
    emit(&app, &created).await;
    let event_ids: HashSet<Uuid> =
        sqlx::query_scalar("SELECT event_id FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_all(&app.db_pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(event_ids.len(), 60);

    let mut first = Worker::start(&app);
    eventually_within(
        Duration::from_secs(20),
        "some calls to be answered and some to be in flight",
        || async {
            let (delivered, leased): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE status = 'delivered'), \
                        count(*) FILTER (WHERE status = 'pending' AND leased_until > now()) \
                 FROM webhook_deliveries",
            )
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
            (delivered >= 5 && leased >= 1).then_some(())
        },
    )
    .await;
    first.kill();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(left > 0, "every call was made before the kill");

    let _second = Worker::start(&app);
    let received = eventually_within(
        Duration::from_secs(30),
        "every event at the receiver",
        || async {
            let received = receiver.received_requests().await.unwrap_or_default();
            let ids: HashSet<Uuid> = received
                .iter()
                .map(|r| header(r, "webhook-id").parse().unwrap())
                .collect();
            (ids == event_ids).then_some(received)
        },
    )
    .await;
    assert!(received.len() >= 60);
    eventually("every delivery recorded as delivered", || async {
        let rows = deliveries(&app, endpoint).await;
        rows.iter().all(|r| r.0 == "delivered").then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_an_admin_disabled_shows_its_waiting_deliveries_until_enabled_again() {
    // No workers: what is queued stays pending while the admin acts.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::IssuePublished]).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    publish(&app, "Waiting", "Hello.").await;
    let rows = deliveries(&app, endpoint).await;
    assert_eq!(rows[0].0, "pending");

    let disabled = browser
        .submit(&format!("/admin/webhooks/{endpoint}/disable"), &[])
        .await;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    let page = browser.get(&format!("/admin/webhooks/{endpoint}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("when the endpoint is enabled again"),
        "{page}"
    );

    let enabled = browser
        .submit(&format!("/admin/webhooks/{endpoint}/enable"), &[])
        .await;
    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    let page = browser
        .get(&format!("/admin/webhooks/{endpoint}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("when the endpoint is enabled again"),
        "{page}"
    );
}

#[tokio::test]
async fn pressing_the_one_click_unsubscribe_again_tells_the_endpoints_once() {
    // No workers: the queued deliveries are counted as they are.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberUnsubscribed]).await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let token = Keys::derive(&app.settings.application.hmac_secret)
        .unwrap()
        .unsubscribe_token(reader)
        .to_string();
    for _ in 0..3 {
        let answer = app
            .api_client
            .post(format!("{}/unsubscribe/{token}", app.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    assert_eq!(deliveries(&app, endpoint).await.len(), 1);
}

#[tokio::test]
async fn the_endpoint_page_changes_its_events_and_description_with_the_form_rules() {
    let app = spawn_app().await;
    let (endpoint, _) = register(
        &app,
        "https://hooks.example.com/",
        &[EventType::IssuePublished],
    )
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page_path = format!("/admin/webhooks/{endpoint}");
    let page = browser.get(&page_path).await.text().await.unwrap();
    assert!(page.contains(r#"id="change-webhook""#), "{page}");
    let stored = async || -> (String, Vec<String>) {
        sqlx::query_as("SELECT description, events FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_one(&app.db_pool)
            .await
            .unwrap()
    };

    for (case, fields, error) in [
        (
            "unknown event",
            vec![("description", "CRM"), ("events", "issue.deleted")],
            "events-error",
        ),
        ("no event", vec![("description", "CRM")], "events-error"),
        (
            "a bidi override",
            vec![
                ("description", "CRM\u{202E}"),
                ("events", "subscriber.created"),
            ],
            "description-error",
        ),
    ] {
        let answer = browser.submit(&page_path, &fields).await;
        assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        let page = answer.text().await.unwrap();
        assert!(page.contains(&format!(r#"id="{error}""#)), "{case}: {page}");
        assert_eq!(
            stored().await,
            (String::new(), vec!["issue.published".to_owned()]),
            "{case}"
        );
    }

    let answer = browser
        .submit(
            &page_path,
            &[
                ("description", "CRM"),
                ("events", "subscriber.confirmed"),
                ("events", "subscriber.erased"),
            ],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        crate::newsroom::location(&answer),
        format!("{page_path}?notice=updated")
    );
    assert_eq!(
        stored().await,
        (
            "CRM".to_owned(),
            vec![
                "subscriber.confirmed".to_owned(),
                "subscriber.erased".to_owned()
            ]
        )
    );
    let page = browser
        .get(&format!("{page_path}?notice=updated"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"id="webhook-notice""#), "{page}");
    assert!(
        page.contains(r#"value="subscriber.erased" checked"#),
        "the form shows the events as they are now: {page}"
    );
    let actions = crate::newsroom::audit_actions(&app).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "webhook-endpoint-updated")
            .count(),
        1,
        "{actions:?}"
    );
    let unknown = browser
        .submit(
            &format!("/admin/webhooks/{}", Uuid::new_v4()),
            &[("events", "issue.published")],
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_delivered_call_records_the_status_the_endpoint_answered() {
    let app = spawn_app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&receiver)
        .await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberCreated]).await;
    let subscriber = add_subscribers(&app, 1, "pending_confirmation").await[0];

    emit(&app, &[Event::subscriber_created(subscriber)]).await;

    let rows = eventually("the delivery to be recorded as delivered", || async {
        let rows = deliveries(&app, endpoint).await;
        rows.first()
            .is_some_and(|row| row.0 == "delivered")
            .then_some(rows)
    })
    .await;
    assert_eq!(rows[0].2, Some(202), "the endpoint's status is kept");
    assert_eq!(rows[0].3, None);
}

/// The payload queued for `endpoint`, as the workers would send it.
async fn queued_payloads(app: &TestApp, endpoint: Uuid) -> Vec<Value> {
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT payload::text FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at",
    )
    .bind(endpoint)
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    texts
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect()
}

#[tokio::test]
async fn a_sign_up_from_the_form_tells_the_endpoints_the_lists_it_joined() {
    // No workers: the queued payload is read as it would be sent.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberCreated]).await;

    let answer = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    assert_eq!(answer.status(), StatusCode::OK);

    let payloads = queued_payloads(&app, endpoint).await;
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    let lists = payloads[0]["data"]["lists"]
        .as_array()
        .expect("the event lists the lists");
    assert_eq!(lists.len(), 1, "the default list: {}", payloads[0]);
    assert_eq!(lists[0]["status"], "pending");
}

/// A webhook source over the app's database, as a worker process builds
/// it, for a test to claim from by hand.
fn source_of(app: &TestApp) -> WebhookSource {
    WebhookSource::new(
        Db::connect_lazy(&app.settings.database, 2),
        app.settings.outgoing_webhooks.clone(),
        Metrics::default(),
    )
}

/// (attempts, held by a claim now, seconds from the last attempt to the
/// next) of the only delivery.
async fn the_attempts(app: &TestApp) -> (i32, bool, f64) {
    sqlx::query_as(
        "SELECT attempts, COALESCE(leased_until > now(), false), \
                EXTRACT(EPOCH FROM next_attempt_at - last_attempt_at)::float8 \
         FROM webhook_deliveries",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

/// One delivery of `subscriber.created`, queued and not yet claimed.
async fn one_queued_delivery(app: &TestApp) -> MockServer {
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    register(app, &url, &[EventType::SubscriberCreated]).await;
    let subscriber = add_subscribers(app, 1, "pending_confirmation").await[0];
    emit(app, &[Event::subscriber_created(subscriber)]).await;
    receiver
}

#[tokio::test]
async fn a_claimed_call_that_was_never_made_does_not_count_as_an_attempt() {
    // No workers: the test claims by hand.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = one_queued_delivery(&app).await;
    let source = source_of(&app);
    let Ok(Turn::Batch(batch)) = source.claim(&CancellationToken::new()).await else {
        panic!("the delivery was not claimed");
    };
    assert_eq!(the_attempts(&app).await.0, 1, "claimed, the attempt counts");

    // The batch ran out of claim time before this call started.
    let not_called = batch
        .messages
        .into_iter()
        .map(|(key, _)| (key, None))
        .collect();
    source.record((), not_called).await;

    let (attempts, held, _) = the_attempts(&app).await;
    assert_eq!(attempts, 0, "no call, no attempt");
    assert!(!held, "handed back, not left to lapse");
    let due: bool = sqlx::query_scalar("SELECT next_attempt_at <= now() FROM webhook_deliveries")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert!(due, "due again at once");
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_call_whose_worker_died_counts_and_waits_out_the_backoff_of_a_failed_one() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.outgoing_webhooks.retry_delays_seconds = vec![600.0, 3600.0];
    })
    .await;
    one_queued_delivery(&app).await;
    let source = source_of(&app);
    let Ok(Turn::Batch(batch)) = source.claim(&CancellationToken::new()).await else {
        panic!("the delivery was not claimed");
    };

    // The worker dies mid-call: nothing is recorded or handed back.
    drop(batch);

    let (attempts, _, wait) = the_attempts(&app).await;
    assert_eq!(attempts, 1, "the call may have reached the receiver");
    assert!(
        (599.0..=601.0).contains(&wait),
        "due again after the first failure's wait, not when the 5 s lease ends: {wait} s"
    );
}

#[tokio::test]
async fn deleting_a_subscriber_row_as_the_release_before_erases_clears_their_webhook_payloads() {
    // No workers: the payloads stay queued.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::SubscriberCreated]).await;
    let readers = add_subscribers(&app, 2, "confirmed").await;
    let (erased, kept) = (readers[0], readers[1]);
    emit(
        &app,
        &[
            Event::subscriber_created(erased),
            Event::subscriber_created(kept),
        ],
    )
    .await;

    // The release before's erasure knows nothing of webhooks: the row
    // goes, and that is all it does.
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(erased)
        .execute(&app.db_pool)
        .await
        .unwrap();

    let payloads = queued_payloads(&app, endpoint).await;
    let about = |id: Uuid| {
        payloads
            .iter()
            .find(|p| p["data"]["id"] == id.to_string())
            .unwrap_or_else(|| panic!("no payload about {id}"))
    };
    assert_eq!(about(erased)["data"]["email"], Value::Null);
    assert_eq!(about(erased)["data"]["name"], Value::Null);
    assert!(
        about(kept)["data"]["email"].is_string(),
        "another reader's payload was touched"
    );
}

/// The only delivery as a worker's claim leaves it: (attempts, claim,
/// lease end, next attempt, status); times as text, since a parked row's
/// next attempt is `infinity`.
type ClaimState = (i32, Option<Uuid>, Option<String>, String, String);

async fn the_claim(app: &TestApp) -> ClaimState {
    sqlx::query_as(
        "SELECT attempts, claim_id, leased_until::text, next_attempt_at::text, status \
         FROM webhook_deliveries",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

async fn the_endpoint(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM webhook_endpoints")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn claim_by_hand(source: &WebhookSource) {
    let Ok(Turn::Batch(batch)) = source.claim(&CancellationToken::new()).await else {
        panic!("the delivery was not claimed");
    };
    // Held on to by no one: the claim stays as a worker mid-call holds it.
    drop(batch);
}

#[tokio::test]
async fn enabling_an_enabled_endpoint_leaves_a_call_in_flight_and_audits_nothing() {
    // No workers: the test claims by hand.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    one_queued_delivery(&app).await;
    let endpoint = the_endpoint(&app).await;
    claim_by_hand(&source_of(&app)).await;
    let claimed = the_claim(&app).await;
    assert!(claimed.2.is_some(), "claimed: {claimed:?}");
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let enabled = browser
        .submit(&format!("/admin/webhooks/{endpoint}/enable"), &[])
        .await;

    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        the_claim(&app).await,
        claimed,
        "the call in flight keeps its claim, lease and backoff"
    );
    let actions = crate::newsroom::audit_actions(&app).await;
    assert!(
        !actions.iter().any(|a| a == "webhook-endpoint-enabled"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn disabling_a_disabled_endpoint_on_its_page_is_no_error_and_audited_once() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let receiver = receiver().await;
    let url = format!("{}{HOOK}", receiver.uri());
    let (endpoint, _) = register(&app, &url, &[EventType::IssuePublished]).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    for _ in 0..2 {
        let disabled = browser
            .submit(&format!("/admin/webhooks/{endpoint}/disable"), &[])
            .await;
        assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            disabled.headers()["location"],
            format!("/admin/webhooks/{endpoint}?notice=disabled").as_str()
        );
    }
    let actions = crate::newsroom::audit_actions(&app).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "webhook-endpoint-disabled")
            .count(),
        1,
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_call_that_ends_after_its_endpoint_was_disabled_leaves_the_delivery_parked() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    one_queued_delivery(&app).await;
    let endpoint = the_endpoint(&app).await;
    let source = source_of(&app);
    let settings = app.settings.outgoing_webhooks.clone();
    let parked = |state: &ClaimState| state.3 == "infinity";
    let disable = async || {
        let mut conn = app.db_pool.acquire().await.unwrap();
        control::disable(&mut conn, endpoint).await.unwrap();
    };
    let enable = async || {
        let mut conn = app.db_pool.acquire().await.unwrap();
        control::enable(&mut conn, endpoint).await.unwrap();
    };

    // A failed call recorded after the admin disabled the endpoint.
    claim_by_hand(&source).await;
    disable().await;
    let (_, claim, ..) = the_claim(&app).await;
    let id: Uuid = sqlx::query_scalar("SELECT id FROM webhook_deliveries")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let mut conn = app.db_pool.acquire().await.unwrap();
    let failed = deliveries::mark_failed_attempt(
        &mut conn,
        (id, claim.unwrap()),
        endpoint,
        (Some(503), "the endpoint answered 503"),
        settings.retry_delay(1),
        settings.disable_after(),
    )
    .await
    .unwrap();
    assert_eq!(failed, deliveries::Failed::Retried);
    let state = the_claim(&app).await;
    assert!(parked(&state), "a failure un-parked it: {state:?}");

    // A call handed back unmade after the admin disabled the endpoint.
    enable().await;
    claim_by_hand(&source).await;
    disable().await;
    let (_, claim, ..) = the_claim(&app).await;
    let released = deliveries::release(&mut conn, &[(id, claim.unwrap())])
        .await
        .unwrap();
    assert_eq!(released, 1);
    let state = the_claim(&app).await;
    assert!(parked(&state), "a release un-parked it: {state:?}");
}

#[tokio::test]
async fn a_delivery_whose_worker_died_on_its_last_attempt_is_given_up_not_claimed_again() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.outgoing_webhooks.retry_delays_seconds = vec![600.0];
    })
    .await;
    let receiver = one_queued_delivery(&app).await;
    // Both attempts made, each worker killed mid-call: the last claim
    // lapsed and the row is due again.
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = 2, claim_id = gen_random_uuid(), \
         leased_until = now() - interval '1 second', next_attempt_at = now()",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();

    let turn = source_of(&app).claim(&CancellationToken::new()).await;

    assert!(
        !matches!(turn, Ok(Turn::Batch(_))),
        "claimed for a third attempt"
    );
    let (attempts, _, leased_until, _, status) = the_claim(&app).await;
    assert_eq!(status, "failed");
    assert_eq!(attempts, 2);
    assert_eq!(leased_until, None);
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

#[test]
fn a_claimed_delivery_shows_no_secret_in_its_debug_form() {
    let claimed = deliveries::Claimed {
        id: Uuid::new_v4(),
        claim_id: Uuid::new_v4(),
        endpoint_id: Uuid::new_v4(),
        event_id: Uuid::new_v4(),
        attempts: 1,
        payload: "{}".into(),
        url: "https://crm.example.com/hooks".into(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
    };

    let shown = format!("{claimed:?}");

    assert!(
        !shown.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "{shown}"
    );
    assert!(shown.contains("https://crm.example.com/hooks"), "{shown}");
}
