//! Issue drafts over `/api/v1/drafts`: stored, read, changed, listed and
//! deleted without anything being sent; published by id under an
//! idempotency key into an issue with the draft's id, once however many
//! publishes race; lists and segments checked when saved and again when
//! published; every refusal a problem naming the field.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_tokens::{api_get, api_patch, api_post, api_send, named, problem, token};
use crate::helpers::{TestApp, eventually, spawn_app_with};
use crate::newsroom::audit_actions;

/// An app whose senders do not run: a published issue stays where the
/// test put it.
async fn app() -> TestApp {
    spawn_app_with(|s| s.delivery.run_in_server = false).await
}

fn a_key() -> String {
    Uuid::new_v4().to_string()
}

async fn save(app: &TestApp, secret: &str, body: &Value) -> reqwest::Response {
    api_post(app, "/api/v1/drafts", secret, &body.to_string()).await
}

/// A draft saved with `body`; its JSON.
async fn saved(app: &TestApp, secret: &str, body: &Value) -> Value {
    let response = save(app, secret, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let draft: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/drafts/{}", draft["id"].as_str().unwrap())
    );
    draft
}

async fn publish(app: &TestApp, secret: &str, id: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .api_client
        .post(format!("{}/api/v1/drafts/{id}/publish", app.address))
        .bearer_auth(secret);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.unwrap()
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn new_list(app: &TestApp, secret: &str, name: &str) -> String {
    let made = api_post(
        app,
        "/api/v1/lists",
        secret,
        &json!({"name": name}).to_string(),
    )
    .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let list: Value = made.json().await.unwrap();
    list["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_draft_is_stored_read_changed_and_previewed_without_anything_sent() {
    let app = app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "editor", "write").await;

    let refused = problem(
        save(&app, &read, &json!({"title": "T", "content": "C"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("`write`"));

    let tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(1)).to_rfc3339();
    let draft = saved(
        &app,
        &write,
        &json!({"title": "Release 2.0", "content": "The news.", "send_at": tomorrow,
                "public": true}),
    )
    .await;
    let id = draft["id"].as_str().unwrap();
    let path = format!("/api/v1/drafts/{id}");
    assert_eq!(draft["title"], "Release 2.0");
    assert_eq!(draft["lists"], json!([]));
    assert_eq!(draft["public"], true);
    assert!(draft["send_at"].is_string(), "{draft}");

    let read_back: Value = api_get(&app, &path, &read).await.json().await.unwrap();
    assert_eq!(read_back, draft);

    // Only the fields sent change; null clears what may be cleared.
    let changed = api_patch(
        &app,
        &path,
        &write,
        json!({"content": "The news, and more.", "send_at": null}),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["title"], "Release 2.0");
    assert_eq!(changed["content"], "The news, and more.");
    assert_eq!(changed["send_at"], Value::Null);
    assert_eq!(changed["public"], true);
    assert_ne!(changed["updated_at"], draft["updated_at"]);
    let refused = problem(
        api_patch(&app, &path, &read, json!({"title": "Mine now"})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("`write`"));

    let preview: Value = api_get(&app, &format!("{path}/preview"), &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(preview["subject"], "Release 2.0");
    let text = preview["text"].as_str().unwrap();
    assert!(
        text.contains("Hello Ada Lovelace,") && text.contains("The news, and more."),
        "{preview}"
    );

    assert_eq!(count(&app, "newsletter_issues").await, 0);
    assert_eq!(count(&app, "deliveries").await, 0);
    let actions = audit_actions(&app).await;
    assert!(
        actions.ends_with(&["draft-saved".to_owned(), "draft-changed".to_owned()]),
        "{actions:?}"
    );
}

#[tokio::test]
async fn publishing_a_draft_makes_the_issue_under_its_id_once_and_a_retry_replays() {
    let app = app().await;
    let write = token(&app, "editor", "write").await;
    let publisher = token(&app, "build", "publish").await;
    let draft = saved(
        &app,
        &write,
        &json!({"title": "Weekly", "content": "News."}),
    )
    .await;
    let id = draft["id"].as_str().unwrap();
    let key = a_key();

    let refused = problem(
        publish(&app, &write, id, Some(&key)).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(refused["detail"].as_str().unwrap().contains("`publish`"));
    let refused = problem(
        publish(&app, &publisher, id, None).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["Idempotency-Key"]);
    assert_eq!(count(&app, "newsletter_issues").await, 0);

    let published = publish(&app, &publisher, id, Some(&key)).await;
    assert_eq!(published.status(), StatusCode::CREATED);
    assert_eq!(
        published.headers()["location"].to_str().unwrap(),
        format!("/api/v1/issues/{id}")
    );
    let issue: Value = published.json().await.unwrap();
    assert_eq!(issue["id"], id);
    assert_eq!(issue["title"], "Weekly");
    assert_eq!(issue["state"], "sending");

    // The draft is gone; its id leads to the issue.
    problem(
        api_get(&app, &format!("/api/v1/drafts/{id}"), &write).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let read_issue = api_get(&app, &format!("/api/v1/issues/{id}"), &write).await;
    assert_eq!(read_issue.status(), StatusCode::OK);

    let replay = publish(&app, &publisher, id, Some(&key)).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], id);

    let again = problem(
        publish(&app, &publisher, id, Some(&a_key())).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("/api/v1/issues/{id}")),
        "{again}"
    );

    // The key is spent on that draft: with another draft it is refused,
    // and that draft stays.
    let other = saved(&app, &write, &json!({"title": "Other", "content": "More."})).await;
    let other_id = other["id"].as_str().unwrap();
    let reused = problem(
        publish(&app, &publisher, other_id, Some(&key)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&reused), ["Idempotency-Key"]);
    assert_eq!(count(&app, "newsletter_issues").await, 1);
    assert_eq!(count(&app, "issue_drafts").await, 1);

    let actions = audit_actions(&app).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.as_str() == "issue-published")
            .count(),
        1,
        "{actions:?}"
    );
}

/// Runs two publishes of the draft `id` while the test holds the draft's
/// row lock, and lets them go once both wait on it: they overlap for sure,
/// whatever the machine's speed.
async fn two_at_once(
    app: &TestApp,
    secret: &str,
    id: &str,
    keys: [&str; 2],
) -> (reqwest::Response, reqwest::Response) {
    let mut holder = app.db_pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM issue_drafts WHERE id = $1::uuid FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let first = tokio::spawn(publish_owned(app, secret, id, keys[0]));
    let second = tokio::spawn(publish_owned(app, secret, id, keys[1]));
    eventually("both publishes to wait on the draft", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        (waiting >= 2).then_some(())
    })
    .await;
    holder.commit().await.unwrap();
    (first.await.unwrap(), second.await.unwrap())
}

fn publish_owned(
    app: &TestApp,
    secret: &str,
    id: &str,
    key: &str,
) -> impl Future<Output = reqwest::Response> + Send + 'static {
    let request = app
        .api_client
        .post(format!("{}/api/v1/drafts/{id}/publish", app.address))
        .bearer_auth(secret)
        .header("Idempotency-Key", key);
    async move { request.send().await.unwrap() }
}

