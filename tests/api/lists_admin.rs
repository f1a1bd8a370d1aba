//! The lists as the newsroom runs them: making, changing, archiving and
//! bringing back a list, the counts beside each, the subscriber list
//! narrowed to one list, and a subscriber's lists on their page and in
//! their export.

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{BROWSER_ACCEPT, TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, audit_actions, create_admin, location};

async fn signed_in(app: &TestApp) -> Browser {
    create_admin(app, "editor", PASSWORD).await;
    Browser::signed_in(app, "editor", PASSWORD).await
}

/// (name, description, public, double opt-in, archived) of the list.
async fn stored(app: &TestApp, id: Uuid) -> (String, String, bool, bool, bool) {
    sqlx::query_as(
        "SELECT name, description, public, double_opt_in, archived_at IS NOT NULL \
         FROM lists WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

async fn list_named(app: &TestApp, name: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM lists WHERE name = $1")
        .bind(name)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn default_list(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn list_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM lists")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// Makes a list through the form and returns its id, checking the answer.
async fn make_list(browser: &Browser, app: &TestApp, fields: &[(&str, &str)]) -> Uuid {
    let response = browser.submit("/admin/lists", fields).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let name = fields.iter().find(|(k, _)| *k == "name").unwrap().1.trim();
    let id = list_named(app, name).await;
    assert_eq!(
        location(&response),
        format!("/admin/lists/{id}?notice=created")
    );
    id
}

async fn text(response: reqwest::Response) -> String {
    response.text().await.unwrap()
}

/// Signs `email` up through the form, to `lists` (none: the default list).
async fn sign_up(app: &TestApp, email: &str, lists: &[Uuid]) {
    let mut fields = vec![("name".to_owned(), "Reader".to_owned())];
    fields.push(("email".to_owned(), email.to_owned()));
    for list in lists {
        fields.push(("list".to_owned(), list.to_string()));
    }
    if !lists.is_empty() {
        fields.push(("lists_offered".to_owned(), "1".to_owned()));
    }
    let response = app
        .post_subscriptions(serde_urlencoded::to_string(&fields).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK, "signing up {email}");
}

/// Confirms `email` through the link in the confirmation sent to it; the
/// `sent`th email is the last one the test expects.
async fn confirm(app: &TestApp, email: &str, sent: usize) {
    let emails = app.wait_for_emails(sent).await;
    let confirmation = emails
        .iter()
        .find(|e| e["To"].as_str().unwrap().contains(email))
        .unwrap_or_else(|| panic!("no email to {email}"));
    let link = app.confirmation_links(confirmation).html;
    assert_eq!(app.click(&link).await.status(), StatusCode::OK);
}

async fn subscriber_id(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM subscriptions WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// The `<tr>` of the lists page that links to the list.
fn row_of(page: &str, id: Uuid) -> &str {
    let start = page
        .find(&format!("href=\"/admin/lists/{id}\""))
        .unwrap_or_else(|| panic!("no row for {id} in {page}"));
    let rest = &page[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[tokio::test]
async fn an_admin_makes_a_list_and_the_lists_page_shows_it_with_its_settings() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;

    let id = make_list(
        &browser,
        &app,
        &[
            ("name", "  Rust weekly "),
            ("description", "Crabs,\r\nweekly."),
            ("double_opt_in", "on"),
        ],
    )
    .await;

    assert_eq!(
        stored(&app, id).await,
        (
            "Rust weekly".into(),
            "Crabs,\nweekly.".into(),
            false,
            true,
            false
        )
    );
    let page = text(browser.get("/admin/lists").await).await;
    let row = row_of(&page, id);
    assert!(row.contains("Rust weekly"), "{row}");
    assert!(
        row.contains("Private") && row.contains("Double") && row.contains("Live"),
        "{row}"
    );
    let own = text(
        browser
            .get(&format!("/admin/lists/{id}?notice=created"))
            .await,
    )
    .await;
    assert!(own.contains("id=\"list-notice\""), "{own}");
    assert_eq!(audit_actions(&app).await.last().unwrap(), "list-created");
}

#[tokio::test]
async fn changing_a_list_saves_its_name_description_and_settings_and_is_audited() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let id = make_list(&browser, &app, &[("name", "Events"), ("public", "on")]).await;

    let response = browser
        .submit(
            &format!("/admin/lists/{id}"),
            &[
                ("name", "Meetups"),
                ("description", "Where we meet."),
                ("double_opt_in", "on"),
            ],
        )
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        format!("/admin/lists/{id}?notice=saved")
    );
    assert_eq!(
        stored(&app, id).await,
        (
            "Meetups".into(),
            "Where we meet.".into(),
            false,
            true,
            false
        )
    );
    let actions = audit_actions(&app).await;
    assert_eq!(
        actions[actions.len() - 2..],
        ["list-created", "list-updated"]
    );
}

#[tokio::test]
async fn a_list_is_archived_and_brought_back_each_change_audited_once() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let id = make_list(&browser, &app, &[("name", "Events"), ("public", "on")]).await;

    let archived = browser
        .submit(&format!("/admin/lists/{id}/archive"), &[])
        .await;
    assert_eq!(archived.status(), StatusCode::SEE_OTHER);
    assert!(stored(&app, id).await.4, "the list is still live");
    // Again: nothing changes, and the log does not say it did.
    let again = browser
        .submit(&format!("/admin/lists/{id}/archive"), &[])
        .await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    let page = text(browser.get(&format!("/admin/lists/{id}")).await).await;
    assert!(page.contains("id=\"unarchive\""), "{page}");
    let public_form = text(app.browse(&app.address).await).await;
    assert!(
        !public_form.contains(&id.to_string()),
        "an archived list is offered"
    );

    let back = browser
        .submit(&format!("/admin/lists/{id}/unarchive"), &[])
        .await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&back),
        format!("/admin/lists/{id}?notice=unarchived")
    );
    assert!(!stored(&app, id).await.4, "the list is still archived");

    let actions = audit_actions(&app).await;
    assert_eq!(
        actions[actions.len() - 3..],
        ["list-created", "list-archived", "list-unarchived"]
    );
}

#[tokio::test]
async fn the_default_list_cannot_be_archived_and_its_page_says_why() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let id = default_list(&app).await;

    let response = browser
        .submit(&format!("/admin/lists/{id}/archive"), &[])
        .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(response).await;
    assert!(page.contains("id=\"list-error\""), "{page}");
    assert!(
        page.contains("The default list cannot be archived"),
        "{page}"
    );
    assert!(!stored(&app, id).await.4, "the default list was archived");
    assert!(
        !audit_actions(&app)
            .await
            .contains(&"list-archived".to_owned()),
        "a refused archive was audited"
    );
}

