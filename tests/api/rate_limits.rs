//! Abuse protection against a real Redis. Every test has its own key prefix
//! (set by `spawn_app`, or by `limiter_with_address_burst` for the tests of a
//! limiter alone), so tests never share a budget unless they mean to.

use std::time::Duration;

use newsletter::configuration::{LimitSettings, RateLimitSettings, Settings, get_configuration};
use newsletter::domain::SubscriberEmail;
use newsletter::rate_limit::RateLimiter;
use newsletter::rate_limit::SubscriptionDecision::{self, AddressLimited, Allowed};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::admin::{enrol, secret_on, submit_code};
use crate::helpers::{BROWSER_ACCEPT, RedisKeys, TcpProxy, TestApp, eventually, spawn_app_with};
use crate::newsroom::{Browser, PASSWORD, create_admin, hidden_csrf_token, location};

fn tight(burst: u32) -> LimitSettings {
    LimitSettings {
        burst,
        per_period: 1,
        period_seconds: 600,
    }
}

fn per_ip(burst: u32) -> impl FnOnce(&mut Settings) {
    move |s| s.rate_limit.per_ip = tight(burst)
}

fn confirm_per_ip(burst: u32) -> impl FnOnce(&mut Settings) {
    move |s| s.rate_limit.confirm_per_ip = tight(burst)
}

fn subscriber(i: usize) -> String {
    format!("name=Reader&email=reader{i}%40example.com")
}

/// The status a subscription attempt is answered with.
async fn subscribe_status(app: &TestApp, body: impl Into<String>) -> u16 {
    app.post_subscriptions(body).await.status().as_u16()
}

