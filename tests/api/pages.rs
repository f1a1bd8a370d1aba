//! What a browser gets: pages for the form and the confirmation link, with
//! security headers, while API clients keep plain answers.

use newsletter::configuration::{EmailBackend, get_configuration};
use newsletter::startup::Application;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const VALID_FORM: &str = "name=Ada&email=ada%40example.com&website=";

async fn link_from_first_email(app: &TestApp) -> reqwest::Url {
    app.confirmation_links(&app.wait_for_emails(1).await[0])
        .html
}

fn is_html(response: &reqwest::Response) -> bool {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html")
}

#[tokio::test]
async fn the_home_page_is_a_form_with_labelled_fields_and_a_honeypot() {
    let app = spawn_app().await;

    let response = app.browse(format!("{}/", app.address)).await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(is_html(&response));
    let page = response.text().await.unwrap();
    for needle in [
        r#"<form method="post" action="/subscriptions">"#,
        r#"<label for="name">"#,
        r#"<label for="email">"#,
        r#"name="website""#,
        r#"<meta name="viewport""#,
    ] {
        assert!(page.contains(needle), "missing {needle}");
    }
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("<script"),
        "the page loads something external or runs script"
    );
}

#[tokio::test]
async fn the_stylesheet_is_served_by_the_app_itself() {
    let app = spawn_app().await;

    let response = app.get("/style.css").await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn pages_carry_the_security_headers() {
    let app = spawn_app().await;

    let response = app.browse(format!("{}/", app.address)).await;

    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
}

#[tokio::test]
async fn a_browser_submission_gets_the_check_your_inbox_page() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let response = app.submit_form(VALID_FORM).await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(is_html(&response));
    assert!(response.text().await.unwrap().contains("Check your inbox"));
    assert_eq!(app.subscriber_count().await, 1);
}