#[tokio::test]
async fn a_name_another_list_has_is_refused_with_the_form_as_typed() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let before = list_count(&app).await;

    // The default list is called "Newsletter"; letter case does not matter.
    let response = browser
        .submit(
            "/admin/lists",
            &[("name", "NEWSLETTER"), ("description", "A second one")],
        )
        .await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(response).await;
    assert!(
        page.contains("Another list is already called that."),
        "{page}"
    );
    assert!(page.contains("value=\"NEWSLETTER\""), "{page}");
    assert!(page.contains(">A second one</textarea>"), "{page}");
    assert_eq!(list_count(&app).await, before);

    let events = make_list(&browser, &app, &[("name", "Events")]).await;
    let renamed = browser
        .submit(&format!("/admin/lists/{events}"), &[("name", "newsletter")])
        .await;
    assert_eq!(renamed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(renamed)
            .await
            .contains("Another list is already called that.")
    );
    assert_eq!(stored(&app, events).await.0, "Events");
}

#[tokio::test]
async fn hostile_names_are_refused_with_a_reason_and_markup_is_shown_as_text() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let before = list_count(&app).await;
    let very_long = "x".repeat(10_000);
    let cases = [
        ("Rust\0weekly", "U+0000", "a NUL"),
        ("Rust\u{202E}weekly", "U+202E", "a bidi override"),
        ("   ", "must not be empty", "a blank name"),
        (&"é".repeat(101), "at most 100 characters", "101 characters"),
        (&very_long, "at most 100 characters", "10,000 characters"),
    ];
    for (name, reason, case) in cases {
        let response = browser.submit("/admin/lists", &[("name", name)]).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = text(response).await;
        assert!(page.contains(reason), "{case}: {page}");
        assert!(!page.contains('\0'), "{case}: the page carries the NUL");
    }
    // Past what any list form needs: refused before it is read whole.
    let huge = "x".repeat(100_000);
    let refused = browser.submit("/admin/lists", &[("name", &huge)]).await;
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let description = browser
        .submit("/admin/lists", &[("name", "Fine"), ("description", "a\0b")])
        .await;
    assert_eq!(description.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(list_count(&app).await, before);

    let markup = "<script>alert(1)</script> & \"friends\"";
    let id = make_list(&browser, &app, &[("name", markup), ("public", "on")]).await;
    for path in ["/admin/lists".to_owned(), format!("/admin/lists/{id}")] {
        let page = text(browser.get(&path).await).await;
        assert!(!page.contains("<script>alert(1)"), "{path}: {page}");
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{path}: {page}"
        );
    }
    let public_form = text(app.browse(&app.address).await).await;
    assert!(!public_form.contains("<script>alert(1)"), "{public_form}");
}

