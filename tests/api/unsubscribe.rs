//! Leaving the list: the `List-Unsubscribe` headers on every newsletter
//! email, the one-click `POST /unsubscribe/{token}`, the page `GET` shows,
//! and what unsubscribing means afterwards for campaigns, sign-ups and
//! confirmation links.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use newsletter::configuration::LimitSettings;
use newsletter::keys::Keys;
use newsletter::subscribers::suppression::{self, Reason};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::campaigns::{a_held_issue, add_subscribers, publish, wait_for_state};
use crate::helpers::{BASE_URL, BROWSER_ACCEPT, TestApp, spawn_app, spawn_app_with};

fn keys(app: &TestApp) -> Keys {
    Keys::derive(&app.settings.application.hmac_secret).unwrap()
}

/// The token in `subscriber_id`'s unsubscribe links.
fn token_for(app: &TestApp, subscriber_id: Uuid) -> String {
    keys(app).unsubscribe_token(subscriber_id).to_string()
}

/// What a mail provider's one-click request carries.
const ONE_CLICK: (&str, &str) = (
    "application/x-www-form-urlencoded",
    "List-Unsubscribe=One-Click",
);

/// `POST /unsubscribe/{token}` with the given body (and its content type,
/// if any) and `Accept` header, if any.
async fn post_unsubscribe(
    app: &TestApp,
    token: &str,
    body: Option<(&str, &str)>,
    accept: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .api_client
        .post(format!("{}/unsubscribe/{token}", app.address));
    if let Some((content_type, body)) = body {
        request = request
            .header("Content-Type", content_type)
            .body(body.to_owned());
    }
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    request.send().await.expect("Failed to POST /unsubscribe")
}

/// The one-click request, as a mail provider sends it.
async fn one_click(app: &TestApp, subscriber_id: Uuid) -> reqwest::Response {
    post_unsubscribe(app, &token_for(app, subscriber_id), Some(ONE_CLICK), None).await
}

