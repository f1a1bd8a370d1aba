//! Delivery through the outbox: whatever the email API does, a committed
//! subscription's email arrives once the API accepts it, at most once after
//! acceptance, and a message that cannot be delivered is kept as failed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use newsletter::configuration::Settings;
use newsletter::db::Db;
use newsletter::db::wakeups::Notifier;
use newsletter::delivery::Routes;
use newsletter::delivery::mail::Mail;
use newsletter::delivery::throttle::Throttles;
use newsletter::domain::SubscriberEmail;
use newsletter::emails::{Email, EmailContent};
use newsletter::metrics::Metrics;
use newsletter::outbox::{DeliveryWorker, Doorbell, Outbox, OutboxSource};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    EMAIL_API, HeldEmailApi, TcpProxy, TestApp, accept_every_message, answer_each_message,
    delivery_worker_for, eventually, listening, spawn_app, spawn_app_with,
};

const VALID_BODY: &str = "name=Ursula&email=ursula%40example.com";

async fn fail_then_accept(app: &TestApp, failure: ResponseTemplate, failures: u64) {
    Mock::given(path(EMAIL_API))
        .respond_with(failure)
        .up_to_n_times(failures)
        .with_priority(1)
        .mount(&app.email_server)
        .await;
    app.mock_email_api_ok().await;
}

/// Subscribes, checks the person got 200, and waits for the outbox to settle.
async fn subscribe_and_settle(app: &TestApp) -> Vec<crate::helpers::OutboxRow> {
    let response = app.post_subscriptions(VALID_BODY).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
    app.wait_for_outbox_to_settle().await
}

#[tokio::test]
async fn an_email_api_answering_500_gets_the_email_once_it_recovers() {
    let app = spawn_app().await;
    fail_then_accept(&app, ResponseTemplate::new(500), 2).await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].attempts, 3);
    assert_eq!(app.sent_emails().await.len(), 3);
}

#[tokio::test]
async fn an_email_api_that_times_out_gets_the_email_once_it_recovers() {
    let app = spawn_app_with(|s| s.email_client.timeout_milliseconds = 200).await;
    fail_then_accept(
        &app,
        ResponseTemplate::new(200).set_delay(Duration::from_secs(30)),
        1,
    )
    .await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].attempts, 2);
}

#[tokio::test]
async fn an_email_api_answering_429_is_retried_no_sooner_than_retry_after() {
    let app = spawn_app_with(|s| s.delivery.sending.backoff_max_seconds = 10).await;
    fail_then_accept(
        &app,
        ResponseTemplate::new(429).insert_header("Retry-After", "2"),
        1,
    )
    .await;

    app.post_subscriptions(VALID_BODY).await;

    // After the 429 the retry is scheduled by Retry-After (2 s), not by the
    // 50 ms backoff the tests configure.
    let wait: f64 = eventually("the 429 to be recorded", || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM email_outbox \
             WHERE claimed_until IS NULL AND last_error IS NOT NULL",
        )
        .fetch_optional(&app.db_pool)
        .await
        .unwrap()
    })
    .await;
    assert!(wait > 1.0, "the retry was scheduled in {wait} s");
    let outbox = app.wait_for_outbox_to_settle().await;
    assert_eq!(outbox[0].status, "sent");
    assert!(outbox[0].last_error.is_none());
    assert_eq!(
        outbox[0].attempts, 1,
        "the throttled call counted as an attempt"
    );
}

#[tokio::test]
async fn after_a_throttling_answer_the_worker_claims_nothing_until_the_api_said_it_may() {
    // One message a call: were the worker to go on claiming, the second
    // would reach the API at once, to be throttled in turn.
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.delivery.sending.batch_size = 1;
        s.delivery.sending.backoff_max_seconds = 10;
    })
    .await;
    let arrivals = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    Mock::given(path(EMAIL_API))
        .respond_with({
            let arrivals = arrivals.clone();
            move |request: &wiremock::Request| {
                let mut arrivals = arrivals.lock().unwrap();
                arrivals.push(std::time::Instant::now());
                if arrivals.len() == 1 {
                    ResponseTemplate::new(429).insert_header("Retry-After", "2")
                } else {
                    accept_every_message(request)
                }
            }
        })
        .mount(&app.email_server)
        .await;
    subscribe_all(&app, &["first@example.com", "second@example.com"]).await;

    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    worker.await.unwrap();

    assert!(outbox.iter().all(|m| m.status == "sent"), "{outbox:?}");
    let arrivals = arrivals.lock().unwrap().clone();
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(1_900),
        "the next call came {gap:?} after the throttling answer, which asked for 2 s"
    );
}