#[tokio::test]
async fn the_counts_follow_sign_ups_confirmations_and_departures() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let browser = signed_in(&app).await;
    let events = make_list(&browser, &app, &[("name", "Events"), ("public", "on")]).await;
    let newsletter = default_list(&app).await;

    sign_up(&app, "ada@example.com", &[newsletter, events]).await;
    sign_up(&app, "grace@example.com", &[events]).await;
    sign_up(&app, "alan@example.com", &[]).await;
    confirm(&app, "ada@example.com", 3).await;
    sqlx::query("UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now() WHERE email = 'alan@example.com'")
        .execute(&app.db_pool)
        .await
        .unwrap();

    let page = text(browser.get(&format!("/admin/lists/{events}")).await).await;
    for shown in [
        "<dd id=\"confirmed\">1</dd>",
        "<dd id=\"pending\">1</dd>",
        "<dd id=\"unsubscribed\">0</dd>",
    ] {
        assert!(page.contains(shown), "{shown} not in {page}");
    }
    let all = text(browser.get("/admin/lists").await).await;
    let row = row_of(&all, newsletter);
    for shown in [
        "<td class=\"number confirmed\">1</td>",
        "<td class=\"number pending\">0</td>",
        "<td class=\"number unsubscribed\">1</td>",
    ] {
        assert!(row.contains(shown), "{shown} not in {row}");
    }
}

#[tokio::test]
async fn the_subscriber_list_narrowed_to_a_list_shows_its_readers_with_their_status_on_it() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let browser = signed_in(&app).await;
    let events = make_list(
        &browser,
        &app,
        &[
            ("name", "Events"),
            ("public", "on"),
            ("double_opt_in", "on"),
        ],
    )
    .await;
    let newsletter = default_list(&app).await;
    sign_up(&app, "ada@example.com", &[newsletter]).await;
    confirm(&app, "ada@example.com", 1).await;
    sign_up(&app, "grace@example.com", &[events]).await;
    app.wait_for_emails(2).await;
    // Ada joins Events too: confirmed already, waiting on Events.
    sign_up(&app, "ada@example.com", &[events]).await;

    let on_events = text(
        browser
            .get(&format!("/admin/subscribers?list={events}"))
            .await,
    )
    .await;
    assert!(on_events.contains("ada@example.com") && on_events.contains("grace@example.com"));
    let on_newsletter = text(
        browser
            .get(&format!("/admin/subscribers?list={newsletter}"))
            .await,
    )
    .await;
    assert!(on_newsletter.contains("ada@example.com"), "{on_newsletter}");
    assert!(
        !on_newsletter.contains("grace@example.com"),
        "{on_newsletter}"
    );

    let confirmed_on_events = text(
        browser
            .get(&format!(
                "/admin/subscribers?list={events}&status=confirmed"
            ))
            .await,
    )
    .await;
    assert!(
        !confirmed_on_events.contains("ada@example.com"),
        "{confirmed_on_events}"
    );
    let waiting_on_events = text(
        browser
            .get(&format!(
                "/admin/subscribers?list={events}&status=pending_confirmation"
            ))
            .await,
    )
    .await;
    assert!(
        waiting_on_events.contains("ada@example.com"),
        "{waiting_on_events}"
    );

    let csv = text(
        browser
            .get(&format!(
                "/admin/subscribers.csv?list={newsletter}&status=confirmed"
            ))
            .await,
    )
    .await;
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].starts_with("ada@example.com,"), "{csv}");
}

#[tokio::test]
async fn a_list_filter_that_names_no_list_is_refused_with_the_reason() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let nobody = Uuid::new_v4();
    for path in ["/admin/subscribers", "/admin/subscribers.csv"] {
        let malformed = browser.get(&format!("{path}?list=events")).await;
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(
            text(malformed).await.contains("is not a list's id"),
            "{path}"
        );
        let unknown = browser.get(&format!("{path}?list={nobody}")).await;
        assert_eq!(unknown.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(text(unknown).await.contains("No list has the id"), "{path}");
    }
}

