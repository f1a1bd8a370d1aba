//! Outgoing webhook endpoints over `/api/v1/webhooks`: registered with the
//! secret shown once, read, changed, enabled, disabled and deleted with a
//! `publish` token only, their deliveries listed and sent again; the page's
//! URL check and event names refused naming the field; every change
//! audited under the token's name.

use std::time::Duration;

use newsletter::outgoing_webhooks::events::{self, Event};
use newsletter::outgoing_webhooks::signing::Secret;
use newsletter::subscribers::record;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::api_tokens::{api_get, api_post, named, problem, token};
use crate::campaigns::add_subscribers;
use crate::helpers::{TestApp, eventually_within, spawn_app, spawn_app_with};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    secret: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .api_client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(secret);
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    request.send().await.unwrap()
}

/// A receiver that takes every call.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    server
}

/// Registers an endpoint through the API; its answer.
async fn registered(app: &TestApp, secret: &str, url: &str, events: &[&str]) -> Value {
    let body = json!({"url": url, "description": "CRM", "events": events});
    let response = api_post(app, "/api/v1/webhooks", secret, &body.to_string()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// A subscriber created, emitted as the subscriber store would.
async fn a_subscriber_created(app: &TestApp) {
    let subscriber = add_subscribers(app, 1, "pending_confirmation").await[0];
    let mut transaction = app.db_pool.begin().await.unwrap();
    events::emit(
        &mut transaction,
        &[Event::subscriber_created(subscriber)],
        record::event_data,
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
}

async fn audit(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, username FROM audit_log ORDER BY id")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

async fn endpoints_stored(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_endpoint_registered_over_the_api_shows_its_secret_once_and_is_read_changed_and_deleted()
{
    let app = spawn_app().await;
    let publish = token(&app, "crm sync", "publish").await;
    let url = "https://crm.example.com/hooks/newsletter";

    let response = api_post(
        &app,
        "/api/v1/webhooks",
        &publish,
        &json!({"url": url, "description": "CRM", "events": ["subscriber.confirmed", "subscriber.confirmed"]}).to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/webhooks/{id}"));
    assert_eq!(created["url"], url);
    assert_eq!(
        created["events"],
        json!(["subscriber.confirmed"]),
        "kept once"
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["created_by"], "token crm sync");
    let secret = created["secret"].as_str().unwrap().to_owned();
    Secret::parse(&secret).expect("a whsec_ secret");

    // Never again: not in the list, nor the endpoint, nor a change's answer.
    let listed = api_get(&app, "/api/v1/webhooks", &publish).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed = listed.text().await.unwrap();
    let read = api_get(&app, &location, &publish).await;
    assert_eq!(read.status(), StatusCode::OK);
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["description"], "CRM");
    let changed = send(
        &app,
        Method::PATCH,
        &location,
        &publish,
        Some(json!({"events": ["issue.published", "subscriber.erased"], "description": "CRM, and issues", "url": "https://crm.example.com/hooks/v2"})),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(
        changed["events"],
        json!(["issue.published", "subscriber.erased"])
    );
    assert_eq!(changed["description"], "CRM, and issues");
    assert_eq!(changed["url"], "https://crm.example.com/hooks/v2");
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'webhook-endpoint-updated'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(
        detail.contains(
            "url https://crm.example.com/hooks/newsletter -> https://crm.example.com/hooks/v2"
        ),
        "the audit keeps the URL calls went to before: {detail}"
    );
    for (what, shown) in [
        ("the list", listed),
        ("the endpoint", read.to_string()),
        ("the change", changed.to_string()),
    ] {
        assert!(!shown.contains(&secret), "{what} shows the secret");
        assert!(!shown.contains("\"secret\""), "{what} has a secret field");
    }
    let stored_secret: String =
        sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(stored_secret, secret, "a change keeps the secret");

    let deleted = send(&app, Method::DELETE, &location, &publish, None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(
        api_get(&app, &location, &publish).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(endpoints_stored(&app).await, 0);
    let by = |action: &str| (action.to_owned(), "token crm sync".to_owned());
    assert_eq!(
        audit(&app).await,
        [
            by("webhook-endpoint-created"),
            by("webhook-endpoint-updated"),
            by("webhook-endpoint-deleted"),
        ]
    );
}

#[tokio::test]
async fn only_a_publish_token_changes_endpoints_while_a_read_token_reads_them() {
    let app = spawn_app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "writer", "write").await;
    let publish = token(&app, "publisher", "publish").await;
    let endpoint = registered(
        &app,
        &publish,
        "https://crm.example.com/hook",
        &["issue.published"],
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let delivery = Uuid::new_v4();
    let new = json!({"url": "https://other.example.com/hook", "events": ["issue.published"]});

    for (name, secret) in [("read", &read), ("write", &write)] {
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/webhooks".to_owned(),
                Some(new.clone()),
            ),
            (
                Method::PATCH,
                format!("/api/v1/webhooks/{id}"),
                Some(json!({"url": "https://attacker.example.com/"})),
            ),
            (Method::DELETE, format!("/api/v1/webhooks/{id}"), None),
            (Method::POST, format!("/api/v1/webhooks/{id}/enable"), None),
            (Method::POST, format!("/api/v1/webhooks/{id}/disable"), None),
            (
                Method::POST,
                format!("/api/v1/webhooks/{id}/deliveries/{delivery}/retry"),
                None,
            ),
        ] {
            let refused = problem(
                send(&app, method.clone(), &path, secret, body).await,
                StatusCode::FORBIDDEN,
            )
            .await;
            assert!(
                refused["detail"].as_str().unwrap().contains("`publish`"),
                "{name}: {method} {path}: {refused}"
            );
        }
        for path in [
            "/api/v1/webhooks".to_owned(),
            format!("/api/v1/webhooks/{id}"),
            format!("/api/v1/webhooks/{id}/deliveries"),
        ] {
            let answer = api_get(&app, &path, secret).await;
            assert_eq!(answer.status(), StatusCode::OK, "{name} reading {path}");
        }
    }
    assert_eq!(endpoints_stored(&app).await, 1);
    let read_back: Value = api_get(&app, &format!("/api/v1/webhooks/{id}"), &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read_back["url"], "https://crm.example.com/hook");
    assert_eq!(read_back["enabled"], true);
}

#[tokio::test]
async fn a_private_url_or_an_unknown_event_is_refused_naming_the_field_and_stores_nothing() {
    // As in production: the tests' own setting lets endpoints on loopback.
    let app = spawn_app_with(|s| s.outgoing_webhooks.allow_private_addresses = false).await;
    let publish = token(&app, "publisher", "publish").await;
    for (case, body, field) in [
        (
            "loopback",
            json!({"url": "http://127.0.0.1:8000/hook", "events": ["issue.published"]}),
            "url",
        ),
        (
            "a name for loopback",
            json!({"url": "http://localhost/hook", "events": ["issue.published"]}),
            "url",
        ),
        (
            "private",
            json!({"url": "http://10.1.2.3/hook", "events": ["issue.published"]}),
            "url",
        ),
        (
            "metadata",
            json!({"url": "http://169.254.169.254/latest/meta-data/", "events": ["issue.published"]}),
            "url",
        ),
        (
            "not http",
            json!({"url": "ftp://hooks.example.com/", "events": ["issue.published"]}),
            "url",
        ),
        ("no url", json!({"events": ["issue.published"]}), "url"),
        (
            "unknown event",
            json!({"url": "https://hooks.example.com/", "events": ["issue.deleted"]}),
            "events",
        ),
        (
            "no event",
            json!({"url": "https://hooks.example.com/", "events": []}),
            "events",
        ),
        (
            "events not a list",
            json!({"url": "https://hooks.example.com/", "events": "issue.published"}),
            "events",
        ),
        (
            "a control character",
            json!({"url": "https://hooks.example.com/", "events": ["issue.published"], "description": "a\u{0}b"}),
            "description",
        ),
    ] {
        let refused = problem(
            api_post(&app, "/api/v1/webhooks", &publish, &body.to_string()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(named(&refused), [field], "{case}: {refused}");
    }
    problem(
        api_post(&app, "/api/v1/webhooks", &publish, "not json").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(endpoints_stored(&app).await, 0);

    // A change is held to the same rules.
    let endpoint = registered(
        &app,
        &publish,
        "https://hooks.example.com/",
        &["issue.published"],
    )
    .await;
    let path = format!("/api/v1/webhooks/{}", endpoint["id"].as_str().unwrap());
    let refused = problem(
        send(
            &app,
            Method::PATCH,
            &path,
            &publish,
            Some(json!({"url": "http://[::1]/hook", "events": ["nope"]})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(named(&refused), ["url", "events"], "{refused}");
    let read: Value = api_get(&app, &path, &publish).await.json().await.unwrap();
    assert_eq!(read["url"], "https://hooks.example.com/");
    assert_eq!(read["events"], json!(["issue.published"]));
}

#[tokio::test]
async fn an_unknown_endpoint_or_delivery_is_a_404_problem() {
    let app = spawn_app().await;
    let publish = token(&app, "publisher", "publish").await;
    let endpoint = registered(
        &app,
        &publish,
        "https://hooks.example.com/",
        &["issue.published"],
    )
    .await;
    let known = endpoint["id"].as_str().unwrap().to_owned();
    let change = json!({"description": "x"});
    for id in [Uuid::new_v4().to_string(), "not-an-id".to_owned()] {
        for (method, path, body) in [
            (Method::GET, format!("/api/v1/webhooks/{id}"), None),
            (
                Method::PATCH,
                format!("/api/v1/webhooks/{id}"),
                Some(change.clone()),
            ),
            (Method::DELETE, format!("/api/v1/webhooks/{id}"), None),
            (Method::POST, format!("/api/v1/webhooks/{id}/enable"), None),
            (Method::POST, format!("/api/v1/webhooks/{id}/disable"), None),
            (
                Method::GET,
                format!("/api/v1/webhooks/{id}/deliveries"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/webhooks/{known}/deliveries/{id}/retry"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/webhooks/{id}/deliveries/{}/retry", Uuid::new_v4()),
                None,
            ),
        ] {
            let answer = send(&app, method.clone(), &path, &publish, body).await;
            problem(answer, StatusCode::NOT_FOUND).await;
        }
    }
    assert!(
        audit(&app)
            .await
            .iter()
            .all(|(action, _)| action == "webhook-endpoint-created"),
        "a 404 was audited"
    );
}

#[tokio::test]
async fn a_disabled_endpoint_keeps_its_delivery_waiting_and_enabled_again_it_can_be_sent_again() {
    // No workers: what is queued stays where the test puts it.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let publish = token(&app, "publisher", "publish").await;
    let read = token(&app, "reader", "read").await;
    let endpoint = registered(
        &app,
        &publish,
        "https://hooks.example.com/",
        &["subscriber.created"],
    )
    .await;
    let path = format!("/api/v1/webhooks/{}", endpoint["id"].as_str().unwrap());
    a_subscriber_created(&app).await;

    let listed: Value = api_get(&app, &format!("{path}/deliveries"), &read)
        .await
        .json()
        .await
        .unwrap();
    let delivery = &listed["data"][0];
    assert_eq!(delivery["event_type"], "subscriber.created");
    assert_eq!(delivery["status"], "pending");
    assert!(delivery["next_attempt_at"].is_string(), "{delivery}");
    assert!(delivery.get("payload").is_none(), "a payload is shown");
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();

    let disabled = send(
        &app,
        Method::POST,
        &format!("{path}/disable"),
        &publish,
        None,
    )
    .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let disabled: Value = disabled.json().await.unwrap();
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "Disabled by an admin.");
    let again = send(
        &app,
        Method::POST,
        &format!("{path}/disable"),
        &publish,
        None,
    )
    .await;
    assert_eq!(
        again.status(),
        StatusCode::OK,
        "disabling twice is no error"
    );
    let listed: Value = api_get(&app, &format!("{path}/deliveries"), &read)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        listed["data"][0]["next_attempt_at"].is_null(),
        "a disabled endpoint's delivery is due at no moment: {listed}"
    );

    let enabled = send(
        &app,
        Method::POST,
        &format!("{path}/enable"),
        &publish,
        None,
    )
    .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    let enabled: Value = enabled.json().await.unwrap();
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null());
    let enabled_again = send(
        &app,
        Method::POST,
        &format!("{path}/enable"),
        &publish,
        None,
    )
    .await;
    assert_eq!(enabled_again.status(), StatusCode::OK);
    let enabled_again: Value = enabled_again.json().await.unwrap();
    assert_eq!(enabled_again["enabled"], true);
    let retried = send(
        &app,
        Method::POST,
        &format!("{path}/deliveries/{delivery_id}/retry"),
        &publish,
        None,
    )
    .await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    let actions: Vec<String> = audit(&app).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        actions,
        [
            "webhook-endpoint-created",
            "webhook-endpoint-disabled",
            "webhook-endpoint-enabled",
            "webhook-delivery-retried",
        ],
        "the second disable and the second enable changed nothing"
    );
}

#[tokio::test]
async fn a_deleted_endpoint_is_sent_nothing_more() {
    let app = spawn_app().await;
    let publish = token(&app, "publisher", "publish").await;
    let deleted_receiver = receiver().await;
    let kept_receiver = receiver().await;
    let deleted = registered(
        &app,
        &publish,
        &deleted_receiver.uri(),
        &["subscriber.created"],
    )
    .await;
    registered(
        &app,
        &publish,
        &kept_receiver.uri(),
        &["subscriber.created"],
    )
    .await;
    let calls = async |server: &MockServer, n: usize, what: &str| {
        eventually_within(Duration::from_secs(15), what, || async {
            let received = server.received_requests().await.unwrap_or_default();
            (received.len() >= n).then_some(received.len())
        })
        .await
    };
    a_subscriber_created(&app).await;
    calls(
        &deleted_receiver,
        1,
        "the first event at the first endpoint",
    )
    .await;
    calls(&kept_receiver, 1, "the first event at the second endpoint").await;

    let path = format!("/api/v1/webhooks/{}", deleted["id"].as_str().unwrap());
    let answer = send(&app, Method::DELETE, &path, &publish, None).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    a_subscriber_created(&app).await;

    // Once the endpoint still registered has the second event, the one
    // deleted would have had it too.
    calls(&kept_receiver, 2, "the second event at the endpoint kept").await;
    assert_eq!(
        deleted_receiver.received_requests().await.unwrap().len(),
        1,
        "the deleted endpoint was called again"
    );
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1::uuid")
            .bind(deleted["id"].as_str().unwrap())
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "its deliveries went with it");
}