/// A subscriber's status and when they unsubscribed.
async fn standing(app: &TestApp, subscriber_id: Uuid) -> (String, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT status, unsubscribed_at FROM subscriptions WHERE id = $1")
        .bind(subscriber_id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn one_confirmed(app: &TestApp) -> Uuid {
    add_subscribers(app, 1, "confirmed").await[0]
}

/// The value of the header `name` in a message sent to the email API.
fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["Headers"]
        .as_array()?
        .iter()
        .find(|h| h["Name"] == name)
        .and_then(|h| h["Value"].as_str())
}

/// Subscribers' ids by address.
async fn ids_by_address(app: &TestApp) -> HashMap<String, Uuid> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as("SELECT email, id FROM subscriptions")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn every_issue_email_carries_its_recipients_unsubscribe_link_in_headers_and_bodies_and_a_confirmation_none()
 {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 3, "confirmed").await;
    let response = app
        .post_subscriptions("name=Ursula&email=ursula%40example.com")
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    wait_for_state(&app, issue, "done").await;
    let sent = app.wait_for_emails(4).await;

    let ids = ids_by_address(&app).await;
    let (issues, others): (Vec<&Value>, Vec<&Value>) = sent
        .iter()
        .partition(|m| m["MessageStream"] == app.settings.email_client.broadcast_stream);
    assert_eq!((issues.len(), others.len()), (3, 1));
    let mut links = HashSet::new();
    for message in issues {
        let id = ids[message["To"].as_str().unwrap()];
        let url = format!("{BASE_URL}/unsubscribe/{}", token_for(&app, id));
        assert_eq!(
            header(message, "List-Unsubscribe"),
            Some(format!("<{url}>").as_str()),
            "{message}"
        );
        assert_eq!(
            header(message, "List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
        let preferences = format!("{BASE_URL}/preferences/{}", token_for(&app, id));
        for body in ["HtmlBody", "TextBody"] {
            let text = message[body].as_str().unwrap();
            assert!(text.contains(&url), "{body} lacks {url}: {text}");
            assert!(
                text.contains(&preferences),
                "{body} lacks {preferences}: {text}"
            );
        }
        links.insert(url);
    }
    assert_eq!(links.len(), 3, "each recipient has a link of their own");
    let confirmation = others[0];
    assert_eq!(header(confirmation, "List-Unsubscribe"), None);
    assert_eq!(header(confirmation, "List-Unsubscribe-Post"), None);
    assert!(confirmation.get("Headers").is_none(), "{confirmation}");
}

#[tokio::test]
async fn the_unsubscribe_mailbox_is_offered_after_the_link_when_one_is_configured() {
    let app = spawn_app_with(|s| {
        s.campaigns.unsubscribe_mailbox = Some("leave@newsletter.test".into());
    })
    .await;
    app.mock_email_api_ok().await;
    let id = one_confirmed(&app).await;

    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    wait_for_state(&app, issue, "done").await;

    let sent = app.wait_for_emails(1).await;
    let token = token_for(&app, id);
    assert_eq!(
        header(&sent[0], "List-Unsubscribe"),
        Some(
            format!(
                "<{BASE_URL}/unsubscribe/{token}>, \
                 <mailto:leave@newsletter.test?subject=unsubscribe-{token}>"
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn the_link_from_an_issue_unsubscribes_its_recipient_with_one_post() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let [reader, other] = add_subscribers(&app, 2, "confirmed").await[..] else {
        unreachable!()
    };
    let issue = publish(&app, "Issue one", "Hello {{name}}.").await;
    wait_for_state(&app, issue, "done").await;
    let ids = ids_by_address(&app).await;
    let sent = app.wait_for_emails(2).await;
    let message = sent
        .iter()
        .find(|m| ids[m["To"].as_str().unwrap()] == reader)
        .unwrap();
    let link = header(message, "List-Unsubscribe").unwrap();
    let link = reqwest::Url::parse(link.trim_matches(['<', '>'])).unwrap();

    let response = app
        .api_client
        .post(app.local(&link))
        .header("Content-Type", ONE_CLICK.0)
        .body(ONE_CLICK.1)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(standing(&app, reader).await.0, "unsubscribed");
    assert_eq!(standing(&app, other).await.0, "confirmed");
}

#[tokio::test]
async fn a_one_click_post_unsubscribes_with_the_form_body_without_one_or_with_an_odd_one() {
    let app = spawn_app().await;
    let cases: [(&str, Option<(&str, &str)>); 5] = [
        ("the one-click form", Some(ONE_CLICK)),
        ("no body at all", None),
        (
            "an empty form",
            Some(("application/x-www-form-urlencoded", "")),
        ),
        ("plain text", Some(("text/plain", "unsubscribe me"))),
        (
            "broken JSON",
            Some(("application/json", "{\"List-Unsubscribe")),
        ),
    ];
    for (case, body) in cases {
        let id = one_confirmed(&app).await;

        let response = post_unsubscribe(&app, &token_for(&app, id), body, None).await;

        assert_eq!(response.status(), StatusCode::OK, "{case}");
        assert!(
            response.headers().get("set-cookie").is_none(),
            "{case}: no cookie"
        );
        assert_eq!(
            response.headers().get("cache-control").unwrap(),
            "no-store",
            "{case}"
        );
        let (status, unsubscribed_at) = standing(&app, id).await;
        assert_eq!(status, "unsubscribed", "{case}");
        assert!(unsubscribed_at.is_some(), "{case}");
    }
}

#[tokio::test]
async fn unsubscribing_again_answers_200_and_keeps_the_first_time() {
    let app = spawn_app().await;
    let id = one_confirmed(&app).await;
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);
    let (_, first) = standing(&app, id).await;

    let again = one_click(&app, id).await;

    assert_eq!(again.status(), StatusCode::OK);
    let (status, at) = standing(&app, id).await;
    assert_eq!(status, "unsubscribed");
    assert_eq!(at, first);
    assert!(first.is_some());
}

#[tokio::test]
async fn a_pending_subscriber_can_unsubscribe_too() {
    let app = spawn_app().await;
    let id = add_subscribers(&app, 1, "pending_confirmation").await[0];

    let response = one_click(&app, id).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(standing(&app, id).await.0, "unsubscribed");
}

#[tokio::test]
async fn a_browser_is_told_it_is_done_and_offered_a_button_to_subscribe_again() {
    let app = spawn_app().await;
    let id = one_confirmed(&app).await;
    let token = token_for(&app, id);

    let response = post_unsubscribe(&app, &token, Some(ONE_CLICK), Some(BROWSER_ACCEPT)).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("You are unsubscribed"), "{page}");
    assert!(
        page.contains(&format!(
            r#"<form method="post" action="/unsubscribe/{token}/resubscribe">"#
        )),
        "{page}"
    );
}

/// A confirmed subscriber with this name and address.
async fn confirmed_as(app: &TestApp, name: &str, address: &str) -> Uuid {
    let id = confirmed_with_address(app, address).await;
    sqlx::query("UPDATE subscriptions SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(&app.db_pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn the_page_after_unsubscribing_holds_neither_the_full_address_nor_the_name() {
    let app = spawn_app().await;
    let id = confirmed_as(&app, "Ursula Kroeber", "ursula.le.guin@example.com").await;
    let token = token_for(&app, id);

    // The first time, and again for a row already unsubscribed: a
    // forwarded link can be pressed by anyone, as often as they like.
    for time in ["first", "again"] {
        let response = post_unsubscribe(&app, &token, Some(ONE_CLICK), Some(BROWSER_ACCEPT)).await;

        assert_eq!(response.status(), StatusCode::OK, "{time}");
        let page = response.text().await.unwrap();
        assert!(
            page.contains("u•••@example.com will not receive another issue."),
            "{time}: {page}"
        );
        for secret in ["ursula.le.guin", "Ursula", "Kroeber"] {
            assert!(!page.contains(secret), "{time}: {secret} in {page}");
        }
        assert!(page.contains("Subscribe again"), "{time}: {page}");
    }
}

/// Presses "Subscribe again" on the page after unsubscribing, as a browser.
async fn subscribe_again(app: &TestApp, token: &str) -> reqwest::Response {
    app.api_client
        .post(format!("{}/unsubscribe/{token}/resubscribe", app.address))
        .header("Accept", BROWSER_ACCEPT)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("Failed to POST /unsubscribe/{token}/resubscribe")
}

/// Presses the button on the page a confirmation link opens.
pub(crate) async fn press_confirm(app: &TestApp, link: &reqwest::Url) -> reqwest::Response {
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned();
    app.api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn subscribe_again_sends_a_confirmation_to_the_stored_address_and_its_link_confirms() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let id = confirmed_as(&app, "Ursula", "ursula@example.com").await;
    let token = token_for(&app, id);
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);

    let response = subscribe_again(&app, &token).await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("<h1>Check your inbox</h1>"), "{page}");
    let sent = app.wait_for_emails(1).await;
    assert_eq!(sent[0]["To"], "ursula@example.com");
    assert!(
        sent[0]["Subject"].as_str().unwrap().contains("confirm"),
        "a confirmation: {}",
        sent[0]["Subject"]
    );
    assert!(
        sent[0]["TextBody"].as_str().unwrap().contains("Ursula"),
        "under the stored name: {}",
        sent[0]["TextBody"]
    );
    assert_eq!(
        standing(&app, id).await.0,
        "unsubscribed",
        "until confirmed"
    );

    let link = app.confirmation_links(&sent[0]).html;
    assert_eq!(press_confirm(&app, &link).await.status(), StatusCode::OK);

    assert_eq!(standing(&app, id).await, ("confirmed".to_owned(), None));
}

#[tokio::test]
async fn subscribe_again_with_a_forged_token_is_refused_with_400_and_sends_nothing() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let id = one_confirmed(&app).await;
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);
    let token = token_for(&app, id);
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();

    for bad in [forged, "not-a-token".to_owned(), id.simple().to_string()] {
        let browser = subscribe_again(&app, &bad).await;
        assert_eq!(browser.status(), StatusCode::BAD_REQUEST, "{bad}");
        let page = browser.text().await.unwrap();
        assert!(page.contains("Link not valid"), "{bad}: {page}");

        let plain = app
            .api_client
            .post(format!("{}/unsubscribe/{bad}/resubscribe", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(plain.status(), StatusCode::BAD_REQUEST, "{bad}");
        let reason = plain.text().await.unwrap();
        assert!(reason.contains("not valid"), "{bad}: {reason}");
    }

    assert!(app.outbox().await.is_empty(), "an email was queued");
}

#[tokio::test]
async fn subscribe_again_from_a_test_email_or_for_an_erased_subscriber_changes_nothing() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let test_send = keys(&app).test_unsubscribe_token().to_string();
    let erased = token_for(&app, Uuid::new_v4());

    let from_a_test = subscribe_again(&app, &test_send).await;
    let for_the_erased = subscribe_again(&app, &erased).await;

    assert_eq!(from_a_test.status(), StatusCode::OK);
    let page = from_a_test.text().await.unwrap();
    assert!(page.contains("<h1>Nothing changed</h1>"), "{page}");
    assert_eq!(for_the_erased.status(), StatusCode::OK);
    let page = for_the_erased.text().await.unwrap();
    assert!(page.contains("<h1>Not on the list</h1>"), "{page}");
    assert_eq!(app.subscriber_count().await, 0);
    assert!(app.outbox().await.is_empty(), "an email was queued");
}

/// A limit of `burst` requests, then one every ten minutes.
fn tight(burst: u32) -> LimitSettings {
    LimitSettings {
        burst,
        per_period: 1,
        period_seconds: 600,
    }
}

#[tokio::test]
async fn subscribe_again_spends_the_same_per_address_budget_as_the_form() {
    let app = spawn_app_with(|s| s.rate_limit.per_address = tight(1)).await;
    app.mock_email_api_ok().await;
    let id = confirmed_as(&app, "Ursula", "ursula@example.com").await;
    let token = token_for(&app, id);
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);

    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = subscribe_again(&app, &token).await;
        answers.push((response.status(), response.text().await.unwrap()));
    }
    let form = app
        .post_subscriptions("name=Ursula&email=ursula%40example.com")
        .await;

    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "the answers differ: {answers:?}"
    );
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(
        app.outbox().await.len(),
        1,
        "more than one email was queued"
    );
}

