//! The admin's import page: uploading a CSV file (`POST /admin/imports`),
//! the import's page with its report, its live updates and its refused
//! rows as CSV. What the importer does with a file's rows is in
//! `imports.rs`; these are about the way in through the newsroom.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app_with};
use crate::live::Events;
use crate::newsroom::{Browser, PASSWORD, audit_actions, create_admin, location};

/// An app that does not deliver, and a signed-in admin.
async fn signed_in_with(
    customise: impl FnOnce(&mut newsletter::configuration::Settings),
) -> (TestApp, Browser) {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        customise(s);
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    (app, browser)
}

async fn signed_in() -> (TestApp, Browser) {
    signed_in_with(|_| {}).await
}

/// The default list's id.
async fn default_list(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// What an upload sends besides the file; the CSRF token is the session's
/// unless said otherwise.
struct Upload<'a> {
    list: String,
    consent: &'a str,
    contents: Vec<u8>,
    file_name: &'a str,
    token: Token,
}

enum Token {
    Session,
    Missing,
    /// The session's, but after the file.
    AfterTheFile,
}

impl<'a> Upload<'a> {
    fn of(list: Uuid, contents: &[u8]) -> Self {
        Self {
            list: list.to_string(),
            consent: "",
            contents: contents.to_vec(),
            file_name: "readers.csv",
            token: Token::Session,
        }
    }

