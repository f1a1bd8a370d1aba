//! `GET /metrics`: each test scrapes, makes the event happen, scrapes again
//! and checks that the metric moved, not only that the endpoint answers.

use std::collections::HashMap;

use wiremock::matchers::any;
use wiremock::{Mock, ResponseTemplate};

use crate::campaigns::{a_held_issue, add_subscribers};
use crate::helpers::{HeldEmailApi, TcpProxy, TestApp, eventually, spawn_app, spawn_app_with};
use crate::outgoing_webhooks::{HOOK, emit, receiver, register};
use crate::webhooks::{complaint, post_webhook};
use newsletter::outgoing_webhooks::events::{Event, EventType};
use wiremock::MockServer;
use wiremock::matchers::method;

const VALID_BODY: &str = "name=Ursula&email=ursula%40example.com";

/// One scrape, parsed: each series by its name and labels.
struct Scrape {
    series: Vec<(String, HashMap<String, String>, f64)>,
    text: String,
}

impl Scrape {
    /// The series `name` whose labels include `labels`; 0 when there is
    /// none (a counter never touched, a gauge left out).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
    }
}

/// Parses the text exposition: `name{label="value",...} number`.
fn parse(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            (name.to_owned(), labels, value.parse().expect("a number"))
        })
        .collect()
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app
        .api_client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .expect("Failed to scrape");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "a complete exposition: {text}");
    Scrape {
        series: parse(&text),
        text,
    }
}

/// Scrapes until `check` holds, failing the test after the usual patience.
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(what, || async {
        let now = scrape(app).await;
        check(&now).then_some(now)
    })
    .await
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_and_not_on_the_public_one() {
    let app = spawn_app().await;

    let public = app.get("/metrics").await;
    let own = app
        .api_client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap();

    assert_eq!(public.status().as_u16(), 404);
    assert_eq!(own.status().as_u16(), 200);
    let content_type = own.headers()["Content-Type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
}

#[tokio::test]
async fn a_sign_up_counts_as_stored() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let before = scrape(&app).await;

    assert_eq!(app.post_subscriptions(VALID_BODY).await.status(), 200);

    let after = scrape(&app).await;
    let stored = "newsletter_signups_stored_total";
    assert_eq!(after.value(stored, &[]), before.value(stored, &[]) + 1.0);
}

#[tokio::test]
async fn sign_ups_answered_without_storing_count_under_their_reason() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_address.burst = 1;
        s.rate_limit.per_address.per_period = 1;
    })
    .await;
    app.mock_email_api_ok().await;
    let suppressed = "newsletter_signups_suppressed_total";
    let before = scrape(&app).await;

    app.post_subscriptions(format!("{VALID_BODY}&website=spam.example"))
        .await;
    app.post_subscriptions(VALID_BODY).await;
    app.post_subscriptions(VALID_BODY).await;

    let after = scrape(&app).await;
    for (reason, expected) in [("honeypot", 1.0), ("address_limit", 1.0)] {
        let moved = after.value(suppressed, &[("reason", reason)])
            - before.value(suppressed, &[("reason", reason)]);
        assert_eq!(moved, expected, "reason {reason}");
    }
    assert_eq!(after.value("newsletter_signups_stored_total", &[]), 1.0);
}

#[tokio::test]
async fn a_sign_up_of_a_suppressed_address_counts_under_the_suppression_list() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let record = complaint(1, "ursula@example.com", None);
    assert_eq!(post_webhook(&app, &record).await.status(), 200);
    let before = scrape(&app).await;

    assert_eq!(app.post_subscriptions(VALID_BODY).await.status(), 200);

    let after = scrape(&app).await;
    let labels = [("reason", "suppression_list")];
    let suppressed = "newsletter_signups_suppressed_total";
    assert_eq!(
        after.value(suppressed, &labels),
        before.value(suppressed, &labels) + 1.0
    );
    assert_eq!(after.value("newsletter_signups_stored_total", &[]), 0.0);
}

#[tokio::test]
async fn a_spam_complaint_counts_as_a_webhook_record_once() {
    let app = spawn_app().await;
    let record = complaint(7, "ursula@example.com", None);
    let counted = "newsletter_webhook_records_total";
    let labels = [("kind", "spam_complaint")];
    let before = scrape(&app).await;

    post_webhook(&app, &record).await;
    post_webhook(&app, &record).await;

    let after = scrape(&app).await;
    assert_eq!(
        after.value(counted, &labels),
        before.value(counted, &labels) + 1.0,
        "a repeated record is not counted again"
    );
}