#[tokio::test]
async fn a_subscribers_page_and_export_name_their_lists_and_their_status_on_each() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let browser = signed_in(&app).await;
    let events = make_list(&browser, &app, &[("name", "Events"), ("public", "on")]).await;
    let newsletter = default_list(&app).await;
    sign_up(&app, "ada@example.com", &[newsletter, events]).await;
    confirm(&app, "ada@example.com", 1).await;
    browser
        .submit(&format!("/admin/lists/{events}/archive"), &[])
        .await;
    let id = subscriber_id(&app, "ada@example.com").await;
    sqlx::query("UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = now() WHERE list_id = $1")
        .bind(events)
        .execute(&app.db_pool)
        .await
        .unwrap();

    let page = text(browser.get(&format!("/admin/subscribers/{id}")).await).await;
    assert!(page.contains("id=\"memberships\""), "{page}");
    for (list, name, status) in [
        (events, "Events", "unsubscribed"),
        (newsletter, "Newsletter", "confirmed"),
    ] {
        let row = format!(
            "<tr data-status=\"{status}\"><td class=\"title\"><a href=\"/admin/lists/{list}\">{name}</a>"
        );
        assert!(page.contains(&row), "{row} not in {page}");
    }

    let export: Value = browser
        .get(&format!("/admin/subscribers/{id}/export"))
        .await
        .json()
        .await
        .unwrap();
    let lists = export["lists"].as_array().unwrap();
    let named: Vec<(&str, &str)> = lists
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        named,
        [("Events", "unsubscribed"), ("Newsletter", "confirmed")]
    );
    for list in lists {
        assert!(list["joined_at"].is_string(), "{list}");
        assert!(list["confirmed_at"].is_string(), "{list}");
    }
    assert!(lists[0]["unsubscribed_at"].is_string());
    assert!(lists[1]["unsubscribed_at"].is_null());
}

#[tokio::test]
async fn signed_out_the_list_pages_send_browsers_to_sign_in_and_refuse_other_clients() {
    let app = spawn_app().await;
    let id = default_list(&app).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let before = list_count(&app).await;
    for (method, path) in [
        (reqwest::Method::GET, "/admin/lists".to_owned()),
        (reqwest::Method::POST, "/admin/lists".to_owned()),
        (reqwest::Method::GET, format!("/admin/lists/{id}")),
        (reqwest::Method::POST, format!("/admin/lists/{id}")),
        (reqwest::Method::POST, format!("/admin/lists/{id}/archive")),
        (
            reqwest::Method::POST,
            format!("/admin/lists/{id}/unarchive"),
        ),
    ] {
        let url = format!("{}{path}", app.address);
        let browser = client
            .request(method.clone(), &url)
            .header("Accept", BROWSER_ACCEPT)
            .form(&[("name", "Sneaky")])
            .send()
            .await
            .unwrap();
        assert_eq!(browser.status(), StatusCode::SEE_OTHER, "{method} {path}");
        assert_eq!(location(&browser), "/login", "{method} {path}");
        let other = client
            .request(method.clone(), &url)
            .form(&[("name", "Sneaky")])
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    assert_eq!(list_count(&app).await, before);
}

#[tokio::test]
async fn an_address_that_names_no_list_answers_404_with_a_page() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    for path in [
        "/admin/lists/not-a-list".to_owned(),
        format!("/admin/lists/{}", Uuid::new_v4()),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(
            text(response).await.contains("id=\"list-missing\""),
            "{path}"
        );
    }
    let archive = browser
        .submit(&format!("/admin/lists/{}/archive", Uuid::new_v4()), &[])
        .await;
    assert_eq!(archive.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_description_of_1000_characters_in_any_script_fits_the_form() {
    let app = spawn_app().await;
    let browser = signed_in(&app).await;
    let name = "週刊ニュース".repeat(16);
    let description = "日本語の説明".repeat(166) + "日本語の";
    assert_eq!(name.chars().count(), 96);
    assert_eq!(description.chars().count(), 1000);

    let id = make_list(
        &browser,
        &app,
        &[("name", &name), ("description", &description)],
    )
    .await;

    assert_eq!(stored(&app, id).await.1, description);
}