#[tokio::test]
async fn subscribe_again_spends_the_clients_per_ip_budget_as_the_form_does() {
    let app = spawn_app_with(|s| s.rate_limit.per_ip = tight(1)).await;
    app.mock_email_api_ok().await;
    let id = one_confirmed(&app).await;
    let token = token_for(&app, id);

    let first = subscribe_again(&app, &token).await;
    let second = subscribe_again(&app, &token).await;
    let form = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(form.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_valid_link_whose_subscriber_was_erased_answers_200_not_on_the_list() {
    let app = spawn_app().await;

    let response = one_click(&app, Uuid::new_v4()).await;

    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(text.contains("not on the list"), "{text}");
    assert_eq!(app.subscriber_count().await, 0);
}

#[tokio::test]
async fn opening_the_link_shows_a_button_and_never_unsubscribes() {
    let app = spawn_app().await;
    let id = one_confirmed(&app).await;
    let token = token_for(&app, id);
    let url = format!("{}/unsubscribe/{token}", app.address);

    for _ in 0..2 {
        for response in [
            app.browse(&url).await,
            app.get(&format!("/unsubscribe/{token}")).await,
        ] {
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers().get("x-robots-tag").unwrap(), "noindex");
            let page = response.text().await.unwrap();
            assert!(
                page.contains(&format!(
                    r#"<form method="post" action="/unsubscribe/{token}">"#
                )),
                "{page}"
            );
            assert!(
                page.contains(r#"name="List-Unsubscribe" value="One-Click""#),
                "{page}"
            );
        }
    }

    assert_eq!(standing(&app, id).await, ("confirmed".to_owned(), None));
}

/// A confirmed subscriber with this address.
async fn confirmed_with_address(app: &TestApp, address: &str) -> Uuid {
    let id = one_confirmed(app).await;
    sqlx::query("UPDATE subscriptions SET email = $2 WHERE id = $1")
        .bind(id)
        .bind(address)
        .execute(&app.db_pool)
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn opening_the_link_names_the_address_it_is_for_masked() {
    let app = spawn_app().await;
    let ursula = confirmed_with_address(&app, "ursula.le.guin@example.com").await;
    let single = confirmed_with_address(&app, "u@example.org").await;

    for (id, masked) in [(ursula, "u•••@example.com"), (single, "•••@example.org")] {
        let response = app
            .browse(&format!(
                "{}/unsubscribe/{}",
                app.address,
                token_for(&app, id)
            ))
            .await;

        assert_eq!(response.status(), StatusCode::OK);
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!(
                r#"<strong id="unsubscribe-address">{masked}</strong>"#
            )),
            "{masked}: {page}"
        );
        assert!(!page.contains("ursula.le.guin"), "{page}");
        assert!(!page.contains("u@example.org"), "{page}");
    }
    assert_eq!(standing(&app, ursula).await.0, "confirmed");
}

#[tokio::test]
async fn the_page_after_unsubscribing_names_the_address_masked() {
    let app = spawn_app().await;
    let id = confirmed_with_address(&app, "ursula@example.com").await;

    let response = post_unsubscribe(
        &app,
        &token_for(&app, id),
        Some(ONE_CLICK),
        Some(BROWSER_ACCEPT),
    )
    .await;

    let page = response.text().await.unwrap();
    assert!(
        page.contains("u•••@example.com will not receive another issue."),
        "{page}"
    );
}

#[tokio::test]
async fn opening_a_valid_link_whose_subscriber_was_erased_says_not_on_the_list() {
    let app = spawn_app().await;

    let response = app
        .browse(&format!(
            "{}/unsubscribe/{}",
            app.address,
            token_for(&app, Uuid::new_v4())
        ))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("<h1>Not on the list</h1>"), "{page}");
    assert!(!page.contains("/unsubscribe/"), "no button: {page}");
}