#[tokio::test]
async fn a_rate_limited_sign_up_counts_as_rate_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip.burst = 1;
        s.rate_limit.per_ip.per_period = 1;
    })
    .await;
    app.mock_email_api_ok().await;
    let limited = "newsletter_signups_rate_limited_total";
    let before = scrape(&app).await;

    app.post_subscriptions(VALID_BODY).await;
    let refused = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(refused.status().as_u16(), 429);
    let after = scrape(&app).await;
    assert_eq!(after.value(limited, &[]), before.value(limited, &[]) + 1.0);
}

#[tokio::test]
async fn checks_without_redis_count_as_fallbacks() {
    let app = spawn_app_with(|s| s.redis_uri = "redis://127.0.0.1:1".to_owned().into()).await;
    app.mock_email_api_ok().await;
    let fallbacks = "newsletter_rate_limit_fallbacks_total";
    let before = scrape(&app).await;

    assert_eq!(app.post_subscriptions(VALID_BODY).await.status(), 200);

    let after = scrape(&app).await;
    assert_eq!(
        after.value(fallbacks, &[]),
        before.value(fallbacks, &[]) + 1.0
    );
}

#[tokio::test]
async fn sending_an_email_moves_the_outbox_depth_the_sent_count_and_the_delay() {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| s.email_client.base_url = api.uri.clone()).await;
    let depth = "newsletter_outbox_messages";
    let sent = "newsletter_emails_sent_total";
    let delay = "newsletter_outbox_commit_to_send_seconds_count";
    let before = scrape(&app).await;
    assert_eq!(before.find(depth, &[("status", "pending")]), Some(0.0));
    assert_eq!(before.find(depth, &[("status", "claimed")]), Some(0.0));

    app.post_subscriptions(VALID_BODY).await;
    api.wait_for_requests(1).await;

    let sending = scrape(&app).await;
    assert_eq!(sending.value(depth, &[("status", "claimed")]), 1.0);
    assert_eq!(sending.value(sent, &[("stream", "outbound")]), 0.0);
    api.release();
    let after = scrape_until(&app, "the send to be recorded", |now| {
        now.value(delay, &[]) == 1.0
    })
    .await;
    assert_eq!(after.value(sent, &[("stream", "outbound")]), 1.0);
    assert_eq!(after.find(depth, &[("status", "pending")]), Some(0.0));
    assert_eq!(after.find(depth, &[("status", "claimed")]), Some(0.0));
    assert_eq!(
        after.value("newsletter_email_api_batch_duration_seconds_count", &[]),
        1.0
    );
}

#[tokio::test]
async fn an_email_api_500_counts_as_a_server_error() {
    let app = spawn_app().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.email_server)
        .await;
    let errors = "newsletter_email_api_errors_total";
    let labels = [("kind", "server_error")];
    let before = scrape(&app).await;
    assert_eq!(before.value(errors, &labels), 0.0);

    app.post_subscriptions(VALID_BODY).await;

    scrape_until(&app, "the 500 to be counted", |now| {
        now.value(errors, &labels) >= 1.0
    })
    .await;
}

#[tokio::test]
async fn requests_count_under_their_route_pattern_not_their_path() {
    let app = spawn_app().await;
    let requests = "newsletter_http_requests_total";
    let confirm = [
        ("method", "GET"),
        ("route", "/subscriptions/confirm"),
        ("status", "400"),
    ];
    let unmatched = [("route", "unmatched"), ("status", "404")];
    let before = scrape(&app).await;

    app.get_confirm("?subscription_token=not-a-token").await;
    app.get_confirm("?subscription_token=secret-looking-value")
        .await;
    app.get("/no/such/page").await;

    let after = scrape(&app).await;
    assert_eq!(
        after.value(requests, &confirm),
        before.value(requests, &confirm) + 2.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.value(requests, &unmatched),
        before.value(requests, &unmatched) + 1.0
    );
    for raw in ["not-a-token", "secret-looking-value", "/no/such/page"] {
        assert!(!after.text.contains(raw), "{raw} leaked into the metrics");
    }
    let timed = "newsletter_http_request_duration_seconds_count";
    let route = [("route", "/subscriptions/confirm")];
    assert_eq!(
        after.value(timed, &route),
        before.value(timed, &route) + 2.0
    );
}

#[tokio::test]
async fn campaign_progress_follows_an_issue_while_it_sends() {
    let (api, app, issue, _) = a_held_issue(30).await;
    let issue_id = issue.to_string();
    let labels = [("issue_id", issue_id.as_str())];
    let recipients = "newsletter_campaign_recipients";
    let sent = "newsletter_campaign_sent_emails";

    let held = scrape(&app).await;
    assert_eq!(held.find(sent, &labels), Some(0.0));
    assert!(held.value(recipients, &labels) >= 10.0);
    assert!(held.value("newsletter_ledger_deliveries", &[("status", "queued")]) >= 10.0);

    api.release_one();
    scrape_until(&app, "the first batch to count as sent", |now| {
        now.value(sent, &labels) == 10.0 && now.value(recipients, &labels) == 30.0
    })
    .await;
    api.release();
    let done = scrape_until(&app, "the finished issue to leave the gauges", |now| {
        now.find(sent, &labels).is_none()
    })
    .await;
    assert_eq!(
        done.value("newsletter_emails_sent_total", &[("stream", "broadcast")]),
        30.0
    );
}