/// Reads a key of the app's straight from Redis (not through any proxy).
async fn redis_value(app: &TestApp, key_suffix: &str) -> Option<String> {
    let redis_uri = get_configuration().unwrap().redis_uri;
    let client = redis::Client::open(redis_uri.expose_secret()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET")
        .arg(format!(
            "{}{key_suffix}",
            app.settings.rate_limit.key_prefix
        ))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_over_the_per_ip_limit_gets_429_with_retry_after_and_nothing_is_stored() {
    let app = spawn_app_with(per_ip(2)).await;
    app.mock_email_api_ok().await;

    let first = app.post_subscriptions(subscriber(1)).await;
    let second = app.post_subscriptions(subscriber(2)).await;
    let third = app.post_subscriptions(subscriber(3)).await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(third.status().as_u16(), 429);
    let retry_after: u64 = third.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=600).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_eq!(app.subscriber_count().await, 2);
    assert_eq!(app.outbox().await.len(), 2);
}

#[tokio::test]
async fn refused_forms_and_honeypot_hits_count_against_the_client_too() {
    let app = spawn_app_with(per_ip(3)).await;
    app.mock_email_api_ok().await;

    let statuses = [
        subscribe_status(&app, "name=&email=not-an-address").await,
        subscribe_status(&app, format!("{}&website=spam.example", subscriber(1))).await,
        subscribe_status(&app, subscriber(2)).await,
        subscribe_status(&app, subscriber(3)).await,
    ];

    assert_eq!(statuses, [400, 200, 200, 429]);
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn the_confirmation_endpoint_is_limited_per_ip_too() {
    let app = spawn_app_with(confirm_per_ip(2)).await;
    let unknown = unknown_token();

    let statuses = [
        app.get_confirm(&unknown).await.status().as_u16(),
        app.get_confirm(&unknown).await.status().as_u16(),
        app.get_confirm(&unknown).await.status().as_u16(),
    ];

    assert_eq!(statuses, [401, 401, 429]);
}

#[tokio::test]
async fn past_the_per_address_limit_the_answer_is_unchanged_but_no_email_is_sent() {
    let app = spawn_app_with(|s| s.rate_limit.per_address = tight(2)).await;
    app.mock_email_api_ok().await;
    let body = "name=Victim&email=victim%40example.com";

    let mut answers = Vec::new();
    for _ in 0..4 {
        let response = app.post_subscriptions(body).await;
        answers.push((
            response.status().as_u16(),
            response.headers().get("content-length").cloned(),
            response.bytes().await.unwrap(),
        ));
    }

    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "the answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, 200);
    assert_eq!(
        app.outbox().await.len(),
        2,
        "more than 2 emails were queued"
    );
}

#[tokio::test]
async fn a_sign_up_that_fails_to_store_does_not_spend_the_address_budget() {
    let app = spawn_app_with(|s| s.rate_limit.per_address = tight(1)).await;
    app.mock_email_api_ok().await;
    // Postgres refuses every sign-up until the constraint goes.
    sqlx::query("ALTER TABLE subscriptions ADD CONSTRAINT refuse_all CHECK (false) NOT VALID")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let body = "name=Ada&email=ada%40example.com";

    for attempt in 1..=3 {
        let status = subscribe_status(&app, body).await;
        assert!(status >= 500, "attempt {attempt} was answered {status}");
    }
    sqlx::query("ALTER TABLE subscriptions DROP CONSTRAINT refuse_all")
        .execute(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(subscribe_status(&app, body).await, 200);

    assert_eq!(
        app.outbox().await.len(),
        1,
        "the confirmation was not queued"
    );
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn the_per_address_limit_ignores_letter_case() {
    let app = spawn_app_with(|s| s.rate_limit.per_address = tight(1)).await;
    app.mock_email_api_ok().await;

    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    app.post_subscriptions("name=Ada&email=ADA%40Example.com")
        .await;

    assert_eq!(app.outbox().await.len(), 1);
}

#[tokio::test]
async fn the_per_address_limit_counts_mailboxes_not_spellings() {
    let app = spawn_app_with(|s| s.rate_limit.per_address = tight(1)).await;
    app.mock_email_api_ok().await;

    for address in [
        "victim%2B1%40example.com",
        "Victim%2Bnews%40Example.com",
        "victim%40example.com",
        "v.i.c.t.i.m%40gmail.com",
        "victim%2Bspam%40googlemail.com",
        "VICTIM%40gmail.com",
    ] {
        let status = subscribe_status(&app, format!("name=Ada&email={address}")).await;
        assert_eq!(status, 200, "{address}");
    }

    let mut recipients: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .map(|row| row.recipient)
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        ["v.i.c.t.i.m@gmail.com", "victim+1@example.com"],
        "one email per mailbox, to the address as typed"
    );
}

/// A limiter of a test's own on the real Redis, with a per-address burst of
/// `burst`, and a timeout long enough that no check falls back to the
/// in-process limits (which cannot refund). Its keys go when the guard does.
async fn limiter_with_address_burst(burst: u32) -> (RateLimiter, RedisKeys) {
    let configuration = get_configuration().unwrap();
    let mut settings = configuration.rate_limit;
    settings.key_prefix = format!("test:{}:", Uuid::new_v4().simple());
    settings.redis_timeout_milliseconds = 5_000;
    settings.per_address = tight(burst);
    let keys = RedisKeys {
        uri: configuration.redis_uri.clone(),
        prefix: settings.key_prefix.clone(),
    };
    let limiter = RateLimiter::new(&configuration.redis_uri, &settings).unwrap();
    assert!(
        limiter.ping_redis(Duration::from_secs(10)).await,
        "Redis does not answer"
    );
    (limiter, keys)
}

/// The per-address decisions for `email`, one check after another.
async fn address_checks(
    limiter: &RateLimiter,
    email: &SubscriberEmail,
    n: usize,
) -> Vec<SubscriptionDecision> {
    let mut decisions = Vec::new();
    for _ in 0..n {
        decisions.push(limiter.check_subscription(None, Some(email)).await);
    }
    decisions
}

#[tokio::test]
async fn a_refund_gives_back_what_the_last_allowed_check_charged() {
    let (limiter, _keys) = limiter_with_address_burst(1).await;
    let email = SubscriberEmail::parse("victim@example.com").unwrap();

    let before = address_checks(&limiter, &email, 2).await;
    limiter.refund_address(&email).await;
    let after = address_checks(&limiter, &email, 2).await;

    assert_eq!(before, [Allowed, AddressLimited]);
    assert_eq!(after, [Allowed, AddressLimited]);
}

#[tokio::test]
async fn a_check_then_a_refund_leaves_the_budget_as_it_was() {
    let (limiter, _keys) = limiter_with_address_burst(1).await;
    let email = SubscriberEmail::parse("victim@example.com").unwrap();

    assert_eq!(address_checks(&limiter, &email, 1).await, [Allowed]);
    limiter.refund_address(&email).await;

    assert_eq!(
        address_checks(&limiter, &email, 2).await,
        [Allowed, AddressLimited]
    );
}

#[tokio::test]
async fn refunds_never_grant_more_than_the_burst() {
    let (limiter, _keys) = limiter_with_address_burst(2).await;
    let untouched = SubscriberEmail::parse("untouched@example.com").unwrap();
    let charged_once = SubscriberEmail::parse("charged@example.com").unwrap();

    for _ in 0..3 {
        limiter.refund_address(&untouched).await;
    }
    address_checks(&limiter, &charged_once, 1).await;
    for _ in 0..3 {
        limiter.refund_address(&charged_once).await;
    }

    for email in [&untouched, &charged_once] {
        assert_eq!(
            address_checks(&limiter, email, 3).await,
            [Allowed, Allowed, AddressLimited],
            "{email}"
        );
    }
}

#[tokio::test]
async fn a_refund_goes_to_the_mailbox_whatever_the_spelling() {
    let (limiter, _keys) = limiter_with_address_burst(1).await;
    let typed = SubscriberEmail::parse("V.ictim+news@gmail.com").unwrap();
    let other_spelling = SubscriberEmail::parse("victim@googlemail.com").unwrap();

    assert_eq!(address_checks(&limiter, &typed, 1).await, [Allowed]);
    limiter.refund_address(&typed).await;

    assert_eq!(
        address_checks(&limiter, &other_spelling, 2).await,
        [Allowed, AddressLimited]
    );
}

#[tokio::test]
async fn without_redis_a_refund_gives_nothing_back_and_the_limit_still_holds() {
    let mut settings = get_configuration().unwrap().rate_limit;
    settings.per_address = tight(1);
    // Nothing listens on port 1.
    let limiter = RateLimiter::new(&"redis://127.0.0.1:1".to_owned().into(), &settings).unwrap();
    let email = SubscriberEmail::parse("victim@example.com").unwrap();

    let before = address_checks(&limiter, &email, 1).await;
    tokio::time::timeout(Duration::from_secs(5), limiter.refund_address(&email))
        .await
        .expect("the refund waited past its timeout");
    let after = address_checks(&limiter, &email, 1).await;

    assert_eq!(before, [Allowed]);
    assert_eq!(after, [AddressLimited], "the in-process limit was undone");
}

#[tokio::test]
async fn a_filled_honeypot_gets_the_normal_answer_and_nothing_is_stored_or_sent() {
    let app = spawn_app_with(|_| {}).await;
    app.mock_email_api_ok().await;

    let bot = app
        .post_subscriptions("name=Bot&email=victim%40example.com&website=http%3A%2F%2Fspam.example")
        .await;
    let person = app
        .post_subscriptions("name=Ada&email=ada%40example.com&website=")
        .await;

    assert_eq!(bot.status().as_u16(), 200);
    assert_eq!(person.status().as_u16(), 200);
    assert_eq!(app.subscriber_count().await, 1, "the bot was stored");
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].recipient, "ada@example.com");
}

#[tokio::test]
async fn the_forwarding_header_of_a_trusted_proxy_decides_the_client() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = tight(1);
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    app.mock_email_api_ok().await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];

    let a = app
        .post_subscriptions_with(subscriber(1), &from("203.0.113.1"))
        .await;
    let b = app
        .post_subscriptions_with(subscriber(2), &from("203.0.113.2"))
        .await;
    let a_again = app
        .post_subscriptions_with(subscriber(3), &from("203.0.113.1"))
        .await;

    assert_eq!(a.status().as_u16(), 200);
    assert_eq!(b.status().as_u16(), 200, "two clients shared a budget");
    assert_eq!(a_again.status().as_u16(), 429);
}

