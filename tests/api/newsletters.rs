//! The newsletter pages over HTTP: writing an issue, previewing it, sending
//! a test to oneself, publishing it once however often the form is sent,
//! following its progress live, and pausing, resuming, cancelling and
//! requeueing it.
//!
//! Issues that a test changes by hand are scheduled far ahead, so that no
//! sender or recorder running in the app touches them meanwhile.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::CONTENT_SECURITY_POLICY;
use uuid::Uuid;

use newsletter::keys::Keys;
use newsletter::subscribers::suppression::{self, Reason};

use crate::campaigns::add_subscribers;
use crate::helpers::{BASE_URL, BROWSER_ACCEPT, TestApp, eventually, spawn_app};
use crate::live::Events;
use crate::newsroom::{Browser, PASSWORD, audit_actions, create_admin, location};

/// A moment no sender reaches while a test runs.
pub const FAR_AHEAD: &str = "2099-01-01T09:00";

/// An app with an admin signed in, whose test sends go to `email`.
pub async fn signed_in(email: Option<&str>) -> (TestApp, Browser) {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    sqlx::query("UPDATE admins SET email = $2 WHERE id = $1")
        .bind(id)
        .bind(email)
        .execute(&app.db_pool)
        .await
        .unwrap();
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    (app, browser)
}

/// The compose form's hidden fields, as a fresh form carries them.
pub struct Form {
    pub csrf_token: String,
    pub idempotency_key: String,
}

pub async fn new_form(browser: &Browser) -> Form {
    form_at(browser, "/admin/newsletters/new").await
}

/// The hidden fields of the compose form on the page at `path`: the new
/// issue's, or a draft's.
pub async fn form_at(browser: &Browser, path: &str) -> Form {
    let response = browser.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let page = response.text().await.unwrap();
    Form {
        csrf_token: hidden_field(&page, "csrf_token"),
        idempotency_key: hidden_field(&page, "idempotency_key"),
    }
}