    /// Sends the form as a browser does, its fields in the page's order.
    async fn send(self, browser: &Browser) -> reqwest::Response {
        let token = browser.csrf_token().await;
        let mut form = Form::new();
        if matches!(self.token, Token::Session) {
            form = form.text("csrf_token", token.clone());
        }
        form = form
            .text("list", self.list)
            .text("consent_source", self.consent.to_owned())
            .part(
                "file",
                Part::bytes(self.contents)
                    .file_name(self.file_name.to_owned())
                    .mime_str("text/csv")
                    .unwrap(),
            );
        if matches!(self.token, Token::AfterTheFile) {
            form = form.text("csrf_token", token);
        }
        browser
            .client
            .post(format!("{}/admin/imports", browser.address))
            .header("Accept", crate::helpers::BROWSER_ACCEPT)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

/// The import's page once it is done (or has stopped otherwise).
async fn finished_page(browser: &Browser, path: &str) -> String {
    eventually("the import to finish", || async {
        let page = browser.get(path).await.text().await.unwrap();
        (!page.contains(r#"data-finished="false""#)).then_some(page)
    })
    .await
}

async fn imports(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM imports")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

const GOOD_AND_BAD: &[u8] = b"email,name\n\
    ada@example.com,Ada Lovelace\n\
    not an address,Nobody\n\
    grace@example.com,Grace Hopper\n";

#[tokio::test]
async fn an_uploaded_file_is_imported_and_its_page_reports_the_counts_and_the_refused_rows() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;

    let response = Upload::of(list, GOOD_AND_BAD).send(&browser).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let path = location(&response).to_owned();
    assert!(path.starts_with("/admin/imports/"), "{path}");
    let page = finished_page(&browser, &path).await;
    assert!(page.contains(r#"id="import-state">done<"#), "{page}");
    assert!(page.contains(r#"id="count-rows_read">3<"#), "{page}");
    assert!(
        page.contains(r#"id="count-memberships_added">2<"#),
        "{page}"
    );
    assert!(page.contains(r#"id="count-refused">1<"#), "{page}");
    assert!(
        page.contains(r#"id="count-confirmations_queued">2<"#),
        "{page}"
    );
    // The refused row, by its line in the file, with the reason.
    let refused = page
        .split(r#"<table id="refusals">"#)
        .nth(1)
        .expect("no table of refused rows");
    assert!(
        refused.contains(r#"<td class="number">3</td>"#),
        "{refused}"
    );

    // Listed on the imports page, with who started it.
    let listed = browser.get("/admin/imports").await.text().await.unwrap();
    assert!(
        listed.contains(&format!(r#"href="{path}">readers.csv<"#)),
        "{listed}"
    );
    assert!(listed.contains("<td>ada</td>"), "{listed}");

    // The imported reader is found among the subscribers.
    let found = browser
        .get("/admin/subscribers?q=grace")
        .await
        .text()
        .await
        .unwrap();
    assert!(found.contains("grace@example.com"), "{found}");

    // Every refused row, as CSV.
    let csv = browser.get(&format!("{path}/refusals.csv")).await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert_eq!(lines[0], "line,reason");
    assert!(lines[1].starts_with("3,"), "{csv}");

    // On record, without a row of the file.
    assert!(
        audit_actions(&app)
            .await
            .contains(&"import-started".to_owned())
    );
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'import-started'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(
        detail.starts_with(r#""readers.csv" onto the list "Newsletter", consent not attested"#),
        "{detail}"
    );
    assert!(!detail.contains("ada@example.com"), "{detail}");
}

#[tokio::test]
async fn the_same_file_onto_the_same_list_again_changes_nothing_and_leads_to_the_first_import() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    let first = Upload::of(list, GOOD_AND_BAD).send(&browser).await;
    let path = location(&first).to_owned();
    finished_page(&browser, &path).await;
    let subscribers = app.subscriber_count().await;

    let again = Upload::of(list, GOOD_AND_BAD).send(&browser).await;

    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&again), format!("{path}?notice=already"));
    let page = browser.get(location(&again)).await.text().await.unwrap();
    assert!(page.contains(r#"id="already-imported""#), "{page}");
    assert_eq!(imports(&app).await, 1);
    assert_eq!(app.subscriber_count().await, subscribers);
}

#[tokio::test]
async fn a_file_or_a_list_the_importer_refuses_is_answered_422_with_the_reason_on_the_form() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    let archived = {
        use newsletter::subscribers::lists::{self, ListFields};
        let mut connection = app.db_pool.acquire().await.unwrap();
        let fields = ListFields {
            name: "Old news".into(),
            description: String::new(),
            public: false,
            double_opt_in: true,
        };
        let made = lists::create(&mut connection, &fields).await.unwrap();
        lists::set_archived(&mut connection, made.id, true)
            .await
            .unwrap();
        made.id
    };
    let cases: [(&str, Upload, &str); 6] = [
        ("an empty file", Upload::of(list, b""), "The file is empty."),
        (
            "a Latin-1 file",
            Upload::of(list, b"email,name\nrene@example.com,Ren\xe9\n"),
            "it looks like Latin-1",
        ),
        (
            "a header that names no address",
            Upload::of(list, b"name\nAda\n"),
            "has no email column",
        ),
        (
            "an unknown list",
            Upload::of(Uuid::new_v4(), GOOD_AND_BAD),
            "There is no such list",
        ),
        (
            "an archived list",
            Upload::of(archived, GOOD_AND_BAD),
            "is archived",
        ),
        (
            "a consent source with a line break",
            Upload {
                consent: "our form\nand more",
                ..Upload::of(list, GOOD_AND_BAD)
            },
            "must not contain",
        ),
    ];
    for (case, upload, reason) in cases {
        let response = upload.send(&browser).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = response.text().await.unwrap();
        let error = page
            .split(r#"id="upload-error">"#)
            .nth(1)
            .unwrap_or_else(|| panic!("{case}: no reason on the form: {page}"));
        let error = &error[..error.find('<').unwrap()];
        assert!(error.contains(reason), "{case}: {error}");
    }
    assert_eq!(imports(&app).await, 0);
}

#[tokio::test]
async fn a_file_over_the_cap_is_answered_413_and_not_imported() {
    let (app, browser) = signed_in_with(|s| s.imports.max_upload_bytes = 1024).await;
    let list = default_list(&app).await;
    let rows = |n: usize| {
        let mut file = b"email\n".to_vec();
        for i in 0..n {
            file.extend_from_slice(format!("reader{i}@example.com\n").as_bytes());
        }
        file
    };
    // Caught as it is written (the body is not much over the cap), and
    // from the length the body announces.
    for (case, file) in [("a little over", rows(200)), ("far over", rows(10_000))] {
        assert!(file.len() > 1024);
        let response = Upload::of(list, &file).send(&browser).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{case}");
        let reason = response.text().await.unwrap();
        assert!(reason.contains("larger than the 1 KiB"), "{case}: {reason}");
    }
    assert_eq!(imports(&app).await, 0);
    assert_eq!(app.subscriber_count().await, 0);
}

#[tokio::test]
async fn an_upload_without_the_csrf_token_before_the_file_or_signed_out_is_refused() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    for (case, token) in [
        ("without the token", Token::Missing),
        ("with the token after the file", Token::AfterTheFile),
    ] {
        let upload = Upload {
            token,
            ..Upload::of(list, GOOD_AND_BAD)
        };
        let response = upload.send(&browser).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case}");
    }

    let signed_out = app
        .api_client
        .post(format!("{}/admin/imports", app.address))
        .multipart(Form::new().part("file", Part::bytes(GOOD_AND_BAD.to_vec())))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(imports(&app).await, 0);
}

#[tokio::test]
async fn a_second_upload_of_a_file_being_imported_leads_to_the_running_import_without_waiting() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    // The first import is held in its merge for as long as this is held.
    let mut holding = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions, memberships IN EXCLUSIVE MODE")
        .execute(&mut *holding)
        .await
        .unwrap();
    let first = Upload::of(list, GOOD_AND_BAD).send(&browser).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let path = location(&first).to_owned();

    // Waiting for the first import's lock, this request would not answer
    // before the first import ends, which it cannot while the tables are
    // held: a minute without an answer is that.
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        Upload::of(list, GOOD_AND_BAD).send(&browser),
    )
    .await
    .expect("the second upload waited for the first import to end");

    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&again), path);
    holding.rollback().await.unwrap();
    let page = finished_page(&browser, &path).await;
    assert!(page.contains(r#"id="import-state">done<"#), "{page}");
    assert_eq!(imports(&app).await, 1);
}

#[tokio::test]
async fn the_live_updates_follow_an_import_to_done_and_then_end() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    // The merge writes the subscribers and their memberships: held here,
    // it waits, the import started and its file read, until they are let go.
    let mut holding = app.db_pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions, memberships IN EXCLUSIVE MODE")
        .execute(&mut *holding)
        .await
        .unwrap();
    let response = Upload::of(list, GOOD_AND_BAD).send(&browser).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let path = location(&response).to_owned();

    let mut events = Events::open(&browser, &path).await;
    let mut merging = events.next_event().await;
    assert_eq!(merging["finished"], false, "{merging}");
    if merging["state"] != "merging" {
        assert_eq!(merging["state"], "reading");
        merging = events
            .until("the merging state", |e| e["state"] == "merging")
            .await;
    }
    assert_eq!(merging["rows_read"], 3);
    let page = browser.get(&path).await.text().await.unwrap();
    assert!(page.contains(r#"id="import-state">merging<"#), "{page}");

    holding.rollback().await.unwrap();
    let done = events
        .until("the done state", |e| e["state"] == "done")
        .await;
    assert_eq!(done["finished"], true);
    assert_eq!(done["rows_read"], 3);
    assert_eq!(done["memberships_added"], 2);
    assert_eq!(done["refused"], 1);
    events.until_the_end(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_import_left_unfinished_by_a_killed_process_shows_as_interrupted() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    // As a killed run leaves it: reading, and its lock let go.
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO imports (id, file_sha256, list_id, file_name, started_by, rows_read) \
         VALUES ($1, $2, $3, 'readers.csv', 'ada', 5000)",
    )
    .bind(id)
    .bind(vec![7u8; 32])
    .bind(list)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let path = format!("/admin/imports/{id}");

    let page = browser.get(&path).await.text().await.unwrap();

    assert!(page.contains(r#"id="import-state">interrupted<"#), "{page}");
    let hint = page.split(r#"id="import-interrupted""#).nth(1).unwrap();
    assert!(!hint.starts_with(" hidden"), "{hint}");
    assert!(
        hint.contains("Upload the same file onto the same list again"),
        "{hint}"
    );
    // Its live updates say so once, and end.
    let mut events = Events::open(&browser, &path).await;
    let first = events.next_event().await;
    assert_eq!(
        (first["state"].as_str(), first["finished"].as_bool()),
        (Some("interrupted"), Some(true))
    );
    events.until_the_end(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_watched_import_whose_process_dies_is_shown_interrupted_without_a_reload() {
    let (app, browser) = signed_in().await;
    let list = default_list(&app).await;
    let sha256 = vec![9u8; 32];
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO imports (id, file_sha256, list_id, file_name, started_by) \
         VALUES ($1, $2, $3, 'readers.csv', 'ada')",
    )
    .bind(id)
    .bind(&sha256)
    .bind(list)
    .execute(&app.db_pool)
    .await
    .unwrap();
    // The process running it: a session holding the import's lock.
    let mut running = PgConnection::connect_with(&app.settings.database.with_db())
        .await
        .unwrap();
    newsletter::imports::store::lock(&mut running, &sha256, list)
        .await
        .unwrap();
    let path = format!("/admin/imports/{id}");
    let mut events = Events::open(&browser, &path).await;
    let first = events.next_event().await;
    assert_eq!(first["state"], "reading", "{first}");

    // Killed: its connection goes, and with it the lock; its row stays.
    running.close().await.unwrap();

    let interrupted = events
        .until_within(
            // Read again at the stream's keep-alive, every 15 s of quiet.
            Duration::from_secs(45),
            "the interrupted state",
            |e| e["state"] == "interrupted",
        )
        .await;
    assert_eq!(interrupted["finished"], true);
    events.until_the_end(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_address_that_names_no_import_answers_404() {
    let (_app, browser) = signed_in().await;
    for path in [
        format!("/admin/imports/{}", Uuid::new_v4()),
        "/admin/imports/not-an-id".to_owned(),
        format!("/admin/imports/{}/events", Uuid::new_v4()),
        format!("/admin/imports/{}/refusals.csv", Uuid::new_v4()),
    ] {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