#[tokio::test]
async fn an_email_the_api_keeps_throttling_is_sent_once_it_may_without_using_up_its_attempts() {
    // Two attempts at most, and the API throttles the first three calls:
    // were throttling an attempt, the email would fail after the second.
    let app = spawn_app_with(|s| s.delivery.sending.max_attempts = 2).await;
    fail_then_accept(&app, ResponseTemplate::new(429), 3).await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "sent", "{:?}", outbox[0]);
    assert_eq!(outbox[0].attempts, 1);
    assert_eq!(app.sent_emails().await.len(), 4);
}

#[tokio::test]
async fn an_email_api_refusing_connections_gets_the_email_once_it_listens() {
    // Reserve a port, then free it: connections to it are refused until the
    // mock API starts listening there.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let app = spawn_app_with(|s| s.email_client.base_url = format!("http://{address}")).await;

    assert_eq!(
        app.post_subscriptions(VALID_BODY).await.status().as_u16(),
        200
    );
    eventually("a refused attempt to be recorded", || async {
        let outbox = app.outbox().await;
        outbox[0].last_error.is_some().then_some(())
    })
    .await;
    let recovered = MockServer::builder()
        .listener(std::net::TcpListener::bind(address).unwrap())
        .start()
        .await;
    Mock::given(any())
        .respond_with(accept_every_message)
        .mount(&recovered)
        .await;

    let outbox = app.wait_for_outbox_to_settle().await;
    assert_eq!(outbox[0].status, "sent");
    assert_eq!(recovered.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_422_is_not_retried_and_the_message_is_kept_as_failed_with_its_error() {
    let app = spawn_app().await;
    Mock::given(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(422).set_body_string("Invalid 'To' address"))
        .mount(&app.email_server)
        .await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "failed");
    assert_eq!(outbox[0].attempts, 1);
    let error = outbox[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("422") && !error.contains("Invalid 'To' address"),
        "{error}"
    );
    assert_eq!(app.sent_emails().await.len(), 1);
}

#[tokio::test]
async fn a_message_is_kept_as_failed_after_the_configured_number_of_attempts() {
    let app = spawn_app_with(|s| s.delivery.sending.max_attempts = 3).await;
    Mock::given(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.email_server)
        .await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "failed");
    assert_eq!(outbox[0].attempts, 3);
    assert_eq!(outbox[0].recipient, "ursula@example.com");
    let error = outbox[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("gave up after 3 attempts") && error.contains("503"),
        "{error}"
    );
    assert_eq!(app.sent_emails().await.len(), 3);
}

#[tokio::test]
async fn a_message_refused_inside_a_batch_is_kept_as_failed_and_the_rest_are_sent() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    Mock::given(path(EMAIL_API))
        .respond_with(|request: &wiremock::Request| {
            answer_each_message(request, |message| {
                if message["To"] == "inactive@example.com" {
                    406
                } else {
                    0
                }
            })
        })
        .mount(&app.email_server)
        .await;
    for who in ["first", "inactive", "last"] {
        app.post_subscriptions(format!("name=Reader&email={who}%40example.com"))
            .await;
    }

    // One worker, started after all three are queued: they go in one batch.
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(app.email_api_requests().await.len(), 1);
    for message in &outbox {
        if message.recipient == "inactive@example.com" {
            assert_eq!(message.status, "failed");
            assert_eq!(message.attempts, 1, "a refusal is not retried");
            let error = message.last_error.as_deref().unwrap();
            assert!(error.contains("406"), "{error}");
        } else {
            assert_eq!(message.status, "sent", "{message:?}");
        }
    }
}