#[tokio::test]
async fn a_test_emails_link_opens_a_page_that_says_so_and_its_button_changes_nothing() {
    let app = spawn_app().await;
    let ada = one_confirmed(&app).await;
    let token = keys(&app).test_unsubscribe_token().to_string();

    let opened = app.get(&format!("/unsubscribe/{token}")).await;
    let pressed = post_unsubscribe(&app, &token, Some(ONE_CLICK), Some(BROWSER_ACCEPT)).await;
    let one_click = post_unsubscribe(&app, &token, Some(ONE_CLICK), None).await;

    assert_eq!(opened.status(), StatusCode::OK);
    let page = opened.text().await.unwrap();
    assert!(
        page.contains("This link came from a test email: it unsubscribes no one."),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            r#"<form method="post" action="/unsubscribe/{token}">"#
        )),
        "{page}"
    );
    assert_eq!(pressed.status(), StatusCode::OK);
    let page = pressed.text().await.unwrap();
    assert!(page.contains("<h1>Nothing changed</h1>"), "{page}");
    assert!(!page.contains("Subscribe again"), "{page}");
    assert_eq!(one_click.status(), StatusCode::OK);
    assert_eq!(
        one_click.text().await.unwrap(),
        "This link came from a test email: no one was unsubscribed."
    );
    assert_eq!(standing(&app, ada).await, ("confirmed".to_owned(), None));
}

