use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    BASE_URL, EMAIL_API, TcpProxy, accept_every_message, eventually, spawn_app, spawn_app_with,
};

const VALID_BODY: &str = "name=le%20guin&email=ursula_le_guin%40gmail.com";

#[tokio::test]
async fn subscribe_returns_200_and_stores_a_pending_subscriber_for_valid_form_data() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let response = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(response.status().as_u16(), 200);
    let (email, name, status): (String, String, String) =
        sqlx::query_as("SELECT email, name, status FROM subscriptions")
            .fetch_one(&app.db_pool)
            .await
            .expect("no subscriber was stored");
    assert_eq!(email, "ursula_le_guin@gmail.com");
    assert_eq!(name, "le guin");
    assert_eq!(status, "pending_confirmation");
}

#[tokio::test]
async fn subscribe_stores_trimmed_name_and_email() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let response = app
        .post_subscriptions("name=%20%20Ursula%20&email=%20ursula%40example.com%09")
        .await;

    assert_eq!(response.status().as_u16(), 200);
    let (email, name): (String, String) = sqlx::query_as("SELECT email, name FROM subscriptions")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(
        (email.as_str(), name.as_str()),
        ("ursula@example.com", "Ursula")
    );
}

#[tokio::test]
async fn subscribe_returns_400_with_a_reason_for_invalid_or_missing_fields() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let long_name = "a".repeat(257);
    let cases = [
        ("name=le%20guin", "missing email"),
        ("email=ursula_le_guin%40gmail.com", "missing name"),
        ("", "missing both name and email"),
        ("name=&email=ursula_le_guin%40gmail.com", "empty name"),
        (
            "name=%20%20&email=ursula_le_guin%40gmail.com",
            "whitespace-only name",
        ),
        ("name=Ursula&email=", "empty email"),
        (
            "name=Ursula&email=definitely-not-an-email",
            "email without @",
        ),
        (
            "name=Ursula&email=ursula%40localhost",
            "email without a top-level domain",
        ),
        (
            "name=Ursula&email=Ursula%20%3Cursula%40example.com%3E",
            "email with a display name",
        ),
        (
            "name=%3Cscript%3E&email=ursula%40example.com",
            "name with markup characters",
        ),
        (
            "name=a%7Bb%7D&email=ursula%40example.com",
            "name with braces",
        ),
        (
            &format!("name={long_name}&email=ursula%40example.com"),
            "name over 256 characters",
        ),
    ];

    for (body, case) in cases {
        let response = app.post_subscriptions(body).await;

        let status = response.status().as_u16();
        let reason = response.text().await.unwrap();
        assert_eq!(status, 400, "case `{case}` answered {status}: {reason}");
        assert!(!reason.trim().is_empty(), "case `{case}` gave no reason");
    }
    assert_eq!(
        app.subscriber_count().await,
        0,
        "an invalid form stored a subscriber"
    );
    assert!(
        app.sent_emails().await.is_empty(),
        "an invalid form sent an email"
    );
}

#[tokio::test]
async fn subscribe_names_the_problem_in_the_reason() {
    let app = spawn_app().await;

    let missing = app
        .post_subscriptions("name=Ursula")
        .await
        .text()
        .await
        .unwrap();
    let bad_email = app
        .post_subscriptions("name=Ursula&email=nope")
        .await
        .text()
        .await
        .unwrap();

    assert!(missing.contains("email"), "{missing}");
    assert!(
        bad_email.contains("'nope' is not a valid email address"),
        "{bad_email}"
    );
}