#[tokio::test]
async fn bodies_are_cleared_once_a_message_is_sent() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let outbox = subscribe_and_settle(&app).await;

    assert_eq!(outbox[0].status, "sent");
    assert!(!outbox[0].has_body, "the confirmation link is still stored");
}

#[tokio::test]
async fn a_committed_message_is_delivered_without_waiting_for_the_poll() {
    // With a one-minute poll, only the notification can deliver in time.
    let app = spawn_app_with(|s| s.delivery.sending.poll_interval_milliseconds = 60_000).await;
    app.mock_email_api_ok().await;

    app.post_subscriptions(VALID_BODY).await;

    app.wait_for_emails(1).await;
}

/// An app whose delivery lingers far longer than a claim takes, with a poll
/// that never comes, and an email API that accepts everything. A claim must
/// outlast the linger and a send.
async fn app_with_a_long_linger(customise: impl FnOnce(&mut Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        s.delivery.sending.batch_linger_milliseconds = 4_000;
        s.delivery.sending.claim_timeout_seconds = 10;
        s.delivery.sending.poll_interval_milliseconds = 60_000;
        customise(s);
    })
    .await;
    app.mock_email_api_ok().await;
    app
}

/// Subscribes two more addresses while delivery lingers after the first
/// address's email, and returns how long their emails took.
async fn two_more_while_the_first_lingers(app: &TestApp) -> Duration {
    let started = std::time::Instant::now();
    app.post_subscriptions("name=Second&email=second%40example.com")
        .await;
    app.post_subscriptions("name=Third&email=third%40example.com")
        .await;
    app.wait_for_emails(3).await;
    started.elapsed()
}

#[tokio::test]
async fn a_lone_message_is_claimed_at_once_and_the_ones_after_it_gather_into_one_batch() {
    let app = app_with_a_long_linger(|s| s.delivery.sending.workers = 1).await;

    let started = std::time::Instant::now();
    app.post_subscriptions("name=First&email=first%40example.com")
        .await;
    app.wait_for_emails(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the first message waited for the linger"
    );
    two_more_while_the_first_lingers(&app).await;
    app.wait_for_outbox_to_settle().await;

    // A batch is marked sent by one statement, so it shares one sent_at.
    let batches: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT sent_at) FROM email_outbox WHERE recipient LIKE 's%' OR recipient LIKE 't%'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        batches, 1,
        "the second and third messages were claimed apart"
    );
}

#[tokio::test]
async fn messages_that_fill_a_batch_during_the_linger_are_sent_without_waiting_it_out() {
    let app = app_with_a_long_linger(|s| s.delivery.sending.batch_size = 2).await;
    app.post_subscriptions("name=First&email=first%40example.com")
        .await;
    app.wait_for_emails(1).await;

    // The first went alone; the linger after it has begun.
    let waited = two_more_while_the_first_lingers(&app).await;
    assert!(
        waited < Duration::from_secs(3),
        "a full batch waited for the linger to end"
    );
}

#[tokio::test]
async fn a_message_claimed_by_a_worker_that_died_is_delivered_after_its_claim_lapses() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    // A worker claims the message and dies before sending it.
    let claimed = sqlx::query(
        "UPDATE email_outbox SET claimed_until = now() + interval '500 milliseconds', \
                claim_id = gen_random_uuid(), attempts = attempts + 1",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(claimed.rows_affected(), 1);

    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].attempts, 2, "the dead worker's attempt counts");
    assert_eq!(app.sent_emails().await.len(), 1);
}

#[tokio::test]
async fn several_workers_share_the_outbox_and_send_each_message_once() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.delivery.sending.batch_size = 3;
    })
    .await;
    app.mock_email_api_ok().await;
    for i in 0..40 {
        app.post_subscriptions(format!("name=Reader&email=reader{i}%40example.com"))
            .await;
    }

    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(tokio::spawn(app.delivery_worker().await.run(stop.clone())));
    }
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    for worker in workers {
        worker.await.unwrap();
    }

    assert!(outbox.iter().all(|m| m.status == "sent" && m.attempts == 1));
    let mut recipients: Vec<String> = app
        .sent_emails()
        .await
        .iter()
        .map(|email| email["To"].to_string())
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(app.sent_emails().await.len(), 40);
    assert_eq!(recipients.len(), 40);
}