#[tokio::test]
async fn a_forwarding_header_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = tight(1);
        s.rate_limit.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    app.mock_email_api_ok().await;

    let first = app
        .post_subscriptions_with(subscriber(1), &[("X-Forwarded-For", "203.0.113.1")])
        .await;
    let spoofed = app
        .post_subscriptions_with(subscriber(2), &[("X-Forwarded-For", "203.0.113.2")])
        .await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(
        spoofed.status().as_u16(),
        429,
        "a forged header bought a new budget"
    );
}

#[tokio::test]
async fn two_instances_share_one_budget_through_redis() {
    let first = spawn_app_with(per_ip(2)).await;
    let prefix = first.settings.rate_limit.key_prefix.clone();
    let second = spawn_app_with(move |s| {
        s.rate_limit.per_ip = tight(2);
        s.rate_limit.key_prefix = prefix;
    })
    .await;
    first.mock_email_api_ok().await;
    second.mock_email_api_ok().await;

    let statuses = [
        subscribe_status(&first, subscriber(1)).await,
        subscribe_status(&second, subscriber(2)).await,
        subscribe_status(&first, subscriber(3)).await,
        subscribe_status(&second, subscriber(4)).await,
    ];

    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test]
async fn with_redis_gone_the_app_keeps_answering_and_returns_to_redis_when_it_is_back() {
    let proxy = TcpProxy::to_redis().await;
    let app = spawn_app_with(|s| {
        s.redis_uri = format!("redis://127.0.0.1:{}", proxy.port).into();
        s.rate_limit.per_ip = LimitSettings {
            burst: 1_000,
            per_period: 1,
            period_seconds: 600,
        };
    })
    .await;
    app.mock_email_api_ok().await;
    let key = "rl:ip:127.0.0.1";
    // The app connects to Redis lazily: on a busy machine the very first
    // check can miss its timeout and be made in process instead.
    let before_outage = eventually("the limit to be kept in Redis", || async {
        assert_eq!(subscribe_status(&app, subscriber(0)).await, 200);
        redis_value(&app, key).await
    })
    .await;

    proxy.cut();
    for i in 1..=5 {
        let response = app.post_subscriptions(subscriber(i)).await;
        assert_eq!(
            response.status().as_u16(),
            200,
            "request {i} during the outage"
        );
    }
    assert_eq!(
        redis_value(&app, key).await.as_ref(),
        Some(&before_outage),
        "Redis was written through a cut connection"
    );
    proxy.restore();

    let attempt = std::sync::atomic::AtomicUsize::new(100);
    eventually("the limits to be back on Redis", || {
        let body = subscriber(attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let app = &app;
        let before_outage = before_outage.clone();
        async move {
            assert_eq!(subscribe_status(app, body).await, 200);
            (redis_value(app, key).await != Some(before_outage)).then_some(())
        }
    })
    .await;
}

/// An app whose Redis is unreachable from the start (nothing listens on
/// port 1), with a per-IP burst of 2.
async fn app_without_redis() -> TestApp {
    let app = spawn_app_with(|s| {
        s.redis_uri = "redis://127.0.0.1:1".to_owned().into();
        s.rate_limit.per_ip = tight(2);
    })
    .await;
    app.mock_email_api_ok().await;
    app
}

#[tokio::test]
async fn with_redis_unreachable_from_the_start_limits_still_apply_in_process() {
    let app = app_without_redis().await;

    let statuses = [
        subscribe_status(&app, subscriber(1)).await,
        subscribe_status(&app, subscriber(2)).await,
        subscribe_status(&app, subscriber(3)).await,
    ];

    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn without_redis_the_limits_are_shared_by_every_worker_thread_of_the_server() {
    let app = app_without_redis().await;
    // A new connection for every request: the server hands new connections
    // to its worker threads in turn.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    let mut statuses = Vec::new();
    for i in 1..=4 {
        let response = client
            .post(format!("{}/subscriptions", app.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(subscriber(i))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }

    assert_eq!(statuses, [200, 200, 429, 429]);
}

/// A token of the right shape that names no sign-up.
fn unknown_token() -> String {
    format!("?subscription_token={}", "A".repeat(32))
}

/// `GET` or `POST` the confirmation endpoint as a browser or as an API
/// client does, with a token that names no sign-up.
async fn click_confirmation(app: &TestApp, method: &str, accept: &str) -> reqwest::Response {
    let url = format!("{}/subscriptions/confirm", app.address);
    let request = match method {
        "GET" => app.api_client.get(format!("{url}{}", unknown_token())),
        "POST" => app
            .api_client
            .post(url)
            .form(&[("subscription_token", "A".repeat(32))]),
        other => panic!("no confirmation by {other}"),
    };
    request.header("Accept", accept).send().await.unwrap()
}

/// The seconds a refusal says to wait.
fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Checks `response` is the site's page for going too fast, saying when to
/// come back: with a one-a-600-seconds budget, in ten minutes.
async fn assert_styled_too_many_requests_page(response: reqwest::Response, case: &str) {
    assert_eq!(response.status().as_u16(), 429, "{case}");
    // The body depends on Accept: caches must know.
    assert_eq!(response.headers()["Vary"], "Accept", "{case}");
    assert!(
        (541..=600).contains(&retry_after(&response)),
        "{case}: Retry-After {}",
        retry_after(&response)
    );
    let content_type = response.headers()["Content-Type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/html"),
        "{case}: {content_type}"
    );
    assert!(
        response.headers().contains_key("Content-Security-Policy"),
        "{case}: the page came without the headers every answer gets"
    );
    let page = response.text().await.unwrap();
    for expected in [
        r#"<link rel="stylesheet" href="/style.css">"#,
        r#"<header class="masthead">"#,
        "<h1>Too many requests</h1>",
        "Try again in 10 minutes.",
    ] {
        assert!(page.contains(expected), "{case}: {expected} not in {page}");
    }
}

/// Checks `response` is the plain-text refusal an API client gets.
async fn assert_plain_too_many_requests(response: reqwest::Response, case: &str) {
    assert_eq!(response.status().as_u16(), 429, "{case}");
    // The body depends on Accept: caches must know.
    assert_eq!(response.headers()["Vary"], "Accept", "{case}");
    assert!((541..=600).contains(&retry_after(&response)), "{case}");
    let content_type = response.headers()["Content-Type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain"),
        "{case}: {content_type}"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "Too many requests. Try again in 10 minutes.",
        "{case}"
    );
}

#[tokio::test]
async fn spending_the_sign_up_budget_does_not_refuse_a_confirmation_click() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = tight(1);
        s.rate_limit.confirm_per_ip = tight(2);
    })
    .await;
    app.mock_email_api_ok().await;
    assert_eq!(subscribe_status(&app, subscriber(1)).await, 200);
    assert_eq!(subscribe_status(&app, subscriber(2)).await, 429);

    let email = app.wait_for_emails(1).await.remove(0);
    let link = app.confirmation_links(&email).html;
    let confirmed = app.click(&link).await;

    assert_eq!(confirmed.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn spending_the_confirmation_budget_does_not_refuse_a_sign_up() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = tight(1);
        s.rate_limit.confirm_per_ip = tight(1);
    })
    .await;
    app.mock_email_api_ok().await;
    let clicks = [
        app.get_confirm(&unknown_token()).await.status().as_u16(),
        app.get_confirm(&unknown_token()).await.status().as_u16(),
    ];
    assert_eq!(clicks, [401, 429]);

    assert_eq!(subscribe_status(&app, subscriber(1)).await, 200);
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn a_browser_over_the_sign_up_limit_gets_a_styled_page_saying_when_to_try_again() {
    let app = spawn_app_with(per_ip(1)).await;
    app.mock_email_api_ok().await;
    assert_eq!(app.submit_form(subscriber(1)).await.status().as_u16(), 200);

    let refused = app.submit_form(subscriber(2)).await;

    assert_styled_too_many_requests_page(refused, "sign-up").await;
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn a_browser_over_the_confirmation_limit_gets_the_styled_page_whether_it_opens_or_presses() {
    let app = spawn_app_with(confirm_per_ip(1)).await;
    let first = click_confirmation(&app, "GET", BROWSER_ACCEPT).await;
    assert_eq!(first.status().as_u16(), 401);

    for method in ["GET", "POST"] {
        let refused = click_confirmation(&app, method, BROWSER_ACCEPT).await;
        assert_styled_too_many_requests_page(refused, method).await;
    }
}

#[tokio::test]
async fn an_api_client_over_either_limit_gets_plain_text_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_ip = tight(1);
        s.rate_limit.confirm_per_ip = tight(1);
    })
    .await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(subscriber(1)).await;
    click_confirmation(&app, "GET", "*/*").await;

    let sign_up = app.post_subscriptions(subscriber(2)).await;
    let opened = click_confirmation(&app, "GET", "*/*").await;
    let pressed = click_confirmation(&app, "POST", "application/json").await;

    assert_plain_too_many_requests(sign_up, "sign-up").await;
    assert_plain_too_many_requests(opened, "opened link").await;
    assert_plain_too_many_requests(pressed, "pressed button").await;
}