#[tokio::test]
async fn a_forged_truncated_or_foreign_token_is_refused_with_400_and_changes_nothing() {
    let app = spawn_app().await;
    let [ada, bob] = add_subscribers(&app, 2, "confirmed").await[..] else {
        unreachable!()
    };
    let token = token_for(&app, ada);
    // Bob's id with the tag of Ada's link.
    let foreign = format!("{}{}", bob.simple(), &token[32..]);
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let cases = [
        ("another subscriber's id", foreign),
        ("a changed tag", forged),
        ("cut short", token[..token.len() - 4].to_owned()),
        ("the id alone", ada.simple().to_string()),
        ("not hex", "z".repeat(64)),
        ("garbage", "not-a-token".to_owned()),
    ];

    for (case, bad) in &cases {
        let plain = post_unsubscribe(&app, bad, Some(ONE_CLICK), None).await;
        assert_eq!(plain.status(), StatusCode::BAD_REQUEST, "{case}");
        let reason = plain.text().await.unwrap();
        assert!(reason.contains("not valid"), "{case}: {reason}");

        let browser = post_unsubscribe(&app, bad, Some(ONE_CLICK), Some(BROWSER_ACCEPT)).await;
        assert_eq!(browser.status(), StatusCode::BAD_REQUEST, "{case}");
        let page = browser.text().await.unwrap();
        assert!(page.contains("Link not valid"), "{case}: {page}");

        let opened = app
            .browse(format!("{}/unsubscribe/{bad}", app.address))
            .await;
        assert_eq!(opened.status(), StatusCode::BAD_REQUEST, "{case}");
    }

    for id in [ada, bob] {
        assert_eq!(standing(&app, id).await, ("confirmed".to_owned(), None));
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_and_changes_nothing() {
    let app = spawn_app().await;
    let id = one_confirmed(&app).await;
    let large = "x".repeat(64 * 1024);

    let response = post_unsubscribe(
        &app,
        &token_for(&app, id),
        Some(("text/plain", &large)),
        None,
    )
    .await;

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(standing(&app, id).await.0, "confirmed");
}

#[tokio::test]
async fn someone_who_unsubscribes_while_an_issue_is_under_way_is_not_sent_it() {
    let (api, app, issue, in_flight) = a_held_issue(20).await;
    let (address, leaver) = ids_by_address(&app)
        .await
        .into_iter()
        .find(|(address, _)| !in_flight.contains(address))
        .expect("someone waits for a later batch");

    assert_eq!(one_click(&app, leaver).await.status(), StatusCode::OK);
    api.release();
    let progress = wait_for_state(&app, issue, "done").await;

    let status: String = sqlx::query_scalar(
        "SELECT status FROM deliveries WHERE issue_id = $1 AND subscriber_id = $2",
    )
    .bind(issue)
    .bind(leaver)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(status, "skipped");
    let received: Vec<String> = api
        .requests()
        .into_iter()
        .flatten()
        .map(|message| message["To"].as_str().unwrap().to_owned())
        .collect();
    assert!(!received.contains(&address), "{address} was sent the issue");
    assert_eq!(received.len(), 19);
    assert_eq!((progress.summary.sent, progress.summary.skipped), (19, 1));
}

#[tokio::test]
async fn someone_who_unsubscribes_while_their_batch_waits_its_turn_is_not_sent_it() {
    // One message a second, one per batch: after the burst an idle schedule
    // allows (one batch's worth), the third batch, read as soon as it is
    // claimed, waits about a second for its turn.
    let app = spawn_app_with(|s| {
        s.campaigns.sending.batch_size = 1;
        s.campaigns.messages_per_second = 1;
    })
    .await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 3, "confirmed").await;
    let issue = publish(&app, "Waiting", "Hello {{name}}.").await;
    app.wait_for_emails(2).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let leaver: Uuid = loop {
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "SELECT d.subscriber_id FROM deliveries d \
             JOIN delivery_batches b ON b.issue_id = d.issue_id AND b.first_seq = d.seq \
             WHERE d.issue_id = $1 AND d.seq = 3 AND b.claim_id IS NOT NULL AND NOT b.done",
        )
        .bind(issue)
        .fetch_optional(&app.db_pool)
        .await
        .unwrap();
        if let Some(leaver) = claimed {
            break leaver;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the third batch was never claimed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };

    assert_eq!(one_click(&app, leaver).await.status(), StatusCode::OK);
    let progress = wait_for_state(&app, issue, "done").await;

    assert_eq!(
        app.sent_emails().await.len(),
        2,
        "the leaver was sent the issue"
    );
    assert_eq!((progress.summary.sent, progress.summary.skipped), (2, 1));
}

/// Signs Ursula up and returns the confirmation link of the `n`th email
/// the API received (counting from 1).
async fn sign_up_ursula(app: &TestApp, n: usize) -> reqwest::Url {
    let response = app
        .post_subscriptions("name=Ursula&email=ursula%40example.com")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let sent = app.wait_for_emails(n).await;
    app.confirmation_links(&sent[n - 1]).html
}

async fn ursula(app: &TestApp) -> (Uuid, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    sqlx::query_as(
        "SELECT id, status, confirmed_at, unsubscribed_at FROM subscriptions \
         WHERE email = 'ursula@example.com'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_confirmation_racing_an_unsubscribe_does_not_subscribe_them_again() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let link = sign_up_ursula(&app, 1).await;
    let (id, ..) = ursula(&app).await;
    // An unsubscribe under way: its tokens deleted, not yet committed.
    let mut unsubscribing = app.db_pool.begin().await.unwrap();
    sqlx::query("DELETE FROM confirmation_tokens WHERE subscriber_id = $1")
        .bind(id)
        .execute(&mut *unsubscribing)
        .await
        .unwrap();
    let confirming = {
        let app_link = app.local(&link);
        let client = reqwest::Client::new();
        tokio::spawn(async move { client.get(app_link).send().await.unwrap() })
    };
    // The confirmation read the token and now waits for its lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the confirmation never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    sqlx::query(
        "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *unsubscribing)
    .await
    .unwrap();
    unsubscribing.commit().await.unwrap();

    let answer = confirming.await.unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    let (_, status, _, unsubscribed_at) = ursula(&app).await;
    assert_eq!(status, "unsubscribed");
    assert!(unsubscribed_at.is_some());
}

#[tokio::test]
async fn subscribing_again_after_unsubscribing_takes_a_new_confirmation() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let first_link = sign_up_ursula(&app, 1).await;
    assert_eq!(app.click(&first_link).await.status(), StatusCode::OK);
    let (id, _, first_consent, _) = ursula(&app).await;
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);

    let second_link = sign_up_ursula(&app, 2).await;

    let sent = app.sent_emails().await;
    assert!(
        sent[1]["Subject"].as_str().unwrap().contains("confirm"),
        "a confirmation, not an 'already subscribed' notice: {}",
        sent[1]["Subject"]
    );
    let (same_id, status, _, unsubscribed_at) = ursula(&app).await;
    assert_eq!(same_id, id);
    assert_eq!(status, "unsubscribed", "until the new link is opened");
    assert!(unsubscribed_at.is_some());

    // Opening the link is not her act (a scanner may have opened it): it
    // shows the button, and only pressing it brings her back.
    assert_eq!(app.click(&second_link).await.status(), StatusCode::OK);
    assert_eq!(ursula(&app).await.1, "unsubscribed");
    let token = second_link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned();
    let pressed = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);

    let (_, status, consent, unsubscribed_at) = ursula(&app).await;
    assert_eq!(status, "confirmed");
    assert_eq!(unsubscribed_at, None);
    assert!(
        consent.unwrap() > first_consent.unwrap(),
        "coming back is a new consent"
    );
}