#[tokio::test]
async fn on_shutdown_a_worker_finishes_the_message_in_flight_and_claims_no_more() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.delivery.sending.batch_size = 1;
    })
    .await;
    Mock::given(path(EMAIL_API))
        .respond_with(|request: &wiremock::Request| {
            accept_every_message(request).set_delay(Duration::from_millis(500))
        })
        .mount(&app.email_server)
        .await;
    for i in 0..3 {
        app.post_subscriptions(format!("name=Reader&email=reader{i}%40example.com"))
            .await;
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    app.wait_for_emails(1).await; // the first message is in flight

    stop.cancel();
    worker.await.unwrap();

    let outbox = app.outbox().await;
    let sent = outbox.iter().filter(|m| m.status == "sent").count();
    assert_eq!(
        sent, 1,
        "the message in flight was not finished: {outbox:?}"
    );
    for message in outbox.iter().filter(|m| m.status == "pending") {
        assert!(!message.claimed, "a message was left claimed: {message:?}");
        assert_eq!(message.attempts, 0, "{message:?}");
    }
}

#[tokio::test]
async fn a_message_the_server_sends_itself_is_not_also_claimed_by_other_workers() {
    let app = spawn_app().await;
    // A slow API keeps the message in flight for a while.
    Mock::given(path(EMAIL_API))
        .respond_with(|request: &wiremock::Request| {
            accept_every_message(request).set_delay(Duration::from_millis(1_500))
        })
        .mount(&app.email_server)
        .await;
    // A worker elsewhere that looks for due messages every 200 ms meanwhile.
    let stop = CancellationToken::new();
    let elsewhere = tokio::spawn(app.delivery_worker().await.run(stop.clone()));

    app.post_subscriptions(VALID_BODY).await;
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    elsewhere.await.unwrap();

    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].attempts, 1);
    assert_eq!(app.sent_emails().await.len(), 1, "sent twice");
}

fn email_to(i: usize) -> Email {
    Email {
        to: SubscriberEmail::parse(&format!("reader{i}@example.com")).unwrap(),
        content: EmailContent {
            subject: "Hello".into(),
            html_body: "<p>Hello</p>".into(),
            text_body: "Hello".into(),
        },
        message_stream: "outbound".into(),
        delivery: None,
        outbox_id: None,
        unsubscribe: None,
    }
}

#[tokio::test]
async fn on_shutdown_the_messages_handed_over_in_the_process_are_still_sent() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.delivery.sending.batch_size = 1;
    })
    .await;
    // Slow enough that the later messages are still queued in the process
    // when shutdown begins.
    Mock::given(path(EMAIL_API))
        .respond_with(move |request: &wiremock::Request| {
            accept_every_message(request).set_delay(Duration::from_millis(300))
        })
        .mount(&app.email_server)
        .await;
    let db = Db::connect_lazy(&app.settings.database, 2);
    let stop = CancellationToken::new();
    let (outbox, mut tasks) = Outbox::start(
        Some(app.delivery_worker().await),
        Notifier::silent(),
        stop.clone(),
    );
    for i in 0..3 {
        db.transaction(async |transaction| outbox.enqueue(transaction, vec![email_to(i)]).await)
            .await
            .unwrap();
    }

    app.wait_for_emails(1).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let outbox = app.outbox().await;
    assert!(
        outbox.iter().all(|m| m.status == "sent" && m.attempts == 1),
        "{outbox:?}"
    );
    assert_eq!(app.sent_emails().await.len(), 3);
}