#[tokio::test]
async fn control_and_invisible_characters_get_400_naming_the_character_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let name = |n: &str| format!("name={n}&email=ursula%40example.com");
    let email = |e: &str| format!("name=Ursula&email={e}");
    let cases = [
        (name("Ursula%00Le%20Guin"), "U+0000", "NUL in the name"),
        (name("Ursula%0D%0ALe%20Guin"), "U+000D", "CR LF in the name"),
        (
            name("Ursula%E2%80%AEniuG"),
            "U+202E",
            "bidi override in the name",
        ),
        (
            name("Ursula%E2%80%8BLe%20Guin"),
            "U+200B",
            "zero width space in the name",
        ),
        (
            email("ursula%00%40example.com"),
            "U+0000",
            "NUL in the email",
        ),
        (
            email("ursula%40example.com%0D%0ABcc%3A%20victim%40example.com"),
            "U+000D",
            "CR LF in the email",
        ),
        (
            email("ursula%40%E2%80%AEmoc.elpmaxe"),
            "U+202E",
            "bidi override in the email",
        ),
        (
            email("urs%E2%80%8Bula%40example.com"),
            "U+200B",
            "zero width space in the email",
        ),
    ];

    for (body, code_point, case) in cases {
        let response = app.post_subscriptions(body).await;

        let status = response.status().as_u16();
        let reason = response.text().await.unwrap();
        assert_eq!(status, 400, "case `{case}` answered {status}: {reason}");
        assert!(
            reason.contains("must not contain") && reason.contains(code_point),
            "case `{case}` gave the reason {reason:?}"
        );
    }
    assert_eq!(app.subscriber_count().await, 0, "a subscriber was stored");
    assert!(app.outbox().await.is_empty(), "an email was queued");
}

#[tokio::test]
async fn a_name_with_a_link_gets_400_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let cases = [
        ("http%3A%2F%2Fspam.example", "a scheme"),
        ("Win%20at%20www.spam.example", "a www. host"),
        ("Cheap%20pills%20at%20pills.shop", "a domain name"),
        ("bit.ly%2Fx", "a short link"),
    ];

    for (name, case) in cases {
        let response = app
            .post_subscriptions(format!("name={name}&email=victim%40example.com"))
            .await;

        let status = response.status().as_u16();
        let reason = response.text().await.unwrap();
        assert_eq!(status, 400, "case `{case}` answered {status}: {reason}");
        assert!(
            reason.contains("must not contain a link"),
            "case `{case}` gave the reason {reason:?}"
        );
    }
    assert_eq!(app.subscriber_count().await, 0, "a subscriber was stored");
    assert!(app.outbox().await.is_empty(), "an email was queued");
}

#[tokio::test]
async fn names_with_dots_that_are_not_links_are_accepted() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    for (i, name) in ["J.R.R.%20Tolkien", "Mr.Smith", "Dr.%20Jane%20Doe"]
        .into_iter()
        .enumerate()
    {
        let response = app
            .post_subscriptions(format!("name={name}&email=reader{i}%40example.com"))
            .await;

        assert_eq!(response.status().as_u16(), 200, "{name}");
    }
    assert_eq!(app.subscriber_count().await, 3);
}

#[tokio::test]
async fn subscribe_returns_413_for_a_body_over_the_limit() {
    let app = spawn_app().await;
    let body = format!("name={}&email=ursula%40example.com", "a".repeat(10_000));

    let response = app.post_subscriptions(body).await;

    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(app.subscriber_count().await, 0);
}

#[tokio::test]
async fn subscribe_returns_415_for_a_json_body() {
    let app = spawn_app().await;

    let response = app
        .api_client
        .post(format!("{}/subscriptions", app.address))
        .header("Content-Type", "application/json")
        .body(r#"{"name":"Ursula","email":"ursula@example.com"}"#)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 415);
    assert!(!response.text().await.unwrap().is_empty());
}

#[tokio::test]
async fn subscribe_sends_a_confirmation_email_to_the_subscriber() {
    let app = spawn_app().await;
    Mock::given(path(EMAIL_API))
        .and(method("POST"))
        .respond_with(accept_every_message)
        .expect(1)
        .mount(&app.email_server)
        .await;

    app.post_subscriptions(VALID_BODY).await;

    let emails = app.wait_for_emails(1).await;
    let body = &emails[0];
    assert_eq!(body["To"], "ursula_le_guin@gmail.com");
    assert_eq!(
        body["Subject"],
        format!(
            "Please confirm your subscription to {}",
            app.settings.newsletter.title
        )
    );
    assert_eq!(body["MessageStream"], "outbound");
    assert_eq!(
        app.email_api_requests().await[0]
            .headers
            .get("X-Postmark-Server-Token")
            .unwrap(),
        "test-token"
    );
}

#[tokio::test]
async fn emails_name_the_configured_newsletter_and_come_from_its_quoted_sender_name() {
    let app = spawn_app_with(|s| {
        s.newsletter.title = "Rust <Weekly> & Co".into();
        s.newsletter.sender_name = r#"The "Rust" Desk"#.into();
    })
    .await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.click(&link).await;

    // A confirmation, then the notice to an address already confirmed.
    app.post_subscriptions(VALID_BODY).await;

    let from = format!(
        r#""The \"Rust\" Desk" <{}>"#,
        app.settings.email_client.sender_email
    );
    for (i, email) in app.wait_for_emails(2).await.iter().enumerate() {
        let field = |name: &str| email[name].as_str().unwrap().to_owned();
        assert_eq!(field("From"), from, "email {i}");
        assert!(
            field("Subject").ends_with(" to Rust <Weekly> & Co"),
            "email {i}"
        );
        assert!(
            field("HtmlBody").contains("Rust &#60;Weekly&#62; &#38; Co"),
            "email {i}: {}",
            field("HtmlBody")
        );
        assert!(!field("HtmlBody").contains("<Weekly>"), "email {i}");
        assert!(
            field("TextBody").contains("Rust <Weekly> & Co"),
            "email {i}: {}",
            field("TextBody")
        );
    }
}

#[tokio::test]
async fn the_confirmation_email_has_the_same_link_in_html_and_text() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    app.post_subscriptions(VALID_BODY).await;

    let emails = app.wait_for_emails(1).await;
    let links = app.confirmation_links(&emails[0]);
    assert_eq!(links.html, links.plain_text);
}