pub fn hidden_field(page: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {page}"))
        + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

/// Posts the compose form with `action` and these fields, on top of the
/// form's hidden ones. A publish goes as the dialog sends it once answered
/// yes (`confirmed=yes`); [`ask_to_publish`] sends it unanswered.
pub async fn compose(
    browser: &Browser,
    form: &Form,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let confirmed = if action == "publish" { "yes" } else { "" };
    compose_answered(browser, form, action, confirmed, fields).await
}

/// Posts the compose form as [`compose`] does, with this answer to the
/// publish question.
async fn compose_answered(
    browser: &Browser,
    form: &Form,
    action: &str,
    confirmed: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![
        ("csrf_token", form.csrf_token.as_str()),
        ("idempotency_key", form.idempotency_key.as_str()),
        ("action", action),
        ("confirmed", confirmed),
    ];
    all.extend_from_slice(fields);
    browser.post("/admin/newsletters", &all).await
}

/// Presses Publish on a form sent without scripts: no answer yet.
async fn ask_to_publish(
    browser: &Browser,
    form: &Form,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    compose_answered(browser, form, "publish", "", fields).await
}

/// The test sends' unsubscribe link, as the app under test signs it.
fn test_unsubscribe_url(app: &TestApp) -> String {
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    format!("{BASE_URL}/unsubscribe/{}", keys.test_unsubscribe_token())
}

/// Publishes an issue with a fresh form and returns its page's path.
async fn publish(browser: &Browser, title: &str, send_at: &str) -> String {
    let form = new_form(browser).await;
    let fields = [
        ("title", title),
        ("content", "Hello, *world*."),
        ("send_at", send_at),
    ];
    let response = compose(browser, &form, "publish", &fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    location(&response).to_owned()
}

pub fn issue_id(path: &str) -> Uuid {
    path.rsplit('/').next().unwrap().parse().unwrap()
}

async fn issue_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn issue_state(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM newsletter_issues WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// Undoes the escaping of an HTML attribute's value as the templates write
/// it.
fn unescape(attribute: &str) -> String {
    attribute
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
}

/// The text between `start` and the next `end` in `page`.
fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let from = page
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {page}"))
        + start.len();
    &page[from..from + page[from..].find(end).unwrap()]
}

#[tokio::test]
async fn the_newsroom_lists_newsletters_in_its_navigation_and_offers_a_new_issue() {
    let (_app, browser) = signed_in(None).await;

    let page = browser.get("/admin/dashboard").await.text().await.unwrap();
    assert!(page.contains(r#"<a href="/admin/newsletters">Newsletters</a>"#));
    let list = browser.get("/admin/newsletters").await;
    assert_eq!(list.status(), StatusCode::OK);
    let list = list.text().await.unwrap();
    assert!(list.contains(r#"href="/admin/newsletters/new""#), "{list}");
    assert!(list.contains("No issue yet"), "{list}");
}

#[tokio::test]
async fn each_showing_of_the_form_has_a_fresh_key_and_says_send_at_is_utc() {
    let (_app, browser) = signed_in(None).await;

    let first = new_form(&browser).await;
    let second = new_form(&browser).await;

    assert_ne!(first.idempotency_key, second.idempotency_key);
    Uuid::parse_str(&first.idempotency_key).expect("the key is a UUID");
    let page = browser
        .get("/admin/newsletters/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"type="datetime-local""#), "{page}");
    assert!(page.contains("Send at (UTC)"), "{page}");
    for action in ["preview", "test", "publish"] {
        assert!(
            page.contains(&format!(r#"name="action" value="{action}""#)),
            "no {action} button"
        );
    }
}

#[tokio::test]
async fn a_preview_shows_the_email_as_a_subscriber_gets_it_sanitised_and_keeps_the_form() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let content =
        "Hello **world**.\n\n<script>alert('no')</script>\n\n[Read more](https://example.com/more)";

    let response = compose(
        &browser,
        &form,
        "preview",
        &[("title", "Issue #1"), ("content", content)],
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("img-src http: https:"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let page = response.text().await.unwrap();
    assert_eq!(between(&page, r#"id="preview-subject">"#, "<"), "Issue #1");
    let frame = between(&page, "<iframe sandbox srcdoc=\"", "\"");
    let html = unescape(frame);
    assert!(html.contains("<strong>world</strong>"), "{html}");
    assert!(html.contains("Hello Ada Lovelace,"), "{html}");
    assert!(
        html.contains(&format!(r#"href="{}""#, test_unsubscribe_url(&app))),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("{{"), "placeholders left: {html}");
    // The frame holds the document escaped, never as markup of the page.
    assert!(!frame.contains('<'), "{frame}");
    let text = unescape(between(&page, r#"<pre id="preview-text">"#, "</pre>"));
    assert!(text.contains("Hello Ada Lovelace,"), "{text}");
    assert!(text.contains(&test_unsubscribe_url(&app)), "{text}");
    // The form goes on with what was typed and the same key.
    assert_eq!(hidden_field(&page, "idempotency_key"), form.idempotency_key);
    assert!(page.contains(r#"value="Issue #1""#), "{page}");
    assert!(page.contains("Hello **world**."), "{page}");
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn a_test_send_goes_to_the_admins_own_address_alone_on_the_broadcast_stream() {
    let (app, browser) = signed_in(Some("ada@example.com")).await;
    app.mock_email_api_ok().await;
    let form = new_form(&browser).await;

    let response = compose(
        &browser,
        &form,
        "test",
        &[("title", "Issue #1"), ("content", "Hello **world**.")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("Test sent to ada@example.com."), "{page}");
    assert_eq!(hidden_field(&page, "idempotency_key"), form.idempotency_key);
    app.wait_for_outbox_to_settle().await;
    let sent = app.sent_emails().await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let email = &sent[0];
    assert_eq!(email["To"], "ada@example.com");
    assert_eq!(email["MessageStream"], "broadcast");
    assert_eq!(email["Subject"], "[Test] Issue #1");
    let html = email["HtmlBody"].as_str().unwrap();
    assert!(html.contains("Hello Ada Lovelace,"), "{html}");
    assert!(html.contains("<strong>world</strong>"), "{html}");
    assert_eq!(issue_count(&app).await, 0, "a test publishes nothing");
}

#[tokio::test]
async fn a_test_sends_unsubscribe_link_opens_a_page_that_says_so_and_unsubscribes_no_one() {
    let (app, browser) = signed_in(Some("ada@example.com")).await;
    app.mock_email_api_ok().await;
    let readers = add_subscribers(&app, 3, "confirmed").await;
    let form = new_form(&browser).await;
    let response = compose(
        &browser,
        &form,
        "test",
        &[("title", "Issue #1"), ("content", "Hello.")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.wait_for_outbox_to_settle().await;
    let sent = app.sent_emails().await;
    let html = sent[0]["HtmlBody"].as_str().unwrap();
    let text = sent[0]["TextBody"].as_str().unwrap();
    let link = test_unsubscribe_url(&app);
    assert!(html.contains(&format!(r#"href="{link}""#)), "{html}");
    assert!(text.contains(&link), "{text}");
    let path = link.strip_prefix(BASE_URL).unwrap();

    let opened = app.get(path).await;
    assert_eq!(opened.status(), StatusCode::OK);
    let page = opened.text().await.unwrap();
    assert!(
        page.contains("This link came from a test email: it unsubscribes no one."),
        "{page}"
    );
    for accept in [None, Some(BROWSER_ACCEPT)] {
        let mut request = app
            .api_client
            .post(format!("{}{path}", app.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click");
        if let Some(accept) = accept {
            request = request.header("Accept", accept);
        }
        let pressed = request.send().await.unwrap();
        assert_eq!(pressed.status(), StatusCode::OK, "{accept:?}");
        let said = pressed.text().await.unwrap();
        assert!(
            said.contains("no one was unsubscribed"),
            "{accept:?}: {said}"
        );
    }

    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM subscriptions")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["confirmed"; 3], "{readers:?}");
}

#[tokio::test]
async fn a_preview_of_content_that_opens_with_the_title_shows_the_title_once() {
    let (_app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;

    let response = compose(
        &browser,
        &form,
        "preview",
        &[
            ("title", "Winter issue"),
            ("content", "# Winter issue\n\nThe programme is out."),
        ],
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let html = unescape(between(&page, "<iframe sandbox srcdoc=\"", "\""));
    assert_eq!(html.matches("Winter issue</h1>").count(), 1, "{html}");
    assert!(html.contains("The programme is out."), "{html}");
    let text = unescape(between(&page, r#"<pre id="preview-text">"#, "</pre>"));
    assert_eq!(text.matches("Winter issue").count(), 1, "{text}");
}

#[tokio::test]
async fn a_test_send_without_an_address_of_ones_own_says_where_to_set_it_and_sends_nothing() {
    let (app, browser) = signed_in(None).await;
    app.mock_email_api_ok().await;
    let form = new_form(&browser).await;

    let response = compose(
        &browser,
        &form,
        "test",
        &[("title", "Issue #1"), ("content", "Hello.")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("You have no address for test sends yet."),
        "{page}"
    );
    assert!(page.contains("“Your account” on the dashboard"), "{page}");
    assert!(page.contains(r#"value="Issue #1""#), "the title is kept");
    assert!(app.outbox().await.is_empty());
    assert!(app.email_api_requests().await.is_empty());
}

#[tokio::test]
async fn a_draft_that_cannot_be_sent_is_shown_again_with_the_reason_and_what_was_typed() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;

    let response = compose(
        &browser,
        &form,
        "publish",
        &[("title", "  "), ("content", "Kept as typed.")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"<p class="error" id="title-error">The title must not be empty.</p>"#),
        "{page}"
    );
    assert!(page.contains("Kept as typed."), "{page}");
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn hostile_characters_in_any_field_are_refused_with_a_4xx_and_publish_nothing() {
    let (app, browser) = signed_in(None).await;
    let cases: [(&str, &[(&str, &str)]); 5] = [
        (
            "a NUL in the title",
            &[("title", "Hi\0there"), ("content", "Hello.")],
        ),
        (
            "a line break in the title",
            &[("title", "Hi\r\nBcc: x"), ("content", "Hello.")],
        ),
        (
            "a NUL in the content",
            &[("title", "Hi"), ("content", "Hel\0lo.")],
        ),
        (
            "a bidi override in the title",
            &[("title", "Hi\u{202e}there"), ("content", "Hello.")],
        ),
        (
            "a NUL in send_at",
            &[
                ("title", "Hi"),
                ("content", "Hello."),
                ("send_at", "2030-01-01T00:00\0"),
            ],
        ),
    ];

    for (case, fields) in cases {
        let form = new_form(&browser).await;
        let response = compose(&browser, &form, "publish", fields).await;
        let status = response.status();
        assert!(status.is_client_error(), "{case}: {status}");
    }
    let form = new_form(&browser).await;
    let key = format!("{}\0", form.idempotency_key);
    let response = browser
        .post(
            "/admin/newsletters",
            &[
                ("csrf_token", form.csrf_token.as_str()),
                ("idempotency_key", &key),
                ("action", "publish"),
                ("title", "Hi"),
                ("content", "Hello."),
            ],
        )
        .await;
    assert!(
        response.status().is_client_error(),
        "a NUL in the key: {}",
        response.status()
    );
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn an_unreadable_send_at_is_refused_with_400_and_the_format_expected() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;

    let response = compose(
        &browser,
        &form,
        "publish",
        &[
            ("title", "Issue #1"),
            ("content", "Hello."),
            ("send_at", "next tuesday"),
        ],
    )
    .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"id="send_at-error""#), "{page}");
    assert!(page.contains("YYYY-MM-DDTHH:MM"), "{page}");
    assert!(page.contains(r#"value="next tuesday""#), "{page}");
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn a_send_at_already_past_sends_the_issue_now() {
    let (app, browser) = signed_in(None).await;

    let path = publish(&browser, "Late", "2001-02-03T04:05").await;

    let late: bool = sqlx::query_scalar(
        "SELECT send_at > now() - interval '1 minute' FROM newsletter_issues WHERE id = $1",
    )
    .bind(issue_id(&path))
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(late, "the issue kept a send_at in the past");
}

#[tokio::test]
async fn publishing_opens_the_issues_page_and_the_list_shows_it() {
    let (app, browser) = signed_in(None).await;

    let path = publish(&browser, "Issue <One>", FAR_AHEAD).await;

    assert!(path.starts_with("/admin/newsletters/"), "{path}");
    let id = issue_id(&path);
    // Counts as senders keep them, set by hand.
    sqlx::query(
        "UPDATE newsletter_issues \
         SET recipients = 10, sent = 4, failed = 2, skipped = 1 WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let list = browser
        .get("/admin/newsletters")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains(&format!(r#"<a href="{path}">Issue &#60;One&#62;</a>"#)),
        "{list}"
    );
    assert!(list.contains(">scheduled</span>"), "{list}");
    let page = browser.get(&path).await;
    assert_eq!(page.status(), StatusCode::OK);
    let policy = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("<h1>Issue &#60;One&#62;</h1>"), "{page}");
    assert!(page.contains(r#"<script src="/admin/newsletters.js" defer>"#));
    for (count, value) in [
        ("recipients", 10),
        ("queued", 3),
        ("sent", 4),
        ("failed", 2),
        ("skipped", 1),
    ] {
        assert!(
            page.contains(&format!(r#"id="count-{count}">{value}<"#)),
            "{count} is not {value}: {page}"
        );
    }
    assert!(page.contains(r#"<progress id="issue-progress" max="100" value="70">"#));
    assert!(page.contains("Send time 2099-01-01 09:00 UTC"), "{page}");
    assert_eq!(audit_actions(&app).await, ["sign-in", "issue-published"]);
}

/// Two readers the publish question counts, and three it does not: one
/// waiting for confirmation, one unsubscribed, one confirmed but on the
/// suppression list.
async fn an_audience_of_two(app: &TestApp) {
    add_subscribers(app, 2, "confirmed").await;
    add_subscribers(app, 1, "pending_confirmation").await;
    add_subscribers(app, 1, "unsubscribed").await;
    let [suppressed] = add_subscribers(app, 1, "confirmed").await[..] else {
        unreachable!("one was added")
    };
    let address: String = sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(suppressed)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    let mut conn = app.db_pool.acquire().await.unwrap();
    suppression::suppress(
        &mut conn,
        &keys,
        &address,
        Reason::HardBounce,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_publish_button_asks_before_sending_naming_the_confirmed_unsuppressed_audience() {
    let (app, browser) = signed_in(None).await;
    an_audience_of_two(&app).await;

    let response = browser.get("/admin/newsletters/new").await;

    let policy = response.headers()[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"id="publish-button" data-confirm="Send to 2 subscribers?""#),
        "{page}"
    );
    assert!(page.contains(r#"<input type="hidden" name="confirmed" value="">"#));
    assert!(page.contains(r#"<script src="/admin/newsletters.js" defer>"#));
    let script = browser
        .get("/admin/newsletters.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("window.confirm(button.dataset.confirm)"),
        "{script}"
    );
}

#[tokio::test]
async fn with_one_subscriber_the_question_is_in_the_singular() {
    let (app, browser) = signed_in(None).await;
    add_subscribers(&app, 1, "confirmed").await;
    let form = new_form(&browser).await;

    let page = browser
        .get("/admin/newsletters/new")
        .await
        .text()
        .await
        .unwrap();
    let asked = ask_to_publish(&browser, &form, &[("title", "One"), ("content", "Hi.")])
        .await
        .text()
        .await
        .unwrap();
    let asked_late = ask_to_publish(
        &browser,
        &form,
        &[
            ("title", "One"),
            ("content", "Hi."),
            ("send_at", "2001-02-03T04:05"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();

    assert!(
        page.contains(r#"data-confirm="Send to 1 subscriber?""#),
        "{page}"
    );
    assert!(asked.contains(">Send to 1 subscriber?<"), "{asked}");
    assert!(asked.contains(">Send to 1 subscriber</button>"), "{asked}");
    // Now, or a moment already past: it goes at once.
    for page in [&asked, &asked_late] {
        assert!(
            page.contains("It goes out as soon as you publish."),
            "{page}"
        );
    }
}

#[tokio::test]
async fn publishing_without_an_answer_asks_on_a_page_naming_the_audience_and_publishes_nothing() {
    let (app, browser) = signed_in(None).await;
    an_audience_of_two(&app).await;
    let form = new_form(&browser).await;

    let response = ask_to_publish(
        &browser,
        &form,
        &[
            ("title", "Winter <issue>"),
            ("content", "Line one\nLine \"two\"."),
            ("send_at", FAR_AHEAD),
        ],
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(
        page.contains(r#"<p class="question" id="publish-question">Send to 2 subscribers?</p>"#),
        "{page}"
    );
    assert!(
        page.contains("It goes out at 2099-01-01 09:00 UTC."),
        "{page}"
    );
    assert!(
        page.contains(r#"id="confirm-subject">Winter &#60;issue&#62;<"#),
        "{page}"
    );
    // What was typed goes on, hidden, with the form's key and the answer.
    assert_eq!(hidden_field(&page, "idempotency_key"), form.idempotency_key);
    assert_eq!(unescape(&hidden_field(&page, "title")), "Winter <issue>");
    assert_eq!(
        unescape(&hidden_field(&page, "content")),
        "Line one\nLine \"two\"."
    );
    assert_eq!(hidden_field(&page, "send_at"), FAR_AHEAD);
    assert_eq!(hidden_field(&page, "confirmed"), "yes");
    assert!(page.contains(r#"name="action" value="publish" id="confirm-publish""#));
    assert!(page.contains(r#"name="action" value="edit""#));
    assert_eq!(issue_count(&app).await, 0);
    assert_eq!(audit_actions(&app).await, ["sign-in"]);
}

/// Holds a lock on the suppression list that every read of it waits
/// behind, until the returned transaction is dropped: the publish
/// question's count then runs into its time limit, as on a list too large
/// to count in time.
async fn suppressions_locked(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE suppressions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

#[tokio::test]
async fn the_form_and_the_question_ask_without_a_number_when_the_audience_cannot_be_counted() {
    let (app, browser) = signed_in(None).await;
    an_audience_of_two(&app).await;
    let form = new_form(&browser).await;
    let lock = suppressions_locked(&app).await;

    let shown = browser.get("/admin/newsletters/new").await;
    let asked = ask_to_publish(&browser, &form, &[("title", "T"), ("content", "Hi.")]).await;

    assert_eq!(shown.status(), StatusCode::OK);
    let shown = shown.text().await.unwrap();
    assert!(
        shown.contains(r#"data-confirm="Send to every confirmed subscriber?""#),
        "{shown}"
    );
    assert_eq!(asked.status(), StatusCode::OK);
    let asked = asked.text().await.unwrap();
    assert!(
        asked.contains(r#"id="publish-question">Send to every confirmed subscriber?</p>"#),
        "{asked}"
    );
    assert!(
        asked.contains(">Send to every confirmed subscriber</button>"),
        "{asked}"
    );
    assert!(asked.contains("could not be counted just now"), "{asked}");
    assert!(!asked.contains("Counted now"), "{asked}");
    // Its button still publishes what was typed.
    assert_eq!(hidden_field(&asked, "confirmed"), "yes");
    assert_eq!(hidden_field(&asked, "title"), "T");

    drop(lock);
    let counted = browser
        .get("/admin/newsletters/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        counted.contains(r#"data-confirm="Send to 2 subscribers?""#),
        "{counted}"
    );
}

#[tokio::test]
async fn a_refused_draft_is_still_refused_with_422_when_the_audience_cannot_be_counted() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let _lock = suppressions_locked(&app).await;

    let response = compose(
        &browser,
        &form,
        "publish",
        &[("title", "  "), ("content", "Kept as typed.")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"id="title-error""#), "{page}");
    assert!(page.contains(">Kept as typed.</textarea>"), "{page}");
    assert!(
        page.contains(r#"data-confirm="Send to every confirmed subscriber?""#),
        "{page}"
    );
    assert_eq!(issue_count(&app).await, 0);
}

/// The hidden fields of the publish question's form, as its button sends
/// them.
fn question_form(page: &str, action: &'static str) -> Vec<(&'static str, String)> {
    let mut fields: Vec<(&'static str, String)> = [
        "csrf_token",
        "idempotency_key",
        "title",
        "content",
        "send_at",
        "confirmed",
    ]
    .into_iter()
    .map(|name| (name, unescape(&hidden_field(page, name))))
    .collect();
    fields.push(("action", action.to_owned()));
    fields
}

#[tokio::test]
async fn the_questions_button_publishes_once_however_often_it_is_pressed() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let asked = ask_to_publish(
        &browser,
        &form,
        &[("title", "Once"), ("content", "Only once.")],
    )
    .await
    .text()
    .await
    .unwrap();
    let fields = question_form(&asked, "publish");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let first = browser.post("/admin/newsletters", &fields).await;
    let second = browser.post("/admin/newsletters", &fields).await;

    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), location(&second));
    assert_eq!(issue_count(&app).await, 1);
    let stored: (String, String) = sqlx::query_as("SELECT title, content FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(stored, ("Once".to_owned(), "Only once.".to_owned()));
}

#[tokio::test]
async fn back_from_the_question_the_form_keeps_what_was_typed_and_its_key() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let asked = ask_to_publish(
        &browser,
        &form,
        &[
            ("title", "Draft"),
            ("content", "Still *writing*."),
            ("send_at", FAR_AHEAD),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    let fields = question_form(&asked, "edit");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let back = browser.post("/admin/newsletters", &fields).await;

    assert_eq!(back.status(), StatusCode::OK);
    let page = back.text().await.unwrap();
    assert!(page.contains(r#"<h1>New issue</h1>"#), "{page}");
    assert!(page.contains(r#"value="Draft""#), "{page}");
    assert!(page.contains(">Still *writing*.</textarea>"), "{page}");
    assert!(page.contains(&format!(r#"value="{FAR_AHEAD}""#)), "{page}");
    assert_eq!(hidden_field(&page, "idempotency_key"), form.idempotency_key);
    // The answer is not carried back: the next Publish asks again.
    assert_eq!(hidden_field(&page, "confirmed"), "");
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn an_answer_other_than_yes_is_refused_with_400_and_publishes_nothing() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;

    let response = compose_answered(
        &browser,
        &form,
        "publish",
        "sure",
        &[("title", "Hi"), ("content", "Hello.")],
    )
    .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(page.contains("confirmed is `yes` or empty"), "{page}");
    assert!(page.contains(r#"value="Hi""#), "the title is kept");
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn publishing_the_same_form_twice_publishes_once_and_answers_the_same() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let fields = [("title", "Once"), ("content", "Only once.")];

    let first = compose(&browser, &form, "publish", &fields).await;
    let second = compose(&browser, &form, "publish", &fields).await;

    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), location(&second));
    assert_eq!(issue_count(&app).await, 1);
    assert_eq!(audit_actions(&app).await, ["sign-in", "issue-published"]);
}

#[tokio::test]
async fn publishing_the_same_form_twice_at_once_publishes_once() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let fields = [("title", "Once"), ("content", "Only once.")];

    let (first, second) = tokio::join!(
        compose(&browser, &form, "publish", &fields),
        compose(&browser, &form, "publish", &fields),
    );

    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), location(&second));
    assert_eq!(issue_count(&app).await, 1);
}

#[tokio::test]
async fn a_form_that_published_one_text_refuses_another_with_422() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let published = compose(
        &browser,
        &form,
        "publish",
        &[("title", "First"), ("content", "The first text.")],
    )
    .await;
    assert_eq!(published.status(), StatusCode::SEE_OTHER);

    let other = compose(
        &browser,
        &form,
        "publish",
        &[("title", "First"), ("content", "Another text.")],
    )
    .await;

    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = other.text().await.unwrap();
    assert!(
        page.contains("This form already published an issue, with other text."),
        "{page}"
    );
    assert!(page.contains("Another text."), "the text is kept");
    assert_ne!(
        hidden_field(&page, "idempotency_key"),
        form.idempotency_key,
        "a second press must be a new issue, on purpose"
    );
    assert_eq!(issue_count(&app).await, 1);
}

#[tokio::test]
async fn a_form_that_published_a_private_issue_refuses_the_same_text_made_public_with_422() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let text = [("title", "First"), ("content", "The first text.")];
    let published = compose(&browser, &form, "publish", &text).await;
    assert_eq!(published.status(), StatusCode::SEE_OTHER);

    let made_public = compose(
        &browser,
        &form,
        "publish",
        &[text[0], text[1], ("public", "yes")],
    )
    .await;

    assert_eq!(made_public.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(issue_count(&app).await, 1);
    let public: i64 =
        sqlx::query_scalar("SELECT count(*) FROM newsletter_issues WHERE public_at IS NOT NULL")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(public, 0, "the replay made nothing public");
}

#[tokio::test]
async fn a_key_used_more_than_a_day_ago_publishes_a_new_issue() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;
    let fields = [("title", "Weekly"), ("content", "Same text.")];
    let first = compose(&browser, &form, "publish", &fields).await;
    sqlx::query("UPDATE publish_requests SET created_at = now() - interval '25 hours'")
        .execute(&app.db_pool)
        .await
        .unwrap();

    let second = compose(&browser, &form, "publish", &fields).await;

    assert_eq!(second.status(), StatusCode::SEE_OTHER);
    assert_ne!(location(&first), location(&second));
    assert_eq!(issue_count(&app).await, 2);
}

#[tokio::test]
async fn an_issue_too_long_for_the_form_is_refused_with_413_and_one_just_too_long_with_422() {
    let (app, browser) = signed_in(None).await;
    let form = new_form(&browser).await;

    let huge = "a".repeat(1_000_000);
    let refused = compose(
        &browser,
        &form,
        "publish",
        &[("title", "Huge"), ("content", &huge)],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let long = "a".repeat(200_001);
    let response = compose(
        &browser,
        &form,
        "preview",
        &[("title", "Long"), ("content", &long)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("The content must be at most 200000 bytes long, not 200001."),
        "{}",
        &page[..2000]
    );
    assert_eq!(issue_count(&app).await, 0);
}

#[tokio::test]
async fn an_address_that_names_no_issue_answers_404() {
    let (_app, browser) = signed_in(None).await;
    let unknown = Uuid::new_v4();

    for path in [
        "/admin/newsletters/not-an-issue".to_owned(),
        format!("/admin/newsletters/{unknown}"),
        format!("/admin/newsletters/{unknown}/events"),
        "/admin/newsletters/12345/events".to_owned(),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    for action in ["pause", "resume", "cancel", "requeue"] {
        for id in ["not-an-issue".to_owned(), unknown.to_string()] {
            let path = format!("/admin/newsletters/{id}/{action}");
            let response = browser.submit(&path, &[]).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST {path}");
        }
    }
}

#[tokio::test]
async fn the_forms_of_an_issue_without_the_sessions_csrf_token_are_refused_and_change_nothing() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Guarded", FAR_AHEAD).await;
    let form = new_form(&browser).await;

    for action in ["pause", "cancel"] {
        let response = browser
            .post(&format!("{path}/{action}"), &[("csrf_token", "forged")])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{action}");
    }
    let publish = browser
        .post(
            "/admin/newsletters",
            &[
                ("title", "Forged"),
                ("content", "Forged."),
                ("action", "publish"),
                ("idempotency_key", &form.idempotency_key),
            ],
        )
        .await;
    assert_eq!(publish.status(), StatusCode::FORBIDDEN);

    assert_eq!(issue_state(&app, issue_id(&path)).await, "sending");
    assert_eq!(issue_count(&app).await, 1);
}

#[tokio::test]
async fn pausing_resuming_and_cancelling_move_an_issue_through_its_states_on_record() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Steps", FAR_AHEAD).await;
    let id = issue_id(&path);

    for (action, state) in [
        ("pause", "paused"),
        ("resume", "sending"),
        ("pause", "paused"),
        ("cancel", "cancelled"),
    ] {
        let response = browser.submit(&format!("{path}/{action}"), &[]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{action}");
        assert_eq!(location(&response), path);
        assert_eq!(issue_state(&app, id).await, state, "after {action}");
    }
    assert_eq!(
        audit_actions(&app).await,
        [
            "sign-in",
            "issue-published",
            "issue-paused",
            "issue-resumed",
            "issue-paused",
            "issue-cancelled"
        ]
    );
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'issue-cancelled'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(detail, format!("Steps ({id})"));
}

#[tokio::test]
async fn an_action_the_issues_state_does_not_allow_answers_409_with_the_reason() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Steps", FAR_AHEAD).await;

    let resume = browser.submit(&format!("{path}/resume"), &[]).await;
    assert_eq!(resume.status(), StatusCode::CONFLICT);
    let page = resume.text().await.unwrap();
    assert!(
        page.contains("Only a paused issue can be resumed; this one is scheduled."),
        "{page}"
    );
    assert!(page.contains("<h1>Steps</h1>"), "the issue's page: {page}");

    let cancel = browser.submit(&format!("{path}/cancel"), &[]).await;
    assert_eq!(cancel.status(), StatusCode::SEE_OTHER);
    for action in ["pause", "cancel", "requeue"] {
        let again = browser.submit(&format!("{path}/{action}"), &[]).await;
        assert_eq!(again.status(), StatusCode::CONFLICT, "{action}");
    }
    assert_eq!(issue_state(&app, issue_id(&path)).await, "cancelled");
    let page = browser.get(&path).await.text().await.unwrap();
    for action in ["pause", "resume", "cancel", "requeue"] {
        let form = format!(r#"action="{path}/{action}" data-action="{action}""#);
        let at = page
            .find(&form)
            .unwrap_or_else(|| panic!("no {action} form"));
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        assert!(tag.ends_with(" hidden"), "{action} is offered: {tag}");
    }
}

/// Stores a subscriber and `n` deliveries of the issue to them with
/// `status` and `reason`, counted on the issue, as senders would leave them.
async fn store_settled_deliveries(
    app: &TestApp,
    issue: Uuid,
    email: &str,
    n: i32,
    status: &str,
    reason: &str,
) {
    let subscriber = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         VALUES ($1, $2, 'Grace', now(), 'confirmed', now())",
    )
    .bind(subscriber)
    .bind(email)
    .execute(&app.db_pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH recorded AS ( \
             INSERT INTO deliveries (issue_id, seq, subscriber_id, status, attempts, last_error) \
             SELECT $1, i.recipients + n, $2, $4, 1, $5 \
             FROM newsletter_issues i, generate_series(1, $3) AS n WHERE i.id = $1 \
             RETURNING seq \
         ), batch AS ( \
             INSERT INTO delivery_batches (issue_id, first_seq, last_seq, done) \
             SELECT $1, min(seq), max(seq), true FROM recorded \
         ) \
         UPDATE newsletter_issues \
         SET recipients = recipients + $3, audience_complete = true, \
             failed = failed + CASE WHEN $4 = 'failed' THEN $3 ELSE 0 END, \
             skipped = skipped + CASE WHEN $4 = 'skipped' THEN $3 ELSE 0 END \
         WHERE id = $1",
    )
    .bind(issue)
    .bind(subscriber)
    .bind(n)
    .bind(status)
    .bind(reason)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_issue_page_lists_who_did_not_get_it_page_by_page_and_requeues_the_failed() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Misses", FAR_AHEAD).await;
    let id = issue_id(&path);
    store_settled_deliveries(&app, id, "full@example.com", 2, "failed", "mailbox full").await;
    store_settled_deliveries(&app, id, "gone@example.com", 53, "skipped", "unsubscribed").await;

    let page = browser.get(&path).await.text().await.unwrap();
    let rows = page.matches("<tr><td>").count();
    assert_eq!(rows, 50, "a page of the list");
    assert!(
        page.contains(
            "<td>full@example.com</td><td>failed</td><td class=\"reason\">mailbox full</td>"
        ),
        "{page}"
    );
    assert!(page.contains(r#"data-action="requeue""#));
    let next = unescape(between(&page, r#"<p><a href=""#, r#"" rel="next""#));
    assert_eq!(next, format!("{path}?after=50#undelivered"));
    let rest = browser
        .get(next.split('#').next().unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rest.matches("<tr><td>").count(), 5);
    assert!(!rest.contains(r#"rel="next""#));
    let malformed = browser.get(&format!("{path}?after=x")).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

    let requeued = browser.submit(&format!("{path}/requeue"), &[]).await;

    assert_eq!(requeued.status(), StatusCode::SEE_OTHER);
    let (failed, queued): (i64, i64) = sqlx::query_as(
        "SELECT i.failed, (SELECT count(*) FROM deliveries WHERE issue_id = $1 AND status = 'queued') \
         FROM newsletter_issues i WHERE i.id = $1",
    )
    .bind(id)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!((failed, queued), (0, 2));
    assert!(
        audit_actions(&app)
            .await
            .contains(&"failed-deliveries-requeued".to_owned())
    );
    let again = browser.submit(&format!("{path}/requeue"), &[]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("There are no failed deliveries to queue again.")
    );
}

#[tokio::test]
async fn the_live_updates_start_with_where_the_issue_stands_and_follow_each_change() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Live", FAR_AHEAD).await;
    let id = issue_id(&path);
    let mut events = Events::open(&browser, &path).await;

    let first = events.next_event().await;
    assert_eq!(first["state"], "scheduled");
    assert_eq!(first["recipients"], 0);
    assert_eq!(first["percent"], 0);
    assert_eq!(first["finished"], false);

    let paused = browser.submit(&format!("{path}/pause"), &[]).await;
    assert_eq!(paused.status(), StatusCode::SEE_OTHER);
    let event = events
        .until("the paused state", |e| e["state"] == "paused")
        .await;
    assert_eq!(event["rate"], "–");

    sqlx::query(
        "UPDATE newsletter_issues SET recipients = 4, sent = 2, audience_complete = true \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let event = events.until("two sent", |e| e["sent"] == 2).await;
    assert_eq!(event["queued"], 2);
    assert_eq!(event["percent"], 50);
}

#[tokio::test]
async fn the_live_updates_end_once_the_issue_is_cancelled() {
    let (_app, browser) = signed_in(None).await;
    let path = publish(&browser, "Ending", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    let cancelled = browser.submit(&format!("{path}/cancel"), &[]).await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);

    let last = events
        .until("the cancelled state", |e| e["state"] == "cancelled")
        .await;
    assert_eq!(last["finished"], true);
    assert_eq!(events.next_block(Duration::from_secs(10)).await, None);
}

/// How long a stream may take to notice that its session ended: a few
/// checks' worth, with room for a slow machine.
const SESSION_END_NOTICED: Duration = Duration::from_secs(15);

/// Whether opening the issue's stream again is refused as a signed-out
/// EventSource would be: 401, no stream.
async fn reopening_is_refused(browser: &Browser, path: &str) -> bool {
    let response = browser
        .client
        .get(format!("{}{path}/events", browser.address))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    response.status() == StatusCode::UNAUTHORIZED
}

#[tokio::test]
async fn the_live_updates_end_within_seconds_of_signing_out() {
    let (_app, browser) = signed_in(None).await;
    let path = publish(&browser, "Watched", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    // The same session as the stream's, from the same cookie jar.
    let signed_out = browser.submit("/admin/logout", &[]).await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);

    events.until_the_end(SESSION_END_NOTICED).await;
    assert!(reopening_is_refused(&browser, &path).await);
}

#[tokio::test]
async fn the_live_updates_end_within_seconds_of_a_password_change_made_elsewhere() {
    let (app, laptop) = signed_in(None).await;
    let path = publish(&laptop, "Watched", FAR_AHEAD).await;
    let mut events = Events::open(&laptop, &path).await;
    events.next_event().await;

    let phone = Browser::signed_in(&app, "ada", PASSWORD).await;
    let new_password = "a much longer new password";
    let changed = phone.change_password(PASSWORD, new_password).await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);

    events.until_the_end(SESSION_END_NOTICED).await;
    assert!(reopening_is_refused(&laptop, &path).await);
}

#[tokio::test]
async fn the_live_updates_end_after_a_password_reset_that_left_redis_untouched() {
    // `newsletter admin reset-password` raises the generation in Postgres
    // only; the session is still in Redis.
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Watched", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    sqlx::query("UPDATE admins SET session_generation = session_generation + 1")
        .execute(&app.db_pool)
        .await
        .unwrap();

    events.until_the_end(SESSION_END_NOTICED).await;
    assert!(reopening_is_refused(&browser, &path).await);
}

#[tokio::test]
async fn an_open_live_updates_page_does_not_keep_an_idle_session_alive() {
    let app = crate::helpers::spawn_app_with(|s| s.admin.session_idle_timeout_seconds = 3).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let path = publish(&browser, "Left open", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    // Nothing but the stream's own checks touch the session from here: if
    // they slid its idle timeout, the stream would run on.
    events.until_the_end(SESSION_END_NOTICED).await;
    assert!(reopening_is_refused(&browser, &path).await);
}

#[tokio::test]
async fn the_live_updates_end_when_redis_cannot_vouch_for_the_session() {
    let proxy = crate::helpers::TcpProxy::to_redis().await;
    let app = crate::helpers::spawn_app_with(|s| {
        s.redis_uri = format!("redis://127.0.0.1:{}", proxy.port).into();
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let path = publish(&browser, "Watched", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    proxy.cut();

    events.until_the_end(SESSION_END_NOTICED).await;
    // Connecting again gets the guard's answer while Redis is away.
    let again = browser
        .client
        .get(format!("{}{path}/events", browser.address))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_burst_of_changes_reaches_a_watching_page_as_a_few_events_ending_with_the_last() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Busy", FAR_AHEAD).await;
    let id = issue_id(&path);
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    // 500 commits, each announced, in about as long as they take.
    let started = tokio::time::Instant::now();
    for sent in 1..=500 {
        sqlx::query("UPDATE newsletter_issues SET recipients = 500, sent = $2 WHERE id = $1")
            .bind(id)
            .bind(sent)
            .execute(&app.db_pool)
            .await
            .unwrap();
    }
    let mut received = 0;
    loop {
        let event = events.next_event().await;
        received += 1;
        if event["sent"] == 500 {
            break;
        }
    }

    // At most one read per 250 ms, and one at the start of the burst.
    let allowed = 2 + (started.elapsed().as_millis() / 250) as usize;
    assert!(
        received <= allowed,
        "{received} events for a burst of {:?}, at most {allowed} expected",
        started.elapsed()
    );
}

#[tokio::test]
async fn after_its_connection_is_lost_the_progress_feed_listens_again() {
    let (app, browser) = signed_in(None).await;
    let path = publish(&browser, "Reconnect", FAR_AHEAD).await;
    let id = issue_id(&path);
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    // The app's listener may still be connecting: ended once it is there.
    let ended: Vec<bool> = eventually("the app's listener to be ended", || async {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %\"newsletter_progress\"%'",
        )
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
        (!ended.is_empty()).then_some(ended)
    })
    .await;
    assert_eq!(ended, [true], "one listener per app");
    // Changed until an update arrives: the first changes may come before
    // the feed listens again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for sent in 1.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no update after the connection was lost"
        );
        sqlx::query("UPDATE newsletter_issues SET recipients = 9, sent = $2 WHERE id = $1")
            .bind(id)
            .bind(sent)
            .execute(&app.db_pool)
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(1), events.next_event()).await;
        if next.is_ok_and(|event| event["recipients"] == 9) {
            break;
        }
    }
}

/// Needs the senders: an issue goes to every confirmed subscriber, and its
/// live updates follow it to the end.
#[tokio::test]
async fn a_published_issue_reaches_every_confirmed_subscriber_and_its_updates_follow_it_to_100_percent()
 {
    let (app, browser) = signed_in(None).await;
    app.mock_email_api_ok().await;
    for (email, confirmed) in [
        ("one@example.com", true),
        ("two@example.com", true),
        ("three@example.com", true),
        ("pending@example.com", false),
    ] {
        sqlx::query(
            "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
             VALUES ($1, $2, 'Reader', now() - interval '1 day', $3, \
                     CASE WHEN $4 THEN now() - interval '1 day' END)",
        )
        .bind(Uuid::new_v4())
        .bind(email)
        .bind(if confirmed {
            "confirmed"
        } else {
            "pending_confirmation"
        })
        .bind(confirmed)
        .execute(&app.db_pool)
        .await
        .unwrap();
    }

    let path = publish(&browser, "For everyone", "").await;
    let mut events = Events::open(&browser, &path).await;

    let last = events
        .until_within(Duration::from_secs(30), "the done state", |e| {
            e["state"] == "done"
        })
        .await;
    assert_eq!(last["percent"], 100);
    assert_eq!(last["sent"], 3);
    assert_eq!(last["recipients"], 3);
    let sent = eventually("three emails", || async {
        let sent = app.sent_emails().await;
        (sent.len() >= 3).then_some(sent)
    })
    .await;
    let mut to: Vec<&str> = sent.iter().map(|e| e["To"].as_str().unwrap()).collect();
    to.sort();
    assert_eq!(
        to,
        ["one@example.com", "three@example.com", "two@example.com"]
    );
    assert!(sent.iter().all(|e| e["MessageStream"] == "broadcast"));
}

#[tokio::test]
async fn on_sigterm_open_live_updates_end_and_the_server_exits_without_waiting_out_its_timeout() {
    let (app, _) = signed_in(None).await;
    let (server, port) = crate::shutdown::serve(&app);
    let server = std::sync::Mutex::new(server);
    let browser = Browser::of(&format!("http://127.0.0.1:{port}"));
    eventually("the server to answer", || async {
        let response = browser
            .client
            .get(format!("{}/health_check", browser.address))
            .send()
            .await;
        response.ok().filter(|r| r.status().is_success())
    })
    .await;
    assert_eq!(
        browser.log_in("ada", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    let path = publish(&browser, "Open stream", FAR_AHEAD).await;
    let mut events = Events::open(&browser, &path).await;
    events.next_event().await;

    let signalled = tokio::time::Instant::now();
    crate::shutdown::sigterm(&server.lock().unwrap());

    // The configured shutdown timeout is 25 s: an open stream must not
    // hold the server that long.
    assert_eq!(events.next_block(Duration::from_secs(5)).await, None);
    let exit = eventually("the server to exit", || async {
        server.lock().unwrap().try_wait().unwrap()
    })
    .await;
    assert!(exit.success(), "the server exited with {exit}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the server took {:?} to stop",
        signalled.elapsed()
    );
}