#[tokio::test]
async fn a_scrape_without_the_database_still_answers_with_the_database_down() {
    let proxy = TcpProxy::to_postgres().await;
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.database.acquire_timeout_milliseconds = 1_000;
    })
    .await;
    let up = "newsletter_database_up";
    let before = scrape(&app).await;
    assert_eq!(before.find(up, &[]), Some(1.0));

    proxy.cut();
    let during = scrape(&app).await;
    proxy.restore();

    assert_eq!(during.find(up, &[]), Some(0.0));
    assert_eq!(during.find("newsletter_outbox_messages", &[]), None);
    assert_eq!(
        during.find("newsletter_signups_stored_total", &[]),
        Some(0.0),
        "the counters are still there"
    );
}

const WEBHOOK_CALLS: &str = "newsletter_outgoing_webhook_calls_total";
const WEBHOOK_CALL_TIME: &str = "newsletter_outgoing_webhook_call_duration_seconds_count";
const WEBHOOK_DELIVERIES: &str = "newsletter_outgoing_webhook_deliveries";

#[tokio::test]
async fn webhook_calls_count_by_outcome_each_timed() {
    // The tests' schedule: four retries, then given up.
    let app = spawn_app().await;
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&failing)
        .await;
    let answering = receiver().await;
    for server in [&failing, &answering] {
        let url = format!("{}{HOOK}", server.uri());
        register(&app, &url, &[EventType::SubscriberCreated]).await;
    }
    let subscriber = add_subscribers(&app, 1, "pending_confirmation").await[0];
    let before = scrape(&app).await;
    assert_eq!(before.value(WEBHOOK_CALLS, &[]), 0.0);

    emit(&app, &[Event::subscriber_created(subscriber)]).await;

    let after = scrape_until(&app, "the failing delivery to be given up", |now| {
        now.value(WEBHOOK_CALLS, &[("outcome", "given_up")]) == 1.0
            && now.value(WEBHOOK_CALLS, &[("outcome", "delivered")]) == 1.0
    })
    .await;
    assert_eq!(after.value(WEBHOOK_CALLS, &[("outcome", "retrying")]), 4.0);
    assert_eq!(
        after.value(WEBHOOK_CALLS, &[("outcome", "address_refused")]),
        0.0
    );
    assert_eq!(after.value(WEBHOOK_CALL_TIME, &[]), 6.0, "every call timed");
    assert_eq!(
        after.find(WEBHOOK_DELIVERIES, &[("status", "pending")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_webhook_call_to_an_internal_address_counts_as_refused_and_is_not_timed() {
    let app = spawn_app_with(|s| s.outgoing_webhooks.allow_private_addresses = false).await;
    let server = receiver().await;
    let port = server.address().port();
    register(
        &app,
        &format!("http://127.0.0.1:{port}{HOOK}"),
        &[EventType::SubscriberCreated],
    )
    .await;
    let subscriber = add_subscribers(&app, 1, "pending_confirmation").await[0];

    emit(&app, &[Event::subscriber_created(subscriber)]).await;

    let after = scrape_until(&app, "the refused address to be counted", |now| {
        now.value(WEBHOOK_CALLS, &[("outcome", "address_refused")]) >= 1.0
    })
    .await;
    assert_eq!(after.value(WEBHOOK_CALLS, &[("outcome", "retrying")]), 0.0);
    assert_eq!(after.value(WEBHOOK_CALL_TIME, &[]), 0.0);
}

#[tokio::test]
async fn webhook_deliveries_waiting_for_a_worker_show_as_pending() {
    // No workers: what is queued stays pending.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let server = receiver().await;
    let url = format!("{}{HOOK}", server.uri());
    register(&app, &url, &[EventType::SubscriberCreated]).await;
    let subscribers = add_subscribers(&app, 3, "pending_confirmation").await;
    let before = scrape(&app).await;
    assert_eq!(
        before.find(WEBHOOK_DELIVERIES, &[("status", "pending")]),
        Some(0.0)
    );

    let created: Vec<Event> = subscribers
        .into_iter()
        .map(Event::subscriber_created)
        .collect();
    emit(&app, &created).await;

    let after = scrape(&app).await;
    assert_eq!(
        after.find(WEBHOOK_DELIVERIES, &[("status", "pending")]),
        Some(3.0)
    );
    assert_eq!(
        after.find(WEBHOOK_DELIVERIES, &[("status", "claimed")]),
        Some(0.0)
    );
}