#[tokio::test]
async fn publishes_of_one_draft_at_once_make_one_issue_whatever_their_keys() {
    let app = app().await;
    let write = token(&app, "editor", "write").await;
    let publisher = token(&app, "build", "publish").await;

    // Two keys: one publishes, the other is told it was published.
    let draft = saved(&app, &write, &json!({"title": "Race", "content": "Go."})).await;
    let id = draft["id"].as_str().unwrap();
    let (one, another) = (a_key(), a_key());
    let (first, second) = two_at_once(&app, &publisher, id, [&one, &another]).await;
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);
    assert_eq!(count(&app, "newsletter_issues").await, 1);

    // One key: both get the issue.
    let draft = saved(
        &app,
        &write,
        &json!({"title": "Race again", "content": "Go."}),
    )
    .await;
    let id = draft["id"].as_str().unwrap();
    let key = a_key();
    let (first, second) = two_at_once(&app, &publisher, id, [&key, &key]).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], id);
    assert_eq!(second["id"], id);
    assert_eq!(count(&app, "newsletter_issues").await, 2);
    assert_eq!(count(&app, "issue_drafts").await, 0);
    let published = audit_actions(&app)
        .await
        .into_iter()
        .filter(|a| a == "issue-published")
        .count();
    assert_eq!(published, 2, "one entry per issue");
}