#[tokio::test]
async fn the_confirmation_link_starts_with_the_configured_base_url() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    app.post_subscriptions(VALID_BODY).await;

    let emails = app.wait_for_emails(1).await;
    let link = app.confirmation_links(&emails[0]).html;
    let prefix = format!("{BASE_URL}/subscriptions/confirm?subscription_token=");
    assert!(link.as_str().starts_with(&prefix), "{link}");
}

#[tokio::test]
async fn a_failure_after_the_first_insert_leaves_no_subscriber_behind() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    // Make the token insert, the second statement of the transaction, fail.
    sqlx::query("ALTER TABLE confirmation_tokens DROP COLUMN expires_at")
        .execute(&app.db_pool)
        .await
        .unwrap();

    let response = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(response.status().as_u16(), 500);
    assert_eq!(
        app.subscriber_count().await,
        0,
        "the subscriber insert was not rolled back"
    );
    assert!(app.outbox().await.is_empty(), "an email was queued anyway");
}

#[tokio::test]
async fn subscribe_answers_200_without_waiting_for_a_slow_email_api() {
    // The email API would answer after 30 s, far past the client's timeout.
    let app = spawn_app().await;
    Mock::given(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(30)))
        .mount(&app.email_server)
        .await;

    let response = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
    assert_eq!(
        app.outbox().await.len(),
        1,
        "the confirmation was not queued"
    );
}

#[tokio::test]
async fn subscribing_twice_while_pending_sends_a_second_email_and_keeps_one_subscriber() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let first = app.post_subscriptions(VALID_BODY).await;
    app.wait_for_emails(1).await;
    let second = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(app.subscriber_count().await, 1);
    let emails = app.wait_for_emails(2).await;
    let first_link = app.confirmation_links(&emails[0]).html;
    let second_link = app.confirmation_links(&emails[1]).html;
    assert_ne!(first_link, second_link, "the second email reused the token");
    assert_eq!(app.click(&second_link).await.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn the_first_link_still_works_after_subscribing_again() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    let first_link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.post_subscriptions(VALID_BODY).await;
    app.wait_for_emails(2).await;

    let response = app.click(&first_link).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn subscribing_after_confirming_answers_exactly_as_for_a_new_address() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let new = app.post_subscriptions(VALID_BODY).await;
    let (new_status, new_headers) = (new.status(), new.headers().clone());
    let new_body = new.bytes().await.unwrap();
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.click(&link).await;

    let again = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(again.status(), new_status);
    for header in ["content-type", "content-length"] {
        assert_eq!(
            again.headers().get(header),
            new_headers.get(header),
            "{header}"
        );
    }
    assert_eq!(again.bytes().await.unwrap(), new_body);
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn subscribing_after_confirming_sends_a_notice_without_a_confirmation_link() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.click(&link).await;

    app.post_subscriptions(VALID_BODY).await;

    let emails = app.wait_for_emails(2).await;
    let body = &emails[1];
    assert_eq!(
        body["Subject"],
        format!(
            "You are already subscribed to {}",
            app.settings.newsletter.title
        )
    );
    assert!(
        !body["TextBody"]
            .as_str()
            .unwrap()
            .contains("subscription_token")
    );
    assert!(
        !body["HtmlBody"]
            .as_str()
            .unwrap()
            .contains("subscription_token")
    );
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM confirmation_tokens")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(tokens, 1, "a confirmed subscriber was issued a new token");
}

