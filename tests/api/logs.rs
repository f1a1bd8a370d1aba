//! What a whole run writes to its logs and its metrics: requests named by
//! their route's template, and not one of the tokens the run handed out
//! (confirmation and unsubscribe links, session, CSRF and remembered-browser
//! tokens, the webhook password, the email API's token), in any encoding.

use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::HeaderValue;
use serde_json::Value;
use uuid::Uuid;

use crate::campaigns::publish;
use crate::helpers::{
    BROWSER_ACCEPT, TestApp, WEBHOOK_PASSWORD, WEBHOOK_USERNAME, capture_logs, eventually,
    spawn_app,
};
use crate::newsroom::{Browser, PASSWORD, create_admin};
use crate::webhooks::{complaint, post_webhook};

/// A browser's cookie jar that also remembers every value the server set,
/// including those a later answer replaced or cleared.
#[derive(Default)]
struct RecordingJar {
    jar: Jar,
    set: Mutex<Vec<String>>,
}

impl CookieStore for RecordingJar {
    fn set_cookies(&self, headers: &mut dyn Iterator<Item = &HeaderValue>, url: &reqwest::Url) {
        let headers: Vec<&HeaderValue> = headers.collect();
        for header in &headers {
            let value = header
                .to_str()
                .ok()
                .and_then(|cookie| cookie.split(';').next())
                .and_then(|pair| pair.split_once('='))
                .map(|(_, value)| value.trim().to_owned());
            self.set.lock().unwrap().extend(value);
        }
        self.jar.set_cookies(&mut headers.into_iter(), url);
    }

    fn cookies(&self, url: &reqwest::Url) -> Option<HeaderValue> {
        self.jar.cookies(url)
    }
}

/// The tokens a run handed out, each with what it is.
#[derive(Default)]
struct Issued(Vec<(String, String)>);

impl Issued {
    fn add(&mut self, what: impl Into<String>, token: impl Into<String>) {
        let token = token.into();
        assert!(!token.is_empty(), "an empty token cannot be looked for");
        self.0.push((what.into(), token));
    }
}

/// The ways a token could be written: as it is, in either case, URL-encoded
/// (a query string, a form) and in base64 (a Basic header).
fn encodings(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("raw", token.to_owned()),
        ("lower case", token.to_lowercase()),
        ("upper case", token.to_uppercase()),
        ("form-encoded", form_encoded(token)),
        (
            "percent-encoded",
            token
                .bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>(),
        ),
        ("base64", STANDARD.encode(token)),
        ("base64url", URL_SAFE_NO_PAD.encode(token)),
    ]
}

/// `application/x-www-form-urlencoded`, as a form or a query carries it.
fn form_encoded(token: &str) -> String {
    token
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_token(link: &reqwest::Url) -> String {
    link.query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned()
}

/// The value of the header `name` in a message sent to the email API.
fn header<'a>(message: &'a Value, name: &str) -> Option<&'a str> {
    message["Headers"]
        .as_array()?
        .iter()
        .find(|h| h["Name"] == name)
        .and_then(|h| h["Value"].as_str())
}

/// Two readers sign up; one confirms by opening the link, the other by
/// pressing the button; both links are opened again.
async fn subscribe_and_confirm(app: &TestApp, issued: &mut Issued) {
    for form in [
        "name=Ursula&email=ursula%40example.com",
        "name=Ada&email=ada%40example.com",
    ] {
        assert_eq!(app.post_subscriptions(form).await.status(), StatusCode::OK);
    }
    let emails = app.wait_for_emails(2).await;
    for email in &emails {
        let link = app.confirmation_links(email).html;
        issued.add(
            format!("the confirmation link to {}", email["To"]),
            query_token(&link),
        );
        if email["To"] == "ursula@example.com" {
            assert_eq!(app.click(&link).await.status(), StatusCode::OK);
        } else {
            let pressed = app
                .api_client
                .post(format!("{}/subscriptions/confirm", app.address))
                .header("Accept", BROWSER_ACCEPT)
                .form(&[("subscription_token", query_token(&link))])
                .send()
                .await
                .unwrap();
            assert_eq!(pressed.status(), StatusCode::OK);
        }
        assert_eq!(app.browse(app.local(&link)).await.status(), StatusCode::OK);
    }
    // A link cut short, and one that never existed.
    let made_up = Uuid::new_v4().simple().to_string();
    issued.add("a made-up confirmation token", &made_up);
    let refused = app
        .get_confirm(&format!("?subscription_token={made_up}x"))
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let unknown = app
        .get_confirm(&format!("?subscription_token={made_up}"))
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
}