/// Sign-in budgets of `burst` at once, then one an hour: the account's
/// (which each remembered browser and each session's password re-checks
/// also get) and the address's.
fn sign_in_budgets(burst: u32) -> impl FnOnce(&mut Settings) {
    move |s| {
        let limit = LimitSettings {
            burst,
            per_period: 1,
            period_seconds: 3600,
        };
        s.rate_limit.login_per_account = limit;
        s.rate_limit.login_per_ip = limit;
    }
}

#[tokio::test]
async fn right_passwords_spend_no_sign_in_budget_and_wrong_ones_still_do() {
    let app = spawn_app_with(sign_in_budgets(2)).await;
    create_admin(&app, "ada", PASSWORD).await;
    for attempt in 1..=5 {
        let new_browser = Browser::new(&app).log_in("ada", PASSWORD).await;
        assert_eq!(new_browser.status().as_u16(), 303, "sign-in {attempt}");
    }

    let guesses = [
        Browser::new(&app).log_in("ada", "not the password").await,
        Browser::new(&app).log_in("ada", "not the password").await,
        Browser::new(&app).log_in("ada", "not the password").await,
    ];

    let statuses: Vec<u16> = guesses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [401, 401, 429]);
    let [.., refused] = guesses;
    assert!((1..=3600).contains(&retry_after(&refused)));
    let page = refused.text().await.unwrap();
    assert!(
        page.contains("Too many sign-in attempts. Try again in 1 hour."),
        "{page}"
    );
}