#[tokio::test]
async fn a_published_draft_keeps_its_lists_segment_schedule_and_place_in_the_archive() {
    let app = app().await;
    let editor = token(&app, "editor", "write,publish").await;
    let releases = new_list(&app, &editor, "Releases").await;
    let segment = a_segment(&app).await;
    let tomorrow = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let draft = saved(
        &app,
        &editor,
        &json!({"title": "Release 3.0", "content": "Soon.", "lists": [releases],
                "segment": segment, "send_at": tomorrow.to_rfc3339(), "public": true}),
    )
    .await;
    let id = draft["id"].as_str().unwrap();
    assert_eq!(draft["segment"], segment.to_string());

    let published = publish(&app, &editor, id, Some(&a_key())).await;
    assert_eq!(published.status(), StatusCode::CREATED);
    let issue: Value = published.json().await.unwrap();
    assert_eq!(issue["state"], "scheduled");

    let (list_ids, frozen, send_at, public): (
        Vec<Uuid>,
        Option<Value>,
        chrono::DateTime<chrono::Utc>,
        bool,
    ) = sqlx::query_as(
        "SELECT list_ids, segment, send_at, public_at IS NOT NULL \
         FROM newsletter_issues WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(list_ids, [releases.parse::<Uuid>().unwrap()]);
    assert!(frozen.is_some(), "the segment is frozen onto the issue");
    assert!((send_at - tomorrow).num_seconds().abs() < 2, "{send_at}");
    assert!(public, "in the archive from the start");
    let actions = audit_actions(&app).await;
    assert!(
        actions.ends_with(&["issue-published".to_owned(), "issue-made-public".to_owned()]),
        "{actions:?}"
    );
}

/// A saved segment of the readers with a `plan` attribute of `pro`.
async fn a_segment(app: &TestApp) -> Uuid {
    sqlx::query("INSERT INTO attribute_definitions (name, kind) VALUES ('plan', 'text')")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let filter = json!({"attribute": {"name": "plan", "op": "eq", "value": "pro"}});
    sqlx::query_scalar("INSERT INTO segments (name, filter) VALUES ('Pro', $1) RETURNING id")
        .bind(&filter)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_drafts_lists_and_segment_are_checked_when_saved_and_again_when_published() {
    let app = app().await;
    let write = token(&app, "editor", "write").await;
    let publisher = token(&app, "build", "publish").await;

    for (field, body) in [
        (
            "lists",
            json!({"title": "T", "content": "C", "lists": [Uuid::new_v4()]}),
        ),
        (
            "segment",
            json!({"title": "T", "content": "C", "segment": Uuid::new_v4()}),
        ),
    ] {
        let refused = problem(
            save(&app, &write, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{refused}");
    }
    assert_eq!(count(&app, "issue_drafts").await, 0);

    // Saved with one live list, no list named: fine then. A second live
    // list makes naming one necessary by the time it is published.
    let draft = saved(&app, &write, &json!({"title": "T", "content": "C"})).await;
    let id = draft["id"].as_str().unwrap();
    let releases = new_list(&app, &write, "Releases").await;
    let refused = problem(
        publish(&app, &publisher, id, Some(&a_key())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["lists"]);
    assert_eq!(count(&app, "issue_drafts").await, 1, "nothing published");

    let path = format!("/api/v1/drafts/{id}");
    let changed = api_patch(&app, &path, &write, json!({"lists": [releases]})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    // A list archived after it was chosen is refused at publishing.
    let archived = api_post(
        &app,
        &format!("/api/v1/lists/{releases}/archive"),
        &write,
        "",
    )
    .await;
    assert_eq!(archived.status(), StatusCode::OK);
    let refused = problem(
        publish(&app, &publisher, id, Some(&a_key())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["lists"]);

    // The text can still be changed while the list is archived.
    let changed = api_patch(&app, &path, &write, json!({"title": "T2"})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    // A segment deleted after it was chosen is refused at publishing.
    let segment = a_segment(&app).await;
    let changed = api_patch(
        &app,
        &path,
        &write,
        json!({"lists": null, "segment": segment}),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    sqlx::query("DELETE FROM segments WHERE id = $1")
        .bind(segment)
        .execute(&app.db_pool)
        .await
        .unwrap();
    let refused = problem(
        publish(&app, &publisher, id, Some(&a_key())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["segment"]);

    let changed = api_patch(&app, &path, &write, json!({"segment": null})).await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["segment"], Value::Null);
    let published = publish(&app, &publisher, id, Some(&a_key())).await;
    assert_eq!(published.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_spent_on_an_issue_is_refused_for_a_draft_before_its_audience_is_checked() {
    let app = app().await;
    let editor = token(&app, "editor", "write,publish").await;
    let key = a_key();
    let issue = api_client_publish(&app, &editor, &key).await;
    assert_eq!(issue.status(), StatusCode::CREATED);
    let issue: Value = issue.json().await.unwrap();

    // A draft whose lists could not be used now: the key is what it is
    // told of first.
    let draft = saved(&app, &editor, &json!({"title": "T", "content": "C"})).await;
    new_list(&app, &editor, "Second").await;
    let id = draft["id"].as_str().unwrap();
    let refused = problem(
        publish(&app, &editor, id, Some(&key)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["Idempotency-Key"]);

    // An ordinary issue's id is no draft's: nothing to publish again.
    let taken = problem(
        publish(&app, &editor, issue["id"].as_str().unwrap(), Some(&a_key())).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        taken["detail"].as_str().unwrap().contains("already"),
        "{taken}"
    );
    assert_eq!(count(&app, "newsletter_issues").await, 1);
}

async fn api_client_publish(app: &TestApp, secret: &str, key: &str) -> reqwest::Response {
    app.api_client
        .post(format!("{}/api/v1/issues/publish", app.address))
        .bearer_auth(secret)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(json!({"title": "Plain", "content": "An issue."}).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn hostile_draft_inputs_are_refused_naming_the_field_and_nothing_changes() {
    let app = app().await;
    let write = token(&app, "editor", "write").await;
    let draft = saved(&app, &write, &json!({"title": "Kept", "content": "Kept."})).await;
    let path = format!("/api/v1/drafts/{}", draft["id"].as_str().unwrap());

    for (field, body) in [
        ("title", json!({"content": "C"})),
        ("title", json!({"title": "T".repeat(201), "content": "C"})),
        ("title", json!({"title": "a\u{7}b", "content": "C"})),
        ("content", json!({"title": "T", "content": 12})),
        (
            "lists",
            json!({"title": "T", "content": "C", "lists": "all"}),
        ),
        (
            "lists",
            json!({"title": "T", "content": "C", "lists": ["nope"]}),
        ),
        (
            "segment",
            json!({"title": "T", "content": "C", "segment": "nope"}),
        ),
        (
            "send_at",
            json!({"title": "T", "content": "C", "send_at": "soon"}),
        ),
        (
            "public",
            json!({"title": "T", "content": "C", "public": "yes"}),
        ),
    ] {
        let refused = problem(
            save(&app, &write, &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            named(&refused).contains(&field.to_owned()),
            "{field}: {refused}"
        );
    }
    for (field, change) in [
        ("title", json!({"title": null})),
        ("content", json!({"content": null})),
        ("title", json!({"title": ""})),
        ("content", json!({"content": "x".repeat(200_001)})),
        ("send_at", json!({"send_at": "10000-01-01T00:00:00Z"})),
        ("lists", json!({"lists": [Uuid::new_v4()]})),
    ] {
        let refused = problem(
            api_patch(&app, &path, &write, change).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(
            named(&refused).contains(&field.to_owned()),
            "{field}: {refused}"
        );
    }
    let body = problem(
        api_send(&app, Method::PATCH, &path, &write, Some("{not json".into())).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"));
    let body = problem(
        api_send(&app, Method::PATCH, &path, &write, Some("[1]".into())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&body), ["body"]);

    let kept: Value = api_get(&app, &path, &write).await.json().await.unwrap();
    assert_eq!(kept, draft);
    assert_eq!(count(&app, "issue_drafts").await, 1);

    for missing in [
        format!("/api/v1/drafts/{}", Uuid::new_v4()),
        "/api/v1/drafts/not-an-id".to_owned(),
    ] {
        problem(api_get(&app, &missing, &write).await, StatusCode::NOT_FOUND).await;
        problem(
            api_patch(&app, &missing, &write, json!({"title": "T"})).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        problem(
            api_send(&app, Method::DELETE, &missing, &write, None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
}

#[tokio::test]
async fn drafts_are_listed_newest_first_a_page_at_a_time_and_deleted() {
    let app = app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "editor", "write").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let draft = saved(
            &app,
            &write,
            &json!({"title": format!("Draft {n}"), "content": "C"}),
        )
        .await;
        ids.push(draft["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();

    let first: Value = api_get(&app, "/api/v1/drafts?limit=2", &read)
        .await
        .json()
        .await
        .unwrap();
    let titles = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(titles(&first), ids[..2]);
    let next = first["next"].as_str().unwrap();
    // The draft the page ended on goes; the walk goes on after it.
    let gone = api_send(
        &app,
        Method::DELETE,
        &format!("/api/v1/drafts/{}", ids[1]),
        &write,
        None,
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let second: Value = api_get(&app, &format!("/api/v1/drafts?limit=2&after={next}"), &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(titles(&second), ids[2..]);
    assert_eq!(second["next"], Value::Null);
    let refused = problem(
        api_get(&app, "/api/v1/drafts?limit=0", &read).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["limit"]);

    let path = format!("/api/v1/drafts/{}", ids[0]);
    let refused = problem(
        api_get(&app, &format!("/api/v1/drafts?after={}", ids[0]), &read).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["after"]);
    problem(
        api_send(&app, Method::DELETE, &path, &read, None).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let deleted = api_send(&app, Method::DELETE, &path, &write, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(api_get(&app, &path, &read).await, StatusCode::NOT_FOUND).await;
    assert_eq!(count(&app, "issue_drafts").await, 1);
    assert_eq!(audit_actions(&app).await.last().unwrap(), "draft-deleted");
}