/// An issue goes out; Ursula opens its unsubscribe link and presses the
/// button, Ada's mail provider sends the one-click request.
async fn unsubscribe(app: &TestApp, issued: &mut Issued) {
    publish(app, "Issue one", "Hello {{name}}.").await;
    let issues = eventually("the issue to reach both readers", || async {
        let issues: Vec<Value> = app
            .sent_emails()
            .await
            .into_iter()
            .filter(|email| header(email, "List-Unsubscribe").is_some())
            .collect();
        (issues.len() >= 2).then_some(issues)
    })
    .await;
    for email in &issues {
        let link = header(email, "List-Unsubscribe")
            .unwrap()
            .trim_matches(['<', '>']);
        let token = link.rsplit('/').next().unwrap();
        issued.add(format!("the unsubscribe link to {}", email["To"]), token);
        let path = format!("/unsubscribe/{token}");
        let url = format!("{}{path}", app.address);
        if email["To"] == "ursula@example.com" {
            assert_eq!(app.browse(&url).await.status(), StatusCode::OK);
            let pressed = app
                .api_client
                .post(&url)
                .header("Accept", BROWSER_ACCEPT)
                .form(&[("List-Unsubscribe", "One-Click")])
                .send()
                .await
                .unwrap();
            assert_eq!(pressed.status(), StatusCode::OK);
        } else {
            let one_click = app
                .api_client
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap();
            assert_eq!(one_click.status(), StatusCode::OK);
        }
    }
}

/// An admin signs in, opens the dashboard and signs out.
async fn sign_in_and_out(app: &TestApp, issued: &mut Issued) {
    create_admin(app, "editor", PASSWORD).await;
    let cookies = std::sync::Arc::new(RecordingJar::default());
    let browser = Browser::with_cookie_store(app, cookies.clone());
    let signed_in = browser.log_in("editor", PASSWORD).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    issued.add("the admin's password", PASSWORD);
    issued.add("the admin form's CSRF token", browser.csrf_token().await);
    let signed_out = browser.submit("/admin/logout", &[]).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let set = cookies.set.lock().unwrap().clone();
    assert!(
        set.len() >= 2,
        "no session or remembered-browser cookie was set: {set:?}"
    );
    for value in set.into_iter().filter(|value| !value.is_empty()) {
        issued.add("a cookie the server set", value);
    }
}

#[tokio::test]
async fn no_token_a_run_hands_out_appears_in_its_logs_or_metrics_in_any_encoding() {
    let logs = capture_logs();
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let mut issued = Issued::default();
    issued.add("the email API token", "test-token");

    subscribe_and_confirm(&app, &mut issued).await;
    unsubscribe(&app, &mut issued).await;
    sign_in_and_out(&app, &mut issued).await;
    let webhook = post_webhook(&app, &complaint(1, "ursula@example.com", None)).await;
    assert_eq!(webhook.status(), StatusCode::OK);
    issued.add("the webhook password", WEBHOOK_PASSWORD);
    issued.add(
        "the webhook's Basic credentials",
        STANDARD.encode(format!("{WEBHOOK_USERNAME}:{WEBHOOK_PASSWORD}")),
    );
    // Routes that do not exist, with a token-like segment and query.
    let (segment, query) = (
        Uuid::new_v4().simple().to_string(),
        Uuid::new_v4().simple().to_string(),
    );
    for path in [
        format!("/unsubscribe/{segment}/again?token={query}"),
        format!("/confirm/{segment}?subscription_token={query}"),
    ] {
        assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    }
    issued.add("a made-up path segment", segment);
    issued.add("a made-up query", query);
    app.wait_for_outbox_to_settle().await;

    let logged = logs.text();
    for template in [
        "/subscriptions/confirm",
        "/unsubscribe/{token}",
        "/login",
        "unmatched",
    ] {
        assert!(
            logged.contains(&format!(r#""http.route":"{template}""#)),
            "no request was logged under {template}"
        );
    }
    let scraped = reqwest::get(format!("{}/metrics", app.metrics_address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains(r#"route="unmatched""#),
        "the made-up paths are not counted as unmatched: {scraped}"
    );
    for (place, text) in [("the logs", &logged), ("the metrics", &scraped)] {
        for (what, token) in &issued.0 {
            for (encoding, written) in encodings(token) {
                if let Some(at) = text.find(&written) {
                    let line = text[..at].rsplit('\n').next().unwrap_or_default();
                    panic!("{what} ({encoding}) is in {place}, after: {line}");
                }
            }
        }
    }
}