#[tokio::test]
async fn the_right_password_with_an_enrolment_code_not_yet_right_spends_no_password_budget() {
    let app = spawn_app_with(sign_in_budgets(2)).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let second = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page = browser.get("/admin/totp").await.text().await.unwrap();
    let token = hidden_csrf_token(&page);
    for attempt in 1..=4 {
        let fields = [
            ("code", "000000x"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ];
        let wrong_code = browser.post("/admin/totp", &fields).await;
        assert_eq!(wrong_code.status().as_u16(), 400, "attempt {attempt}");
    }
    let (_, _, recovery_codes) = enrol(&browser).await;
    assert_eq!(recovery_codes.len(), 10);

    // Wrong passwords still spend a session's budget.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        let response = second
            .change_password("not the password", "a new passphrase here")
            .await;
        statuses.push(response.status().as_u16());
        refused = Some(response);
    }
    assert_eq!(statuses, [400, 400, 429]);
    let refused = refused.unwrap();
    let page = refused.text().await.unwrap();
    assert!(
        page.contains("Too many attempts. Try again in 1 hour."),
        "{page}"
    );
}

#[tokio::test]
async fn signing_in_again_and_again_with_a_second_factor_spends_no_budget() {
    let app = spawn_app_with(sign_in_budgets(2)).await;
    create_admin(&app, "ada", PASSWORD).await;
    let (_, _, recovery_codes) = enrol(&Browser::signed_in(&app, "ada", PASSWORD).await).await;

    for code in &recovery_codes[..5] {
        let browser = Browser::new(&app);
        let password_step = browser.log_in("ada", PASSWORD).await;
        assert_eq!(location(&password_step), "/login/code", "{code}");
        let code_step = submit_code(&browser, code).await;
        assert_eq!(location(&code_step), "/admin/dashboard", "{code}");
    }
}