#[tokio::test]
async fn addresses_are_unique_regardless_of_case_and_stored_as_typed() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let first = app
        .post_subscriptions("name=Ada&email=Ada%40Example.com")
        .await;
    let second = app
        .post_subscriptions("name=Ada&email=ada%40example.COM")
        .await;

    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(second.status().as_u16(), 200);
    let emails: Vec<String> = sqlx::query_scalar("SELECT email FROM subscriptions")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(emails, vec!["Ada@Example.com".to_owned()]);
}

#[tokio::test]
async fn twenty_concurrent_submissions_of_one_address_make_one_subscriber_and_no_errors() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let responses = futures::future::join_all(
        (0..20).map(|i| app.post_subscriptions(format!("name=Ada{i}&email=ada%40example.com"))),
    )
    .await;

    for response in responses {
        assert_eq!(response.status().as_u16(), 200);
    }
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn consent_evidence_records_when_the_subscription_was_requested_and_confirmed() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let before = chrono::Utc::now();
    app.post_subscriptions(VALID_BODY).await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;

    app.click(&link).await;

    let (requested, confirmed): (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as("SELECT subscribed_at, confirmed_at FROM subscriptions")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let confirmed = confirmed.expect("no confirmation time was recorded");
    assert!(requested >= before - chrono::Duration::seconds(1));
    assert!(confirmed >= requested);
}

#[tokio::test]
async fn subscribe_answers_503_quickly_when_the_database_is_unreachable() {
    // Nothing listens on port 1: every connection attempt is refused.
    let app = spawn_app_with(|s| s.database.port = 1).await;
    app.mock_email_api_ok().await;

    let response = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(response.status().as_u16(), 503);
    assert!(app.sent_emails().await.is_empty());
}

#[tokio::test]
async fn a_get_on_subscriptions_is_answered_with_405() {
    let app = spawn_app().await;

    let response = app.get("/subscriptions").await;

    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn subscribe_works_again_without_a_restart_once_the_database_is_back() {
    let proxy = TcpProxy::to_postgres().await;
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.database.acquire_timeout_milliseconds = 1_000;
    })
    .await;
    app.mock_email_api_ok().await;
    assert_eq!(
        app.post_subscriptions(VALID_BODY).await.status().as_u16(),
        200
    );

    proxy.cut();
    let during = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    proxy.restore();
    let after = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;

    assert_eq!(during.status().as_u16(), 503);
    assert!(during.headers().contains_key("Retry-After"));
    assert_eq!(after.status().as_u16(), 200);
    assert_eq!(app.subscriber_count().await, 2);
}

/// Fails the test if `request` has not answered within `limit`: a request
/// that waits on the database must end, one way or another.
async fn within<T>(limit: Duration, request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
}

/// Awaits `request`, then counts it as answered.
async fn counted<T>(answered: &AtomicUsize, request: impl std::future::Future<Output = T>) -> T {
    let response = request.await;
    answered.fetch_add(1, Ordering::SeqCst);
    response
}

#[tokio::test]
async fn a_sign_up_waiting_on_a_lock_held_elsewhere_answers_503_once_the_lock_timeout_passes() {
    // The lock timeout alone can end the wait: the statement and
    // transaction deadlines are far beyond the test's patience.
    let app = spawn_app_with(|s| {
        s.database.lock_timeout_milliseconds = 200;
        s.database.statement_timeout_milliseconds = 60_000;
        s.database.transaction_timeout_milliseconds = 60_000;
    })
    .await;
    app.mock_email_api_ok().await;
    let mut migration = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *migration)
        .await
        .unwrap();

    let during = within(Duration::from_secs(10), app.post_subscriptions(VALID_BODY)).await;
    migration.rollback().await.unwrap();
    let after = app.post_subscriptions(VALID_BODY).await;

    assert_eq!(during.status().as_u16(), 503);
    assert!(during.headers().contains_key("Retry-After"));
    assert_eq!(after.status().as_u16(), 200);
    assert_eq!(app.subscriber_count().await, 1);
    assert_eq!(app.outbox().await.len(), 1);
}

