//! Issues and imports over `/api/v1`: publishing in one request with an
//! idempotency key (replayed, refused with other content, one issue for
//! two requests at once), previews, the list and an issue's counts, the
//! page's state rules for pause, resume and cancel, and an import sent as
//! a CSV body and followed to its end. Every refusal is a problem naming
//! what was refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_tokens::{api_get, api_post, named, problem, token};
use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

/// An app whose senders do not run: a published issue stays where the
/// test put it.
async fn app() -> TestApp {
    spawn_app_with(|s| s.delivery.run_in_server = false).await
}

async fn publish_with(
    app: &TestApp,
    secret: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = app
        .api_client
        .post(format!("{}/api/v1/issues/publish", app.address))
        .bearer_auth(secret)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

fn a_key() -> String {
    Uuid::new_v4().to_string()
}

fn an_issue(title: &str) -> Value {
    json!({"title": title, "content": "Hello {{name}}, here is the news."})
}

/// An issue that waits for a day before it sends: it stays `sending`
/// (shown as scheduled) for as long as a test needs.
fn a_scheduled_issue(title: &str) -> Value {
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::days(1);
    json!({"title": title, "content": "Later.", "send_at": tomorrow.to_rfc3339()})
}

/// Publishes `body` with a new key; the issue's JSON.
async fn published(app: &TestApp, secret: &str, body: &Value) -> Value {
    let response = publish_with(app, secret, Some(&a_key()), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn issues_stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn last_audit(app: &TestApp) -> (String, String) {
    sqlx::query_as("SELECT action, username FROM audit_log ORDER BY id DESC LIMIT 1")
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

#[tokio::test]
async fn only_a_publish_token_publishes_and_acts_while_a_read_token_reads() {
    let app = app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "writer", "write").await;
    let publish = token(&app, "publisher", "publish").await;

    for (name, secret) in [("read", &read), ("write", &write)] {
        let refused = problem(
            publish_with(&app, secret, Some(&a_key()), &an_issue("Hi")).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`publish`"),
            "{name}: {refused}"
        );
    }
    assert_eq!(issues_stored(&app).await, 0);

    let response = publish_with(&app, &publish, Some(&a_key()), &an_issue("Hi")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let issue: Value = response.json().await.unwrap();
    let id = issue["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/issues/{id}"));
    assert_eq!(
        last_audit(&app).await,
        ("issue-published".into(), "token publisher".into())
    );

    for (name, secret) in [("read", &read), ("write", &write), ("publish", &publish)] {
        for path in [
            "/api/v1/issues".to_owned(),
            location.clone(),
            format!("{location}/preview"),
        ] {
            let response = api_get(&app, &path, secret).await;
            assert_eq!(response.status(), StatusCode::OK, "{name} reading {path}");
        }
        let preview = api_post(
            &app,
            "/api/v1/issues/preview",
            secret,
            r#"{"title": "T", "content": "C"}"#,
        )
        .await;
        assert_eq!(preview.status(), StatusCode::OK, "{name} previewing");
    }
    for secret in [&read, &write] {
        for action in ["pause", "resume", "cancel"] {
            let path = format!("{location}/{action}");
            problem(
                api_post(&app, &path, secret, "").await,
                StatusCode::FORBIDDEN,
            )
            .await;
        }
    }
    // An import can have every address in its file sent an email, as
    // publishing does: a write token, which signs readers up one at a time
    // under a budget, cannot start one.
    let list = default_list(&app).await;
    for secret in [&read, &write] {
        let csv = send_csv(
            &app,
            secret,
            &format!("list={list}"),
            "email\nada@example.com\n",
        )
        .await;
        let refused = problem(csv, StatusCode::FORBIDDEN).await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`publish`"),
            "{refused}"
        );
    }
    let csv = send_csv(
        &app,
        &publish,
        &format!("list={list}"),
        "email\nada@example.com\n",
    )
    .await;
    assert_eq!(csv.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn two_identical_publishes_at_once_with_one_key_store_one_issue() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let key = a_key();
    let body = an_issue("Release 2.0");

    let (first, second) = tokio::join!(
        publish_with(&app, &publish, Some(&key), &body),
        publish_with(&app, &publish, Some(&key), &body),
    );

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(issues_stored(&app).await, 1);
}

#[tokio::test]
async fn a_replay_gets_the_same_issue_and_the_key_with_other_content_is_refused() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let other_token = token(&app, "other build", "publish").await;
    let key = a_key();

    let first = publish_with(&app, &publish, Some(&key), &an_issue("Release 2.0")).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let replay = publish_with(&app, &publish, Some(&key), &an_issue("Release 2.0")).await;
    assert_eq!(
        replay.status(),
        StatusCode::CREATED,
        "a replay answers as the first time"
    );
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);

    let refused = problem(
        publish_with(&app, &publish, Some(&key), &an_issue("Release 2.1")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["Idempotency-Key"], "{refused}");
    assert_eq!(issues_stored(&app).await, 1);

    // Keys are each token's own: another build's same key is its own issue.
    let theirs = publish_with(&app, &other_token, Some(&key), &an_issue("Release 2.0")).await;
    assert_eq!(theirs.status(), StatusCode::CREATED);
    let theirs: Value = theirs.json().await.unwrap();
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(issues_stored(&app).await, 2);
}

#[tokio::test]
async fn a_publish_without_a_key_or_with_a_malformed_one_is_refused_naming_the_header() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;

    for (case, key) in [
        ("missing", None),
        ("too short", Some("abc")),
        ("a space in it", Some("0123456789 abcdef")),
        ("too long", Some(&*"k".repeat(129))),
    ] {
        let refused = problem(
            publish_with(&app, &publish, key, &an_issue("Hi")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), ["Idempotency-Key"], "{case}: {refused}");
    }
    assert_eq!(issues_stored(&app).await, 0);
}

#[tokio::test]
async fn hostile_issue_fields_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let cases = [
        (
            "huge title",
            json!({"title": "T".repeat(10_000), "content": "C"}),
            "title",
        ),
        (
            "title a number",
            json!({"title": 5, "content": "C"}),
            "title",
        ),
        ("no title", json!({"content": "C"}), "title"),
        (
            "NUL in the title",
            json!({"title": "A\u{0}B", "content": "C"}),
            "title",
        ),
        (
            "bidi override in the title",
            json!({"title": "A\u{202E}B", "content": "C"}),
            "title",
        ),
        (
            "content an array",
            json!({"title": "T", "content": ["C"]}),
            "content",
        ),
        (
            "lists a string",
            json!({"title": "T", "content": "C", "lists": "x"}),
            "lists",
        ),
        (
            "a malformed list id",
            json!({"title": "T", "content": "C", "lists": ["not-a-uuid"]}),
            "lists",
        ),
        (
            "an unknown list id",
            json!({"title": "T", "content": "C", "lists": [Uuid::new_v4()]}),
            "lists",
        ),
        (
            "a malformed segment id",
            json!({"title": "T", "content": "C", "segment": "12"}),
            "segment",
        ),
        (
            "an unknown segment",
            json!({"title": "T", "content": "C", "segment": Uuid::new_v4()}),
            "segment",
        ),
        (
            "send_at not a date",
            json!({"title": "T", "content": "C", "send_at": "tomorrow"}),
            "send_at",
        ),
        (
            "public a string",
            json!({"title": "T", "content": "C", "public": "yes"}),
            "public",
        ),
        ("not an object", json!(["T", "C"]), "body"),
    ];
    for (case, body, field) in cases {
        let refused = problem(
            publish_with(&app, &publish, Some(&a_key()), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            named(&refused).contains(&field.to_owned()),
            "{case}: {refused}"
        );
    }
    let not_json = app
        .api_client
        .post(format!("{}/api/v1/issues/publish", app.address))
        .bearer_auth(&publish)
        .header("Idempotency-Key", a_key())
        .body("{title")
        .send()
        .await
        .unwrap();
    problem(not_json, StatusCode::BAD_REQUEST).await;
    // Past the longest content a draft takes: 422 naming it; past the body
    // limit: 413, read no further. Both problems.
    let long = json!({"title": "T", "content": "x".repeat(300_000)});
    let refused = problem(
        publish_with(&app, &publish, Some(&a_key()), &long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["content"], "{refused}");
    let huge = json!({"title": "T", "content": "x".repeat(1_000_000)});
    problem(
        publish_with(&app, &publish, Some(&a_key()), &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(issues_stored(&app).await, 0);

    for path in [
        "/api/v1/issues/not-a-uuid",
        &format!("/api/v1/issues/{}", Uuid::new_v4()),
    ] {
        problem(api_get(&app, path, &publish).await, StatusCode::NOT_FOUND).await;
    }
    let refused = problem(
        api_get(&app, "/api/v1/issues?limit=0", &publish).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["limit"]);
}

#[tokio::test]
async fn pause_resume_and_cancel_follow_the_issue_pages_state_rules() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let issue = published(&app, &publish, &a_scheduled_issue("Later")).await;
    assert_eq!(issue["state"], "scheduled");
    let path = format!("/api/v1/issues/{}", issue["id"].as_str().unwrap());
    let act = async |action: &str| api_post(&app, &format!("{path}/{action}"), &publish, "").await;

    let resumed_too_soon = problem(act("resume").await, StatusCode::CONFLICT).await;
    assert!(
        resumed_too_soon["detail"]
            .as_str()
            .unwrap()
            .contains("Only a paused issue can be resumed"),
        "{resumed_too_soon}"
    );
    let paused: Value = act("pause").await.json().await.unwrap();
    assert_eq!(paused["state"], "paused");
    assert_eq!(
        last_audit(&app).await,
        ("issue-paused".into(), "token build".into())
    );
    let paused_again = problem(act("pause").await, StatusCode::CONFLICT).await;
    assert!(
        paused_again["detail"]
            .as_str()
            .unwrap()
            .contains("this one is paused"),
        "{paused_again}"
    );
    let resumed: Value = act("resume").await.json().await.unwrap();
    assert_eq!(resumed["state"], "scheduled");
    let cancelled = act("cancel").await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["finished"], true);
    for action in ["pause", "resume", "cancel"] {
        let refused = problem(act(action).await, StatusCode::CONFLICT).await;
        assert!(
            refused["detail"].as_str().unwrap().contains("cancelled"),
            "{action}: {refused}"
        );
    }
    let missing = format!("/api/v1/issues/{}/pause", Uuid::new_v4());
    problem(
        api_post(&app, &missing, &publish, "").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn issues_are_listed_newest_first_a_page_at_a_time() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let mut ids = Vec::new();
    for title in ["First", "Second", "Third"] {
        ids.push(published(&app, &publish, &an_issue(title)).await["id"].clone());
    }

    let first: Value = api_get(&app, "/api/v1/issues?limit=2", &publish)
        .await
        .json()
        .await
        .unwrap();
    let titles: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Third", "Second"]);
    let next = first["next"].as_str().unwrap();
    let second: Value = api_get(
        &app,
        &format!("/api/v1/issues?limit=2&after={next}"),
        &publish,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["data"][0]["id"], ids[0]);
    assert!(second["next"].is_null());
    // The counts the issue page shows.
    for field in [
        "recipients",
        "queued",
        "sent",
        "failed",
        "skipped",
        "bounced",
        "complained",
        "percent",
    ] {
        assert!(second["data"][0][field].is_number(), "{field}: {second}");
    }
}

#[tokio::test]
async fn a_preview_renders_the_text_for_an_example_reader_and_stores_nothing() {
    let app = app().await;
    let read = token(&app, "reader", "read").await;
    let preview = api_post(
        &app,
        "/api/v1/issues/preview",
        &read,
        r#"{"title": "Release 2.0", "content": "Hello {{name}}, *news*."}"#,
    )
    .await;
    assert_eq!(preview.status(), StatusCode::OK);
    let preview: Value = preview.json().await.unwrap();
    assert_eq!(preview["subject"], "Release 2.0");
    assert!(
        preview["text"]
            .as_str()
            .unwrap()
            .contains("Hello Ada Lovelace"),
        "{preview}"
    );
    assert!(
        preview["html"].as_str().unwrap().contains("<em>news</em>"),
        "{preview}"
    );
    assert_eq!(issues_stored(&app).await, 0);

    for (body, field) in [
        (r#"{"title": "", "content": "C"}"#, "title"),
        (r#"{"title": "T"}"#, "content"),
        (r#"{"title": "T", "content": 1}"#, "content"),
    ] {
        let refused = problem(
            api_post(&app, "/api/v1/issues/preview", &read, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{body}: {refused}");
    }
}

async fn send_csv(app: &TestApp, secret: &str, query: &str, csv: &str) -> reqwest::Response {
    app.api_client
        .post(format!("{}/api/v1/imports?{query}", app.address))
        .bearer_auth(secret)
        .header("Content-Type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_import_sent_as_csv_runs_to_its_end_and_reports_its_counts() {
    let app = app().await;
    let write = token(&app, "crm sync", "publish").await;
    let list = default_list(&app).await;
    let csv = "email,name\nada@example.com,Ada\nnot an address,Bob\ngrace@example.com,Grace\n";
    let query =
        format!("list={list}&consent_source=Signed%20up%20at%20the%20fair&file_name=crm.csv");

    let started = send_csv(&app, &write, &query, csv).await;
    assert_eq!(started.status(), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/v1/imports/"), "{location}");
    assert_eq!(
        last_audit(&app).await,
        ("import-started".into(), "token crm sync".into())
    );

    let done = eventually("the import to finish", || async {
        let status: Value = api_get(&app, &location, &write).await.json().await.ok()?;
        (status["finished"] == true).then_some(status)
    })
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["interrupted"], false);
    assert_eq!(done["file_name"], "crm.csv");
    assert_eq!(done["consent_attested"], true);
    assert_eq!(done["rows_read"], 3);
    assert_eq!(done["refused"], 1);
    assert_eq!(done["subscribers_added"], 2);

    // The same file onto the same list again: that import, nothing changed.
    let again = send_csv(&app, &write, &query, csv).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
}

#[tokio::test]
async fn an_import_refuses_bad_options_and_a_body_that_is_not_csv_naming_what_was_wrong() {
    let app = spawn_app().await;
    let write = token(&app, "crm sync", "publish").await;
    let list = default_list(&app).await;
    let csv = "email\nada@example.com\n";
    for (case, query, field) in [
        ("no list", "welcome=true".to_owned(), "list"),
        ("a malformed list id", "list=12".to_owned(), "list"),
        (
            "an unknown list",
            format!("list={}", Uuid::new_v4()),
            "list",
        ),
        (
            "welcome not a boolean",
            format!("list={list}&welcome=yes"),
            "welcome",
        ),
        (
            "NUL in the consent source",
            format!("list={list}&consent_source=a%00b"),
            "consent_source",
        ),
    ] {
        let refused = problem(
            send_csv(&app, &write, &query, csv).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
    let empty = problem(
        send_csv(&app, &write, &format!("list={list}"), "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&empty), ["body"], "{empty}");
    let as_json = app
        .api_client
        .post(format!("{}/api/v1/imports?list={list}", app.address))
        .bearer_auth(&write)
        .header("Content-Type", "application/json")
        .body(csv)
        .send()
        .await
        .unwrap();
    problem(as_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let imports: i64 = sqlx::query_scalar("SELECT count(*) FROM imports")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(imports, 0);
    for path in [
        "/api/v1/imports/nope",
        &format!("/api/v1/imports/{}", Uuid::new_v4()),
    ] {
        problem(api_get(&app, path, &write).await, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn an_import_over_the_upload_cap_is_refused_with_413_whether_its_length_is_told_or_not() {
    let app = spawn_app_with(|s| s.imports.max_upload_bytes = 1024).await;
    let write = token(&app, "crm sync", "publish").await;
    let list = default_list(&app).await;
    let mut csv = String::from("email\n");
    while csv.len() <= 4096 {
        csv.push_str(&format!("reader{}@example.com\n", csv.len()));
    }

    let told = send_csv(&app, &write, &format!("list={list}"), &csv).await;
    let refused = problem(told, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("imports.max_upload_bytes"),
        "{refused}"
    );

    // Chunked, with no length up front: stopped once past the cap.
    let chunks: Vec<Result<String, std::io::Error>> = csv
        .as_bytes()
        .chunks(512)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let streamed = app
        .api_client
        .post(format!("{}/api/v1/imports?list={list}", app.address))
        .bearer_auth(&write)
        .header("Content-Type", "text/csv")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    problem(streamed, StatusCode::PAYLOAD_TOO_LARGE).await;
    let imports: i64 = sqlx::query_scalar("SELECT count(*) FROM imports")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(imports, 0);
}

#[tokio::test]
async fn an_upload_beyond_the_imports_a_server_takes_at_once_is_answered_503_until_one_ends() {
    let uploads = tempfile::tempdir().unwrap();
    let directory = uploads.path().to_owned();
    let app = spawn_app_with(move |s| {
        s.imports.max_concurrent = 1;
        s.imports.upload_directory = Some(directory);
    })
    .await;
    let write = token(&app, "crm sync", "publish").await;
    let list = default_list(&app).await;
    let files_in_directory = || std::fs::read_dir(uploads.path()).unwrap().count();

    // The first upload is still arriving: it holds the one place.
    let (chunks, body) = futures::channel::mpsc::unbounded::<Result<String, std::io::Error>>();
    chunks.unbounded_send(Ok("email\n".into())).unwrap();
    let first = tokio::spawn(
        app.api_client
            .post(format!("{}/api/v1/imports?list={list}", app.address))
            .bearer_auth(&write)
            .header("Content-Type", "text/csv")
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    eventually("the first upload's file", || async {
        (files_in_directory() == 1).then_some(())
    })
    .await;

    let second = send_csv(
        &app,
        &write,
        &format!("list={list}"),
        "email\nb@example.com\n",
    )
    .await;
    assert_eq!(second.headers()["retry-after"], "30");
    let refused = problem(second, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("at once"),
        "{refused}"
    );

    chunks.unbounded_send(Ok("a@example.com\n".into())).unwrap();
    drop(chunks);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    eventually("the first import's end", || async {
        let status: Value = api_get(&app, &location, &write).await.json().await.unwrap();
        (status["finished"] == true).then_some(())
    })
    .await;

    // Its place is free again once it has ended, and its file is gone.
    eventually("the place of the first import", || async {
        let third = send_csv(
            &app,
            &write,
            &format!("list={list}"),
            "email\nc@example.com\n",
        )
        .await;
        (third.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    eventually("an empty upload directory", || async {
        (files_in_directory() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_retry_replays_the_publish_even_after_the_lists_it_named_or_left_out_changed() {
    let app = app().await;
    let publish = token(&app, "build", "publish").await;
    let write = token(&app, "crm sync", "write").await;
    let key = a_key();
    // No lists named: with one live list, that one.
    let body = an_issue("Release 2.1");
    let first = publish_with(&app, &publish, Some(&key), &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();

    // A second live list now makes leaving `lists` out a refusal for a new
    // publish; the build's retry of the first must still replay it.
    let made = api_post(&app, "/api/v1/lists", &write, r#"{"name": "Releases"}"#).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let fresh = problem(
        publish_with(&app, &publish, Some(&a_key()), &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&fresh), ["lists"]);

    let retry = publish_with(&app, &publish, Some(&key), &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(issues_stored(&app).await, 1);

    // Other content under the key is still refused.
    let other = problem(
        publish_with(&app, &publish, Some(&key), &an_issue("Release 2.2")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&other), ["Idempotency-Key"]);
}