#[tokio::test]
async fn with_the_password_but_not_the_code_each_sign_in_still_spends_the_budget() {
    // Burst 2: the right password (held, not given back) and one wrong code.
    let app = spawn_app_with(sign_in_budgets(2)).await;
    create_admin(&app, "ada", PASSWORD).await;
    enrol(&Browser::signed_in(&app, "ada", PASSWORD).await).await;

    let browser = Browser::new(&app);
    let password_step = browser.log_in("ada", PASSWORD).await;
    assert_eq!(location(&password_step), "/login/code");
    let wrong = submit_code(&browser, "000000").await;
    assert_eq!(wrong.status().as_u16(), 401);

    // Had the right password been free, the budget would have room for
    // another sign-in and its guesses.
    let again = Browser::new(&app).log_in("ada", PASSWORD).await;
    assert_eq!(
        again.status().as_u16(),
        429,
        "the password step gave its charge back before the code was right"
    );
}

/// Settings with the limits of `configuration/local.yaml`, as a person
/// running the service on their machine has them (the tests' own are
/// roomier still), on this test's keys.
fn local_limits(s: &mut Settings) {
    let local = get_configuration().unwrap().rate_limit;
    s.rate_limit = RateLimitSettings {
        key_prefix: s.rate_limit.key_prefix.clone(),
        redis_timeout_milliseconds: s.rate_limit.redis_timeout_milliseconds,
        ..local
    };
}