#[tokio::test]
async fn requests_on_a_database_connection_that_stops_answering_get_503_instead_of_hanging() {
    let proxy = TcpProxy::to_postgres().await;
    // No server-side timeout can reach a client whose link went dark: only
    // the app's own deadline on a transaction can end the wait.
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.database.statement_timeout_milliseconds = 60_000;
        s.database.lock_timeout_milliseconds = 60_000;
        s.database.idle_in_transaction_timeout_milliseconds = 60_000;
        s.database.transaction_timeout_milliseconds = 1_500;
    })
    .await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_BODY).await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    // Held locks stop both requests inside their transactions, where the
    // link then goes dark: what each waits for is an answer that the
    // database sends once the locks go, and that never arrives.
    let mut migration = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions, confirmation_tokens IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *migration)
        .await
        .unwrap();
    let answered = AtomicUsize::new(0);
    let requests = async {
        tokio::join!(
            counted(&answered, app.click(&link)),
            counted(
                &answered,
                app.post_subscriptions("name=Grace&email=grace%40example.com")
            ),
        )
    };
    let dark_link = async {
        // On a loaded machine a deadline may pass before both wait: the
        // locks hold until the rollback, so the other request then ends by
        // its own deadline or meets the dark link too.
        eventually("both requests to wait for the locks", || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
            (waiting == 2 || answered.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        proxy.freeze();
        migration.rollback().await.unwrap();
    };

    let ((confirm, subscribe), ()) = within(Duration::from_secs(15), async {
        tokio::join!(requests, dark_link)
    })
    .await;

    for (what, response) in [("confirm", &confirm), ("subscribe", &subscribe)] {
        assert_eq!(response.status().as_u16(), 503, "{what}");
        assert!(response.headers().contains_key("Retry-After"), "{what}");
    }
    proxy.thaw();
    let subscribe = app
        .post_subscriptions("name=Grace&email=grace%40example.com")
        .await;
    assert_eq!(subscribe.status().as_u16(), 200);
    assert_eq!(app.click(&link).await.status().as_u16(), 200);
    assert_eq!(app.subscriber_count().await, 2);
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE email = $1")
        .bind("ursula_le_guin@gmail.com")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(status, "confirmed");
}

#[tokio::test]
async fn sign_ups_sent_together_with_ones_postgres_refuses_all_succeed() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        // A sign-up gives up after waiting this long for its turn. Refused
        // sign-ups are under test here, not how fast a loaded machine
        // writes the ones queued behind them.
        s.database.acquire_timeout_milliseconds = 10_000;
    })
    .await;
    // Postgres now refuses one name: a transaction with it fails as a whole.
    sqlx::query(
        "ALTER TABLE subscriptions ADD CONSTRAINT refuse_poison CHECK (name <> 'Poison') NOT VALID",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let sign_ups: Vec<(bool, String)> = (0..65)
        .map(|i| {
            let poison = i % 13 == 6;
            let name = if poison { "Poison" } else { "Reader" };
            (poison, format!("name={name}&email=reader{i}%40example.com"))
        })
        .collect();

    let responses = futures::future::join_all(
        sign_ups
            .iter()
            .map(|(_, body)| app.post_subscriptions(body.clone())),
    )
    .await;

    for ((poison, body), response) in sign_ups.iter().zip(&responses) {
        let status = response.status();
        if *poison {
            assert!(status.is_server_error(), "{body}: {status}");
        } else {
            assert_eq!(status.as_u16(), 200, "{body}");
        }
    }
    let mut good: Vec<String> = sign_ups
        .iter()
        .enumerate()
        .filter(|(_, (poison, _))| !poison)
        .map(|(i, _)| format!("reader{i}@example.com"))
        .collect();
    good.sort();
    let pool = &app.db_pool;
    let stored = |query: &'static str| async move {
        let mut addresses: Vec<String> = sqlx::query_scalar(query).fetch_all(pool).await.unwrap();
        addresses.sort();
        addresses
    };
    assert_eq!(good.len(), 60);
    assert_eq!(stored("SELECT email FROM subscriptions").await, good);
    assert_eq!(
        stored(
            "SELECT s.email FROM confirmation_tokens t \
             JOIN subscriptions s ON s.id = t.subscriber_id"
        )
        .await,
        good,
        "tokens"
    );
    assert_eq!(
        stored("SELECT recipient FROM email_outbox").await,
        good,
        "emails"
    );
}
