//! `/api/v1` writes on subscribers and lists: changing, archiving and
//! bringing back a list; changing, unsubscribing and erasing a subscriber;
//! adding one on attested consent; narrowing the list by a segment or a
//! filter. Each is refused to a read token, answers 404 for an id that
//! names nothing, and names the field it refuses.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api_tokens::{api_get, api_patch, api_post, api_send, named, problem, token};
use crate::helpers::{TestApp, spawn_app};

async fn default_list(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// A list made through the API; its id.
async fn new_list(app: &TestApp, secret: &str, body: Value) -> Uuid {
    let made = api_post(app, "/api/v1/lists", secret, &body.to_string()).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let list: Value = made.json().await.unwrap();
    list["id"].as_str().unwrap().parse().unwrap()
}

/// A confirmed reader on the default list; their id.
async fn confirmed_reader(app: &TestApp, email: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at, \
         memberships_written) VALUES ($1, $2, 'Reader', now(), 'confirmed', now(), true)",
    )
    .bind(id)
    .bind(email)
    .execute(&app.db_pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO memberships (list_id, subscriber_id, status, confirmed_at) \
         VALUES ($1, $2, 'confirmed', now())",
    )
    .bind(default_list(app).await)
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    id
}

async fn read_subscriber(app: &TestApp, secret: &str, id: Uuid) -> Value {
    let response = api_get(app, &format!("/api/v1/subscribers/{id}"), secret).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The reader's status on `list`, as the API shows it.
fn status_on(subscriber: &Value, list: Uuid) -> Option<String> {
    subscriber["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["list_id"] == list.to_string())
        .map(|m| m["status"].as_str().unwrap().to_owned())
}

/// Every new write route, with a body it would take.
fn writes(list: Uuid, subscriber: Uuid) -> Vec<(Method, String, Option<String>)> {
    vec![
        (
            Method::PATCH,
            format!("/api/v1/lists/{list}"),
            Some(json!({"description": "x"}).to_string()),
        ),
        (Method::POST, format!("/api/v1/lists/{list}/archive"), None),
        (
            Method::POST,
            format!("/api/v1/lists/{list}/unarchive"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/subscribers/{subscriber}"),
            Some(json!({"attributes": {}}).to_string()),
        ),
        (
            Method::POST,
            format!("/api/v1/subscribers/{subscriber}/unsubscribe"),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/subscribers/{subscriber}"),
            None,
        ),
    ]
}

#[tokio::test]
async fn a_read_token_is_refused_every_write_and_nothing_changes() {
    let app = spawn_app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "writer", "write").await;
    let list = new_list(&app, &write, json!({"name": "Releases"})).await;
    let reader = confirmed_reader(&app, "ada@example.com").await;
    for (method, path, body) in writes(list, reader) {
        let response = api_send(&app, method.clone(), &path, &read, body).await;
        let refused = problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            refused["detail"].as_str().unwrap().contains("`write`"),
            "{method} {path}: {refused}"
        );
    }
    let after = read_subscriber(&app, &read, reader).await;
    assert_eq!(after["status"], "confirmed");
    let attested = json!({"email": "bo@example.com", "name": "Bo", "consent_source": "stand"});
    problem(
        api_post(&app, "/api/v1/subscribers", &read, &attested.to_string()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn an_id_that_names_nothing_is_a_404_problem_on_every_new_route() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    let (list, subscriber) = (Uuid::new_v4(), Uuid::new_v4());
    for id in [Uuid::new_v4().to_string(), "not-an-id".to_owned()] {
        for (method, path, body) in writes(list, subscriber) {
            let path = path
                .replace(&list.to_string(), &id)
                .replace(&subscriber.to_string(), &id);
            let response = api_send(&app, method.clone(), &path, &write, body).await;
            problem(response, StatusCode::NOT_FOUND).await;
        }
    }
}

#[tokio::test]
async fn a_list_is_changed_archived_and_brought_back_and_the_default_list_stays_live() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    let list = new_list(&app, &write, json!({"name": "Releases", "public": true})).await;
    let path = format!("/api/v1/lists/{list}");

    let changed = api_patch(
        &app,
        &path,
        &write,
        json!({"description": "Monthly.", "public": false}),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        (
            &changed["name"],
            &changed["description"],
            &changed["public"]
        ),
        (&json!("Releases"), &json!("Monthly."), &json!(false)),
        "only the fields sent change"
    );

    for (case, body, field) in [
        ("a name of the wrong type", json!({"name": 7}), "name"),
        ("an empty name", json!({"name": "  "}), "name"),
        (
            "a huge description",
            json!({"description": "x".repeat(5000)}),
            "description",
        ),
        (
            "a flag that is a string",
            json!({"public": "yes"}),
            "public",
        ),
        ("a control character", json!({"name": "a\u{0}b"}), "name"),
    ] {
        let refused = problem(
            api_patch(&app, &path, &write, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
    let other = new_list(&app, &write, json!({"name": "Other"})).await;
    let taken = problem(
        api_patch(
            &app,
            &format!("/api/v1/lists/{other}"),
            &write,
            json!({"name": "releases"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&taken), ["name"], "{taken}");

    let archived = api_post(&app, &format!("{path}/archive"), &write, "").await;
    assert_eq!(archived.status(), StatusCode::OK);
    let archived: Value = archived.json().await.unwrap();
    assert!(archived["archived_at"].is_string(), "{archived}");
    let live: Value = api_post(&app, &format!("{path}/unarchive"), &write, "")
        .await
        .json()
        .await
        .unwrap();
    assert!(live["archived_at"].is_null(), "{live}");

    let default = default_list(&app).await;
    let refused = problem(
        api_post(
            &app,
            &format!("/api/v1/lists/{default}/archive"),
            &write,
            "",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["id"]);
    let still: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT archived_at FROM lists WHERE is_default")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert!(still.is_none());

    let actions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, username, detail FROM audit_log WHERE action LIKE 'list-%' ORDER BY id",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    let details: Vec<&str> = actions.iter().map(|(_, _, d)| d.as_str()).collect();
    assert!(
        actions.iter().all(|(_, who, _)| who == "token writer"),
        "{actions:?}"
    );
    assert!(
        details.iter().any(|d| d.ends_with("changed"))
            && details.iter().any(|d| d.ends_with(" archived"))
            && details.iter().any(|d| d.ends_with("unarchived")),
        "{details:?}"
    );
    // Under the same actions as the newsroom's pages record, so that the
    // log reads the same whoever made the change.
    let kinds: Vec<&str> = actions.iter().map(|(a, _, _)| a.as_str()).collect();
    for kind in ["list-updated", "list-archived", "list-unarchived"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
}

#[tokio::test]
async fn an_erasure_through_the_api_leaves_what_the_pages_erasure_leaves() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    let reader = confirmed_reader(&app, "erase.me@example.com").await;
    // Someone who left: the suppression list keeps their address's hash.
    let unsubscribe = api_post(
        &app,
        &format!("/api/v1/subscribers/{reader}/unsubscribe"),
        &write,
        "",
    )
    .await;
    assert_eq!(unsubscribe.status(), StatusCode::OK);

    let erased = api_send(
        &app,
        Method::DELETE,
        &format!("/api/v1/subscribers/{reader}"),
        &write,
        None,
    )
    .await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE id = $1")
        .bind(reader)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the row is gone");
    let mentions: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM memberships WHERE subscriber_id = $1) \
              + (SELECT count(*) FROM audit_log WHERE detail ILIKE '%erase.me%')",
    )
    .bind(reader)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(mentions, 0);
    let (hashed, departed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM suppressions WHERE address_hash IS NOT NULL \
                 AND email IS NULL), \
                (SELECT count(*) FROM former_addresses)",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(
        hashed >= 1 && departed >= 1,
        "suppressed {hashed}, departed {departed}"
    );
    let (action, username): (String, String) =
        sqlx::query_as("SELECT action, username FROM audit_log WHERE action = 'subscriber-erased'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        (action.as_str(), username.as_str()),
        ("subscriber-erased", "token writer")
    );

    problem(
        api_get(&app, &format!("/api/v1/subscribers/{reader}"), &write).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let again = api_send(
        &app,
        Method::DELETE,
        &format!("/api/v1/subscribers/{reader}"),
        &write,
        None,
    )
    .await;
    problem(again, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn unsubscribing_leaves_the_lists_named_and_then_everything() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    let weekly = new_list(
        &app,
        &write,
        json!({"name": "Weekly", "double_opt_in": false}),
    )
    .await;
    let reader = confirmed_reader(&app, "leaver@example.com").await;
    let path = format!("/api/v1/subscribers/{reader}");
    let joined = api_patch(&app, &path, &write, json!({"lists": {"add": [weekly]}})).await;
    assert_eq!(joined.status(), StatusCode::OK);
    let unsubscribe = format!("{path}/unsubscribe");

    for (case, body, field) in [
        (
            "an unknown list",
            json!({"lists": [Uuid::new_v4()]}),
            "lists",
        ),
        ("a malformed id", json!({"lists": ["weekly"]}), "lists"),
        ("no list at all", json!({"lists": []}), "lists"),
        ("lists of the wrong type", json!({"lists": "all"}), "lists"),
    ] {
        let refused = problem(
            api_post(&app, &unsubscribe, &write, &body.to_string()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }

    let left: Value = api_post(
        &app,
        &unsubscribe,
        &write,
        &json!({"lists": [weekly]}).to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(left["status"], "confirmed", "still on the default list");
    assert_eq!(status_on(&left, weekly).as_deref(), Some("unsubscribed"));

    let gone: Value = api_post(&app, &unsubscribe, &write, "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(gone["status"], "unsubscribed");
    let default = default_list(&app).await;
    assert_eq!(status_on(&gone, default).as_deref(), Some("unsubscribed"));
}

#[tokio::test]
async fn a_change_of_lists_and_attributes_is_what_the_next_read_shows() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    sqlx::query(
        "INSERT INTO attribute_definitions (name, kind) VALUES ('city', 'text'), ('age', 'number')",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let open = new_list(
        &app,
        &write,
        json!({"name": "Open", "double_opt_in": false}),
    )
    .await;
    let reader = confirmed_reader(&app, "patch@example.com").await;
    let path = format!("/api/v1/subscribers/{reader}");

    let changed = api_patch(
        &app,
        &path,
        &write,
        json!({"attributes": {"city": "Oslo", "age": 42}, "lists": {"add": [open]}}),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let read = read_subscriber(&app, &write, reader).await;
    assert_eq!(read["attributes"], json!({"city": "Oslo", "age": 42.0}));
    assert_eq!(status_on(&read, open).as_deref(), Some("confirmed"));

    let default = default_list(&app).await;
    let removed = api_patch(
        &app,
        &path,
        &write,
        json!({"attributes": {"city": null}, "lists": {"remove": [default]}}),
    )
    .await;
    assert_eq!(removed.status(), StatusCode::OK);
    let read = read_subscriber(&app, &write, reader).await;
    assert_eq!(read["attributes"], json!({"age": 42.0}));
    assert_eq!(status_on(&read, default).as_deref(), Some("unsubscribed"));
    assert_eq!(read["status"], "confirmed", "still on a list");

    let archived = new_list(&app, &write, json!({"name": "Old"})).await;
    api_post(
        &app,
        &format!("/api/v1/lists/{archived}/archive"),
        &write,
        "",
    )
    .await;
    for (case, body, field) in [
        (
            "an unknown attribute",
            json!({"attributes": {"nope": "x"}}),
            "attributes.nope",
        ),
        (
            "a number that is not one",
            json!({"attributes": {"age": "old"}}),
            "attributes.age",
        ),
        (
            "an object for a value",
            json!({"attributes": {"city": {"a": 1}}}),
            "attributes.city",
        ),
        (
            "a huge text",
            json!({"attributes": {"city": "x".repeat(20_000)}}),
            "attributes.city",
        ),
        (
            "a NUL in a text",
            json!({"attributes": {"city": "a\u{0}b"}}),
            "attributes.city",
        ),
        (
            "attributes that are not an object",
            json!({"attributes": ["city"]}),
            "attributes",
        ),
        (
            "an unknown list",
            json!({"lists": {"add": [Uuid::new_v4()]}}),
            "lists.add",
        ),
        (
            "an archived list",
            json!({"lists": {"add": [archived]}}),
            "lists.add",
        ),
        (
            "a malformed list id",
            json!({"lists": {"add": ["x"]}}),
            "lists.add",
        ),
        (
            "a list id of the wrong type",
            json!({"lists": {"remove": [1]}}),
            "lists.remove",
        ),
        (
            "joined and left at once",
            json!({"lists": {"add": [open], "remove": [open]}}),
            "lists.remove",
        ),
    ] {
        let refused = problem(
            api_patch(&app, &path, &write, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
    let unchanged = read_subscriber(&app, &write, reader).await;
    assert_eq!(
        unchanged["attributes"],
        json!({"age": 42.0}),
        "nothing refused was written"
    );
}

#[tokio::test]
async fn the_list_is_narrowed_by_a_filter_or_a_saved_segment() {
    let app = spawn_app().await;
    let read = token(&app, "reader", "read").await;
    sqlx::query("INSERT INTO attribute_definitions (name, kind) VALUES ('plan', 'text')")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let pro = confirmed_reader(&app, "pro@example.com").await;
    let free = confirmed_reader(&app, "free@example.com").await;
    for (id, plan) in [(pro, "pro"), (free, "free")] {
        sqlx::query("UPDATE subscriptions SET attributes = jsonb_build_object('plan', $2::text) WHERE id = $1")
            .bind(id)
            .bind(plan)
            .execute(&app.db_pool)
            .await
            .unwrap();
    }
    let filter = json!({"attribute": {"name": "plan", "op": "eq", "value": "pro"}});
    let segment: Uuid =
        sqlx::query_scalar("INSERT INTO segments (name, filter) VALUES ('Pro', $1) RETURNING id")
            .bind(&filter)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    let encoded = serde_urlencoded::to_string([("filter", filter.to_string())]).unwrap();
    let default = default_list(&app).await;
    for query in [
        format!("list={default}&status=confirmed&{encoded}"),
        encoded.clone(),
        format!("segment={segment}"),
        format!("segment={segment}&{encoded}&limit=1"),
    ] {
        let page: Value = api_get(&app, &format!("/api/v1/subscribers?{query}"), &read)
            .await
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [pro.to_string()], "{query}");
    }

    let unknown_list = json!({"list": {"id": Uuid::new_v4()}}).to_string();
    let unknown_attribute =
        json!({"attribute": {"name": "nope", "op": "eq", "value": 1}}).to_string();
    for (case, query, field) in [
        ("malformed JSON", "filter=%7Bnot".to_owned(), "filter"),
        (
            "an unknown shape",
            "filter=%7B%22every%22%3A%5B%5D%7D".to_owned(),
            "filter",
        ),
        (
            "an unknown list",
            serde_urlencoded::to_string([("filter", unknown_list)]).unwrap(),
            "filter",
        ),
        (
            "an unknown attribute",
            serde_urlencoded::to_string([("filter", unknown_attribute)]).unwrap(),
            "filter",
        ),
        (
            "an unknown segment",
            format!("segment={}", Uuid::new_v4()),
            "segment",
        ),
        (
            "a malformed segment id",
            "segment=pro".to_owned(),
            "segment",
        ),
    ] {
        let refused = problem(
            api_get(&app, &format!("/api/v1/subscribers?{query}"), &read).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
}

#[tokio::test]
async fn an_attested_sign_up_is_confirmed_at_once_and_can_be_followed_to_its_address() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    let body = json!({"email": "met@example.com", "name": "Met", "consent_source": "Our stand, 2027-01-14"});
    let created = api_post(&app, "/api/v1/subscribers", &write, &body.to_string()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let subscriber: Value = created.json().await.unwrap();
    assert_eq!(subscriber["status"], "confirmed");
    assert_eq!(
        location,
        format!("/api/v1/subscribers/{}", subscriber["id"].as_str().unwrap())
    );
    let followed: Value = api_get(&app, &location, &write).await.json().await.unwrap();
    let default = default_list(&app).await;
    assert_eq!(status_on(&followed, default).as_deref(), Some("confirmed"));
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'api-write' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(
        detail.contains("consent attested: Our stand") && !detail.contains("met@"),
        "{detail}"
    );

    for (case, body, field) in [
        ("the same address again", body.clone(), "email"),
        (
            "an empty source",
            json!({"email": "x@example.com", "name": "X", "consent_source": " "}),
            "consent_source",
        ),
        (
            "a source of the wrong type",
            json!({"email": "x@example.com", "name": "X", "consent_source": true}),
            "consent_source",
        ),
        (
            "an unknown list",
            json!({"email": "x@example.com", "name": "X", "consent_source": "s", "lists": [Uuid::new_v4()]}),
            "lists",
        ),
    ] {
        let refused = problem(
            api_post(&app, "/api/v1/subscribers", &write, &body.to_string()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
}

#[tokio::test]
async fn an_unknown_path_a_wrong_method_and_a_large_body_are_answered_as_problems() {
    let app = spawn_app().await;
    let write = token(&app, "writer", "write").await;
    problem(
        api_get(&app, "/api/v1/nothing-here", &write).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        api_get(
            &app,
            &format!("/api/v1/lists/{}/archive", Uuid::new_v4()),
            &write,
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(
        api_send(&app, Method::PUT, "/api/v1/subscribers", &write, None).await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    let huge = json!({"name": "x".repeat(2 * 1024 * 1024)}).to_string();
    problem(
        api_post(&app, "/api/v1/lists", &write, &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // Without a token the guard answers first: no one learns the paths.
    let anonymous = app
        .api_client
        .get(format!("{}/api/v1/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn joining_a_double_opt_in_list_leaves_the_reader_pending_until_the_emails_button() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let write = token(&app, "writer", "write").await;
    let asks = new_list(&app, &write, json!({"name": "Asks", "double_opt_in": true})).await;
    let reader = confirmed_reader(&app, "careful@example.com").await;

    let joined = api_patch(
        &app,
        &format!("/api/v1/subscribers/{reader}"),
        &write,
        json!({"lists": {"add": [asks]}}),
    )
    .await;
    assert_eq!(joined.status(), StatusCode::OK);
    let joined: Value = joined.json().await.unwrap();
    assert_eq!(status_on(&joined, asks).as_deref(), Some("pending"));

    let emails = app.wait_for_emails(1).await;
    let link = app.confirmation_links(&emails[0]).html;
    // A confirmed address has a past here: its link asks for the button.
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .to_string();
    let pressed = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(pressed.status(), StatusCode::OK);
    let confirmed = read_subscriber(&app, &write, reader).await;
    assert_eq!(
        status_on(&confirmed, asks).as_deref(),
        Some("confirmed"),
        "the email's button confirms the list"
    );
}

#[tokio::test]
async fn a_join_past_the_tokens_sign_up_budget_is_answered_429_and_changes_nothing() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.rate_limit.api_signups_per_token = newsletter::configuration::LimitSettings {
            burst: 1,
            per_period: 1,
            period_seconds: 3600,
        }
    })
    .await;
    app.mock_email_api_ok().await;
    let write = token(&app, "writer", "write").await;
    let first = new_list(&app, &write, json!({"name": "First"})).await;
    let second = new_list(&app, &write, json!({"name": "Second"})).await;
    let reader = confirmed_reader(&app, "budget@example.com").await;
    let path = format!("/api/v1/subscribers/{reader}");

    let joined = api_patch(&app, &path, &write, json!({"lists": {"add": [first]}})).await;
    assert_eq!(joined.status(), StatusCode::OK);
    let refused = api_patch(
        &app,
        &path,
        &write,
        json!({"attributes": {}, "lists": {"add": [second]}}),
    )
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, StatusCode::TOO_MANY_REQUESTS).await;

    let read = read_subscriber(&app, &write, reader).await;
    assert_eq!(status_on(&read, first).as_deref(), Some("pending"));
    assert_eq!(
        status_on(&read, second),
        None,
        "the refused join wrote nothing"
    );
}