#[tokio::test]
async fn an_invalid_browser_submission_gets_the_form_again_with_the_reason_and_the_values() {
    let app = spawn_app().await;

    let response = app
        .submit_form("name=Ada%20Lovelace&email=ada%40localhost&website=")
        .await;

    assert_eq!(response.status().as_u16(), 400);
    assert!(is_html(&response));
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"value="Ada Lovelace""#),
        "the name was not kept"
    );
    assert!(
        page.contains(r#"value="ada@localhost""#),
        "the email was not kept"
    );
    assert!(
        page.contains(r#"id="email-error""#),
        "no message next to the email"
    );
    assert!(
        !page.contains(r#"id="name-error""#),
        "the valid name was flagged"
    );
    assert_eq!(app.subscriber_count().await, 0);
}

#[tokio::test]
async fn both_refused_fields_get_their_own_message() {
    let app = spawn_app().await;

    let page = app
        .submit_form("name=&email=nope&website=")
        .await
        .text()
        .await
        .unwrap();

    assert!(page.contains(r#"id="name-error""#));
    assert!(page.contains(r#"id="email-error""#));
}

#[tokio::test]
async fn what_a_person_typed_is_escaped_when_the_form_is_shown_again() {
    let app = spawn_app().await;

    let page = app
        .submit_form("name=Ada&email=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E&website=")
        .await
        .text()
        .await
        .unwrap();

    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(page.contains("&#60;script&#62;"), "{page}");
}

#[tokio::test]
async fn api_clients_still_get_plain_text_reasons() {
    let app = spawn_app().await;

    let response = app.post_subscriptions("name=Ada&email=nope").await;

    assert_eq!(response.status().as_u16(), 400);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
}

#[tokio::test]
async fn the_confirmation_link_opens_a_confirmed_page_then_an_already_confirmed_page() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_FORM).await;
    let link = app.local(&link_from_first_email(&app).await);

    let first = app.browse(link.clone()).await;
    let second = app.browse(link).await;

    assert_eq!(first.status().as_u16(), 200);
    assert!(
        first
            .text()
            .await
            .unwrap()
            .contains("Your subscription is confirmed")
    );
    assert_eq!(second.status().as_u16(), 200);
    assert!(second.text().await.unwrap().contains("already confirmed"));
}

#[tokio::test]
async fn unknown_and_expired_links_open_pages_that_lead_back_to_the_form() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_FORM).await;
    let link = app.local(&link_from_first_email(&app).await);
    sqlx::query("UPDATE confirmation_tokens SET expires_at = now() - interval '1 second'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let unknown = format!(
        "{}/subscriptions/confirm?subscription_token={}",
        app.address,
        "A".repeat(32)
    );

    for (response, status) in [
        (app.browse(unknown).await, 401),
        (app.browse(link).await, 410),
    ] {
        assert_eq!(response.status().as_u16(), status);
        assert!(is_html(&response));
        let page = response.text().await.unwrap();
        assert!(
            page.contains(r#"href="/""#),
            "no way back to the form: {page}"
        );
    }
}

#[tokio::test]
async fn with_the_button_setting_opening_the_link_does_not_confirm_but_the_button_does() {
    let app = spawn_app_with(|s| s.subscriptions.confirm_with_button = true).await;
    app.mock_email_api_ok().await;
    app.post_subscriptions(VALID_FORM).await;
    let link = link_from_first_email(&app).await;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned();

    let opened = app.browse(app.local(&link)).await;

    assert_eq!(opened.status().as_u16(), 200);
    let page = opened.text().await.unwrap();
    assert!(page.contains(r#"<form method="post" action="/subscriptions/confirm">"#));
    assert!(page.contains(&format!(r#"value="{token}""#)));
    assert_eq!(app.subscriber_status().await, "pending_confirmation");

    let pressed = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .header("Accept", crate::helpers::BROWSER_ACCEPT)
        .form(&[("subscription_token", token.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(pressed.status().as_u16(), 200);
    assert!(
        pressed
            .text()
            .await
            .unwrap()
            .contains("Your subscription is confirmed")
    );
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn the_confirm_button_refuses_an_unknown_token() {
    let app = spawn_app_with(|s| s.subscriptions.confirm_with_button = true).await;

    let response = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", "A".repeat(32))])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 401);
}

/// A title and a description written to break out of the markup.
const HOSTILE_TITLE: &str = "<script>alert(1)</script> Weekly";
const HOSTILE_DESCRIPTION: &str = "Crabs & <b onclick=\"x()\">rust</b>, weekly.";

async fn app_with_a_hostile_newsletter() -> TestApp {
    spawn_app_with(|s| {
        s.newsletter.title = HOSTILE_TITLE.into();
        s.newsletter.description = HOSTILE_DESCRIPTION.into();
    })
    .await
}

/// The title as a page carries it: escaped, in the tab and in the header.
fn assert_shows_the_escaped_title(page: &str, which: &str) {
    let escaped = "&#60;script&#62;alert(1)&#60;/script&#62; Weekly";
    assert!(!page.contains("<script"), "{which} runs the title: {page}");
    assert!(
        page.contains(&format!(" · {escaped}</title>")),
        "{which} has no title in the tab: {page}"
    );
    assert!(
        page.contains(&format!(r#"<a href="/">{escaped}</a>"#)),
        "{which} has no title in the header: {page}"
    );
}

#[tokio::test]
async fn the_subscribe_page_shows_the_configured_title_and_description_escaped() {
    let app = app_with_a_hostile_newsletter().await;

    let page = app
        .browse(format!("{}/", app.address))
        .await
        .text()
        .await
        .unwrap();

    assert_shows_the_escaped_title(&page, "the subscribe page");
    assert!(
        page.contains("<h1>Subscribe to &#60;script&#62;alert(1)&#60;/script&#62; Weekly</h1>"),
        "{page}"
    );
    assert!(
        page.contains(r#"Crabs &#38; &#60;b onclick=&#34;x()&#34;&#62;rust&#60;/b&#62;, weekly."#),
        "the description is missing or unescaped: {page}"
    );
}

#[tokio::test]
async fn every_other_page_shows_the_configured_title_escaped() {
    let app = spawn_app_with(|s| {
        s.newsletter.title = HOSTILE_TITLE.into();
        s.subscriptions.confirm_with_button = true;
    })
    .await;
    app.mock_email_api_ok().await;

    let refused = app.submit_form("name=&email=nope&website=").await;
    let check_inbox = app.submit_form(VALID_FORM).await;
    let link = app.local(&link_from_first_email(&app).await);
    let button = app.browse(link).await;
    let unknown = app
        .browse(format!(
            "{}/subscriptions/confirm?subscription_token={}",
            app.address,
            "A".repeat(32)
        ))
        .await;

    for (which, response) in [
        ("the refused form", refused),
        ("the check-your-inbox page", check_inbox),
        ("the confirm button page", button),
        ("the link-not-valid page", unknown),
    ] {
        assert!(is_html(&response), "{which}");
        assert_shows_the_escaped_title(&response.text().await.unwrap(), which);
    }
}

#[tokio::test]
async fn an_empty_description_leaves_no_empty_paragraph() {
    let app = spawn_app_with(|s| s.newsletter.description = String::new()).await;

    let page = app
        .browse(format!("{}/", app.address))
        .await
        .text()
        .await
        .unwrap();

    assert!(!page.contains(r#"class="description""#), "{page}");
    assert!(page.contains("<h1>Subscribe to "), "{page}");
}

#[tokio::test]
async fn the_app_refuses_to_start_with_an_empty_title_or_one_with_a_line_break() {
    let cases = [
        ("an empty title", "", "must not be empty"),
        ("a blank title", "  ", "must not be empty"),
        ("a line feed", "Rust\nWeekly", "U+000A"),
        ("a carriage return", "Rust\rWeekly", "U+000D"),
    ];
    // Whether or not the server runs delivery itself, which builds the
    // email client and so reads the newsletter first.
    for run_in_server in [true, false] {
        for (case, title, reason) in cases {
            let mut settings = get_configuration().unwrap();
            settings.application.port = 0;
            settings.metrics.port = 0;
            settings.email_client.providers = vec![EmailBackend::Inbox];
            settings.delivery.run_in_server = run_in_server;
            settings.newsletter.title = title.into();

            let Err(error) = Application::build(settings).await else {
                panic!("started with {case} (run_in_server = {run_in_server})");
            };

            let error = format!("{error:#}");
            assert!(
                error.contains("APP_NEWSLETTER__TITLE") && error.contains(reason),
                "{case} (run_in_server = {run_in_server}): {error}"
            );
        }
    }
}

#[tokio::test]
async fn every_answer_carries_strict_transport_security_when_it_is_set() {
    let app = spawn_app_with(|s| {
        s.application.hsts_max_age_seconds = 31_536_000;
        s.rate_limit.per_ip.burst = 1;
        s.rate_limit.per_ip.per_period = 1;
    })
    .await;
    let client = &app.api_client;
    let confirm = format!("{}/subscriptions/confirm", app.address);
    let answers = [
        ("a page", client.get(format!("{}/", app.address))),
        (
            "no such path",
            client.get(format!("{}/no/such/page", app.address)),
        ),
        (
            "a wrong method",
            client.delete(format!("{}/login", app.address)),
        ),
        (
            "an admin page, signed out",
            client.get(format!("{}/admin/dashboard", app.address)),
        ),
        (
            "a bad query",
            client.get(format!("{confirm}?subscription_token=%ff")),
        ),
        // The first spends the client's one request; the second is refused
        // by the rate limit's middleware, before any handler.
        (
            "a confirmation",
            client.get(format!("{confirm}?subscription_token=x")),
        ),
        (
            "too many requests",
            client.get(format!("{confirm}?subscription_token=x")),
        ),
    ];
    let mut statuses = Vec::new();
    for (case, request) in answers {
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        let hsts = response.headers().get("strict-transport-security");
        assert_eq!(
            hsts.map(|h| h.to_str().unwrap()),
            Some("max-age=31536000"),
            "{case} ({}) came without it",
            response.status()
        );
    }
    assert_eq!(statuses.last(), Some(&429), "the limit did not answer");
}

#[tokio::test]
async fn local_runs_on_plain_http_send_no_strict_transport_security() {
    let app = spawn_app().await;

    let response = app.get("/").await;

    assert!(
        response
            .headers()
            .get("strict-transport-security")
            .is_none(),
        "{:?}",
        response.headers()
    );
}