#[tokio::test]
async fn locally_a_person_signs_in_again_and_again_enrols_and_subscribes_a_dozen_times_unrefused() {
    let app = spawn_app_with(local_limits).await;
    app.mock_email_api_ok().await;
    create_admin(&app, "ada", PASSWORD).await;

    // Eight sign-ins from new browsers (private windows, curl), then eight
    // with one browser, signing out in between.
    for attempt in 1..=8 {
        let response = Browser::new(&app).log_in("ada", PASSWORD).await;
        assert_eq!(
            response.status().as_u16(),
            303,
            "new browser, sign-in {attempt}"
        );
    }
    let browser = Browser::new(&app);
    for attempt in 1..=8 {
        let response = browser.log_in("ada", PASSWORD).await;
        assert_eq!(
            response.status().as_u16(),
            303,
            "one browser, sign-in {attempt}"
        );
        browser.submit("/admin/logout", &[]).await;
    }
    browser.log_in("ada", PASSWORD).await;
    // A code typed from the wrong account in the app, then the right one.
    let page = browser.get("/admin/totp").await.text().await.unwrap();
    let wrong_code = browser
        .post(
            "/admin/totp",
            &[
                ("code", "000000x"),
                ("password", PASSWORD),
                ("csrf_token", &hidden_csrf_token(&page)),
            ],
        )
        .await;
    assert_eq!(wrong_code.status().as_u16(), 400);
    let (secret, _, _) = enrol(&browser).await;
    assert_eq!(
        secret.as_bytes(),
        secret_on(&page).as_bytes(),
        "the secret scanned first is the one enrolled"
    );

    // A dozen people (or one person, a dozen times) subscribe, confirm and
    // subscribe again, from one address.
    for reader in 1..=12 {
        let body = format!("name=Reader&email=reader{reader}%40example.com");
        assert_eq!(
            app.submit_form(&body).await.status().as_u16(),
            200,
            "reader {reader}"
        );
        let email = app.wait_for_emails(2 * reader - 1).await.pop().unwrap();
        let link = app.local(&app.confirmation_links(&email).html);
        assert_eq!(
            app.browse(link).await.status().as_u16(),
            200,
            "reader {reader}"
        );
        let again = app.submit_form(body).await;
        assert_eq!(again.status().as_u16(), 200, "reader {reader} again");
        app.wait_for_emails(2 * reader).await;
    }
}