#[tokio::test]
async fn a_confirmation_link_from_before_unsubscribing_does_not_subscribe() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let link = sign_up_ursula(&app, 1).await;
    let (id, ..) = ursula(&app).await;
    assert_eq!(one_click(&app, id).await.status(), StatusCode::OK);

    let response = app.click(&link).await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (_, status, confirmed_at, _) = ursula(&app).await;
    assert_eq!(status, "unsubscribed");
    assert_eq!(confirmed_at, None);
}

#[tokio::test]
async fn a_suppressed_address_gets_no_confirmation_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let mut conn = app.db_pool.acquire().await.unwrap();
    suppression::suppress(
        &mut conn,
        &keys(&app),
        "ursula@example.com",
        Reason::HardBounce,
        None,
        Utc::now(),
    )
    .await
    .unwrap();

    let suppressed = app
        .post_subscriptions("name=Ursula&email=Ursula%40Example.com")
        .await;
    let other = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;

    assert_eq!(suppressed.status(), StatusCode::OK, "the same answer");
    assert_eq!(other.status(), StatusCode::OK);
    let addresses: Vec<String> = sqlx::query_scalar("SELECT email FROM subscriptions")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(addresses, ["ada@example.com"]);
    let recipients: Vec<String> = app
        .wait_for_outbox_to_settle()
        .await
        .into_iter()
        .map(|row| row.recipient)
        .collect();
    assert_eq!(recipients, ["ada@example.com"]);
    let sent = app.wait_for_emails(1).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["To"], "ada@example.com");
}