#[tokio::test]
async fn the_worker_command_delivers_queued_email_and_stops_cleanly_on_sigterm() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;

    let worker = std::process::Command::new(env!("CARGO_BIN_EXE_newsletter"))
        .arg("worker")
        .env(
            "APP_DATABASE__DATABASE_NAME",
            &app.settings.database.database_name,
        )
        .env("APP_EMAIL_CLIENT__PROVIDERS", "postmark")
        .env("APP_EMAIL_CLIENT__BASE_URL", app.email_server.uri())
        .env("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "test-token")
        .env("APP_DELIVERY__POLL_INTERVAL_MILLISECONDS", "100")
        .env("APP_METRICS__PORT", "0")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let outbox = app.wait_for_outbox_to_settle().await;
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    let worker = std::sync::Mutex::new(worker);
    let exit = eventually("the worker to exit", || async {
        worker.lock().unwrap().try_wait().unwrap()
    })
    .await;

    assert_eq!(outbox[0].status, "sent");
    assert!(signalled.success());
    assert!(exit.success(), "the worker exited with {exit}");
}

#[tokio::test]
async fn a_worker_in_another_process_is_woken_by_the_notification_sent_after_commit() {
    // The app runs no worker; the worker below shares nothing with it but the
    // database, and polls only once a minute.
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.delivery.sending.poll_interval_milliseconds = 60_000;
    })
    .await;
    app.mock_email_api_ok().await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));

    app.post_subscriptions(VALID_BODY).await;

    app.wait_for_emails(1).await;
    stop.cancel();
    worker.await.unwrap();
}

/// A worker on the app's database that sends to `api` and holds its claims
/// for `claim_seconds`. Built directly: with a claim shorter than a send to
/// `api` can take, the app's own settings check would refuse it.
async fn worker_sending_to(
    app: &TestApp,
    api: &HeldEmailApi,
    claim_seconds: u64,
) -> DeliveryWorker {
    let mut settings = app.settings.delivery.sending.clone();
    settings.claim_timeout_seconds = claim_seconds;
    let db = Db::connect_lazy(&app.settings.database, 2);
    let source = OutboxSource::new(
        db.clone(),
        settings.clone(),
        // It believes a send takes no time, as a worker that was paused would.
        Duration::ZERO,
        Doorbell::new(Notifier::silent()),
        Metrics::default(),
    );
    DeliveryWorker::new(
        source,
        db,
        Mail::new(Routes::only(Arc::new(api.client())), Throttles::default()),
        settings,
        listening(&app.settings, newsletter::outbox::CHANNEL).await,
    )
}

/// The one message's claim, and whether it still holds.
async fn claim_of_the_message(app: &TestApp) -> (Option<Uuid>, bool) {
    sqlx::query_as("SELECT claim_id, coalesce(claimed_until > now(), false) FROM email_outbox")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn wait_for_the_claim_to_lapse(app: &TestApp) {
    eventually("the first worker's claim to lapse", || async {
        let (_, holds) = claim_of_the_message(app).await;
        (!holds).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_worker_whose_claim_lapsed_cannot_fail_a_message_another_worker_sent_meanwhile() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    // The first worker's send outlasts its claim and ends in a refusal.
    let slow_api = HeldEmailApi::answering_each_message(406).await;
    let stop_first = CancellationToken::new();
    let first = tokio::spawn(
        worker_sending_to(&app, &slow_api, 1)
            .await
            .run(stop_first.clone()),
    );
    slow_api.wait_for_requests(1).await;
    wait_for_the_claim_to_lapse(&app).await;

    let stop_second = CancellationToken::new();
    let second = tokio::spawn(app.delivery_worker().await.run(stop_second.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop_second.cancel();
    second.await.unwrap();
    assert_eq!(outbox[0].status, "sent");
    // Stopping waits for the send in flight and the recording of its outcome.
    stop_first.cancel();
    slow_api.release();
    first.await.unwrap();

    let outbox = app.outbox().await;
    assert_eq!(outbox[0].status, "sent", "the late refusal was recorded");
    assert_eq!(outbox[0].last_error, None);
    assert_eq!(outbox[0].attempts, 2);
}

/// A worker claims the message and sends it to an API that answers with
/// `late_answer` only when the test says so. Its claim lapses; a second
/// worker claims the message and is sending it when the first hears back.
/// The first worker's outcome must leave the message to the second, which
/// then sends it.
async fn a_late_answer_to_a_lapsed_claim_leaves_the_message_to_the_newer_one(
    late_answer: HeldEmailApi,
) {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.post_subscriptions(VALID_BODY).await;
    let stop_first = CancellationToken::new();
    let first = tokio::spawn(
        worker_sending_to(&app, &late_answer, 1)
            .await
            .run(stop_first.clone()),
    );
    late_answer.wait_for_requests(1).await;
    wait_for_the_claim_to_lapse(&app).await;
    let second_api = HeldEmailApi::answering_each_message(0).await;
    let stop_second = CancellationToken::new();
    let second = tokio::spawn(
        worker_sending_to(&app, &second_api, 60)
            .await
            .run(stop_second.clone()),
    );
    second_api.wait_for_requests(1).await;
    let (newer_claim, _) = claim_of_the_message(&app).await;

    stop_first.cancel();
    late_answer.release();
    first.await.unwrap();

    let outbox = app.outbox().await;
    assert_eq!(outbox[0].status, "pending", "{outbox:?}");
    assert_eq!(
        claim_of_the_message(&app).await,
        (newer_claim, true),
        "the newer claim was released"
    );
    assert_eq!(outbox[0].last_error, None);
    second_api.release();
    let outbox = app.wait_for_outbox_to_settle().await;
    stop_second.cancel();
    second.await.unwrap();
    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].last_error, None);
    assert_eq!(outbox[0].attempts, 2);
}

#[tokio::test]
async fn a_late_refusal_to_a_worker_whose_claim_lapsed_does_not_fail_the_message_another_holds() {
    a_late_answer_to_a_lapsed_claim_leaves_the_message_to_the_newer_one(
        HeldEmailApi::answering_each_message(406).await,
    )
    .await;
}

#[tokio::test]
async fn a_late_error_to_a_worker_whose_claim_lapsed_does_not_reschedule_the_message_another_holds()
{
    a_late_answer_to_a_lapsed_claim_leaves_the_message_to_the_newer_one(
        HeldEmailApi::answering_status(503).await,
    )
    .await;
}

/// Subscribes each address, in order, through the app.
async fn subscribe_all(app: &TestApp, addresses: &[&str]) {
    for address in addresses {
        let response = app
            .post_subscriptions(format!("name=Reader&email={}", address.replace('@', "%40")))
            .await;
        assert_eq!(response.status().as_u16(), 200, "{address}");
    }
}

/// Runs one worker until no message is pending, started after the messages
/// were queued so that it claims them as one batch.
async fn deliver_in_one_batch(app: &TestApp) -> Vec<crate::helpers::OutboxRow> {
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    let outbox = app.wait_for_outbox_to_settle().await;
    stop.cancel();
    worker.await.unwrap();
    outbox
}

#[tokio::test]
async fn a_batch_refused_with_422_for_one_bad_message_still_delivers_the_others() {
    const BAD: &str = "bounce@example.com";
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    Mock::given(path(EMAIL_API))
        .respond_with(|request: &wiremock::Request| {
            let batch: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
            if batch.iter().any(|message| message["To"] == BAD) {
                ResponseTemplate::new(422).set_body_json(serde_json::json!({
                    "ErrorCode": 300,
                    "Message": format!("Invalid 'To' address: '{BAD}'."),
                }))
            } else {
                accept_every_message(request)
            }
        })
        .mount(&app.email_server)
        .await;
    let good = ["ada@example.com", "grace@example.com", "joan@example.com"];
    subscribe_all(&app, &[good[0], BAD, good[1], good[2]]).await;

    let outbox = deliver_in_one_batch(&app).await;

    let requests: Vec<Vec<serde_json::Value>> = app
        .email_api_requests()
        .await
        .iter()
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect();
    assert_eq!(
        requests[0].len(),
        4,
        "the messages were not sent as one batch"
    );
    for message in &outbox {
        let sent_alone = requests[1..]
            .iter()
            .filter(|batch| batch.len() == 1 && batch[0]["To"] == message.recipient.as_str())
            .count();
        assert_eq!(sent_alone, 1, "{}", message.recipient);
        assert_eq!(message.attempts, 1, "{message:?}");
        if message.recipient == BAD {
            assert_eq!(message.status, "failed");
            let error = message.last_error.as_deref().unwrap();
            assert!(
                error.contains("422") && error.contains("invalid email request"),
                "{error}"
            );
        } else {
            assert_eq!(message.status, "sent", "{message:?}");
            assert_eq!(message.last_error, None);
        }
    }
}

#[tokio::test]
async fn a_message_refused_inside_a_batch_for_a_passing_reason_is_retried_and_one_refused_for_good_is_not()
 {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    // The rate limit (429) and a suspended account (405) refuse a message
    // the first time only; an inactive recipient (406) refuses it always.
    let refused_once = Arc::new(Mutex::new(HashSet::new()));
    Mock::given(path(EMAIL_API))
        .respond_with(move |request: &wiremock::Request| {
            answer_each_message(request, |message| {
                let to = message["To"].as_str().unwrap();
                match to {
                    "inactive@example.com" => 406,
                    "limited@example.com" | "suspended@example.com" => {
                        let first_time = refused_once.lock().unwrap().insert(to.to_owned());
                        match (first_time, to) {
                            (true, "limited@example.com") => 429,
                            (true, _) => 405,
                            (false, _) => 0,
                        }
                    }
                    _ => 0,
                }
            })
        })
        .mount(&app.email_server)
        .await;
    subscribe_all(
        &app,
        &[
            "limited@example.com",
            "inactive@example.com",
            "suspended@example.com",
            "fine@example.com",
        ],
    )
    .await;

    let outbox = deliver_in_one_batch(&app).await;

    let sent = app.sent_emails().await;
    for message in &outbox {
        let attempts_seen = sent
            .iter()
            .filter(|email| email["To"] == message.recipient.as_str())
            .count();
        // (status, attempts counted, times sent): the rate limit is not an
        // attempt, a suspended account is.
        let expected = match message.recipient.as_str() {
            "limited@example.com" => ("sent", 1, 2),
            "suspended@example.com" => ("sent", 2, 2),
            "inactive@example.com" => ("failed", 1, 1),
            _ => ("sent", 1, 1),
        };
        assert_eq!(
            (
                message.status.as_str(),
                message.attempts,
                attempts_seen as i32
            ),
            expected,
            "{message:?}"
        );
        let status = expected.0;
        if status == "failed" {
            let error = message.last_error.as_deref().unwrap();
            assert!(error.contains("406"), "{error}");
        } else {
            assert_eq!(message.last_error, None, "{message:?}");
        }
    }
}

#[tokio::test]
async fn a_failed_message_keeps_its_content_and_the_requeue_command_sends_it_again() {
    let app = spawn_app().await;
    Mock::given(path(EMAIL_API))
        .respond_with(|request: &wiremock::Request| answer_each_message(request, |_| 406))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&app.email_server)
        .await;
    app.mock_email_api_ok().await;
    let outbox = subscribe_and_settle(&app).await;
    assert_eq!(outbox[0].status, "failed");
    assert!(outbox[0].has_body, "the failed message lost its content");

    let mut requeue = std::process::Command::new(env!("CARGO_BIN_EXE_newsletter"));
    requeue.args(["outbox", "requeue-failed"]).env(
        "APP_DATABASE__DATABASE_NAME",
        &app.settings.database.database_name,
    );
    let output = tokio::task::spawn_blocking(move || requeue.output())
        .await
        .unwrap()
        .unwrap();

    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        printed.contains("1 failed emails queued to be sent again."),
        "{printed}"
    );
    let outbox = app.wait_for_outbox_to_settle().await;
    assert_eq!(outbox[0].status, "sent");
    assert_eq!(outbox[0].attempts, 1, "the count of attempts starts again");
    let sent = app.sent_emails().await;
    assert_eq!(sent.len(), 2);
    for field in ["To", "Subject", "HtmlBody", "TextBody", "MessageStream"] {
        assert_eq!(sent[1][field], sent[0][field], "{field}");
    }
}

/// A claim is long enough for one send, but a refused batch is sent again
/// one message after another under that same claim. A message whose send
/// starts too late to end before the claim lapses can be claimed and sent
/// by another worker meanwhile: the worker must leave it to them.
#[tokio::test]
async fn a_refused_batch_sent_one_message_at_a_time_sends_none_twice_when_its_claim_runs_out() {
    const RECIPIENTS: [&str; 2] = ["ada@example.com", "grace@example.com"];
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    subscribe_all(&app, &RECIPIENTS).await;
    // The API refuses the batch at once, as it does when one message in it
    // is bad, and then takes its time over each message sent alone.
    let api = HeldEmailApi::start(
        |batch| batch.len() == 1,
        |batch| {
            if batch.len() > 1 {
                let refusal = serde_json::json!({ "ErrorCode": 300, "Message": "Invalid 'To'" });
                (422, refusal)
            } else {
                (
                    200,
                    serde_json::json!([{ "ErrorCode": 0, "Message": "OK" }]),
                )
            }
        },
    )
    .await;
    // Claims of 6 s and sends of at most 5 s: settings the app accepts.
    let mut settings = app.settings.clone();
    settings.delivery.sending.claim_timeout_seconds = 6;
    settings.email_client.timeout_milliseconds = 5_000;
    settings.email_client.base_url = api.uri.clone();
    let worker = delivery_worker_for(&settings).await;
    let stop_first = CancellationToken::new();
    let first = tokio::spawn(worker.run(stop_first.clone()));
    // The first message sent alone is answered once less of the claim is
    // left than a send may take, and well before the send times out.
    api.wait_for_requests(2).await;
    eventually("the claim to have less than a send's time left", || async {
        let left: f64 = sqlx::query_scalar(
            "SELECT min(extract(epoch FROM claimed_until - now()))::float8 FROM email_outbox",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (left < 4.5).then_some(())
    })
    .await;
    // Stopped now, the first worker claims nothing more once it is done.
    stop_first.cancel();
    api.release_one();
    eventually("every claim to lapse or end", || async {
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE claimed_until > now()")
                .fetch_one(&app.db_pool)
                .await
                .unwrap();
        (held == 0).then_some(())
    })
    .await;

    // Whatever the first worker left, a second one sends.
    deliver_in_one_batch(&app).await;
    api.release();
    first.await.unwrap();

    let sent_alone: Vec<serde_json::Value> = api
        .requests()
        .into_iter()
        .filter(|batch| batch.len() == 1)
        .flatten()
        .chain(app.sent_emails().await)
        .collect();
    for recipient in RECIPIENTS {
        let times = sent_alone.iter().filter(|m| m["To"] == recipient).count();
        assert_eq!(times, 1, "{recipient} was sent {times} times");
    }
}

/// Postgres's own timeouts cannot reach a worker whose connection went
/// dark: only a deadline on the worker's side ends its wait, as one does
/// for HTTP requests.
#[tokio::test]
async fn a_worker_whose_database_connections_go_dark_delivers_again_on_new_ones() {
    let proxy = TcpProxy::to_postgres().await;
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.database.transaction_timeout_milliseconds = 1_000;
        s.delivery.run_in_server = false;
    })
    .await;
    app.mock_email_api_ok().await;
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.delivery_worker().await.run(stop.clone()));
    subscribe_and_settle(&app).await;

    // The worker's connections stop answering, as after a failover to a
    // server that took over the address; new connections reach Postgres.
    proxy.freeze_open_connections();
    // Queued meanwhile, on a connection of another instance.
    let recipient = "ada@example.com";
    sqlx::query(
        "INSERT INTO email_outbox (id, recipient, subject, html_body, text_body, message_stream) \
         VALUES (gen_random_uuid(), $1, 'Hello', '<p>Hello</p>', 'Hello', 'outbound')",
    )
    .bind(recipient)
    .execute(&app.db_pool)
    .await
    .unwrap();

    // Each silent connection the worker meets costs it up to the work
    // timeout, and closing it up to sqlx's close timeout, before the pool
    // holds only live ones: seconds (about eight on an idle machine), where
    // the kernel would never notice, since the proxy's end still
    // acknowledges every byte. The deadline leaves room for a loaded one.
    let sent = app.wait_for_emails_within(Duration::from_secs(90), 2).await;
    assert_eq!(sent[1]["To"], recipient);
    proxy.thaw();
    stop.cancel();
    worker.await.unwrap();
}
