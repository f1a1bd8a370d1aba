//! API tokens and `/api/v1`: made from the command line and the admin
//! pages, shown once, scoped, revoked, expired, rate limited per token;
//! a token opens no admin page and a session cookie no API route; every
//! refusal is a problem (RFC 9457) naming what was wrong.

use std::collections::HashSet;
use std::process::Stdio;

use newsletter::api::tokens::{self, NewToken, Scopes, TokenName};
use newsletter::configuration::LimitSettings;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{BROWSER_ACCEPT, TestApp, spawn_app, spawn_app_with};
use crate::newsroom::{Browser, PASSWORD, audit_actions, create_admin, location};

pub(crate) const PROBLEM: &str = "application/problem+json";

/// A token made through the store, as the page and the command line make
/// them: its secret.
pub(crate) async fn token(app: &TestApp, name: &str, scopes: &str) -> String {
    let name = TokenName::parse(name).unwrap();
    let scopes = Scopes::parse_list(scopes).unwrap();
    let new = NewToken {
        name: &name,
        scopes: &scopes,
        created_by: "test",
        expires_in_days: None,
    };
    let mut conn = app.db_pool.acquire().await.unwrap();
    let (_, secret) = tokens::create(&mut conn, &new).await.unwrap();
    secret.expose().to_owned()
}

pub(crate) async fn api_get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.api_client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn api_post(
    app: &TestApp,
    path: &str,
    token: &str,
    body: &str,
) -> reqwest::Response {
    app.api_client
        .post(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

pub(crate) async fn api_send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .api_client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body);
    }
    request.send().await.unwrap()
}

pub(crate) async fn api_patch(
    app: &TestApp,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    api_send(app, Method::PATCH, path, token, Some(body.to_string())).await
}

/// The answer's problem, checking that it is one, with the status it says.
pub(crate) async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, PROBLEM);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

pub(crate) fn named(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn each_scope_is_allowed_what_it_grants_and_refused_the_rest() {
    let app = spawn_app().await;
    let read = token(&app, "reader", "read").await;
    let write = token(&app, "writer", "write").await;
    let publish = token(&app, "publisher", "publish").await;
    let new_list = r#"{"name": "Releases"}"#;

    for (name, secret) in [("read", &read), ("write", &write), ("publish", &publish)] {
        for path in ["/api/v1/lists", "/api/v1/subscribers"] {
            let response = api_get(&app, path, secret).await;
            assert_eq!(response.status(), StatusCode::OK, "{name} reading {path}");
        }
    }
    for (name, secret) in [("read", &read), ("publish", &publish)] {
        let body = problem(
            api_post(&app, "/api/v1/lists", secret, new_list).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("`write`"),
            "{name}: {body}"
        );
    }
    let created = api_post(&app, "/api/v1/lists", &write, new_list).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let list: Value = created.json().await.unwrap();
    assert_eq!(list["name"], "Releases");
    let id = list["id"].as_str().unwrap();
    let read_back: Value = api_get(&app, &format!("/api/v1/lists/{id}"), &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read_back["name"], "Releases");
    // A write through the API is audited under the token's name.
    let (action, username): (String, String) =
        sqlx::query_as("SELECT action, username FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        (action.as_str(), username.as_str()),
        ("list-created", "token writer")
    );
}

#[tokio::test]
async fn revoked_expired_unknown_and_missing_tokens_are_answered_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let revoked = token(&app, "revoked", "read").await;
    let expired = token(&app, "expired", "read").await;
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE name = 'revoked'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE name = 'expired'",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let unknown = format!("nl_{}", "A".repeat(43));

    for (case, secret) in [
        ("revoked", revoked.as_str()),
        ("expired", expired.as_str()),
        ("unknown", unknown.as_str()),
        ("malformed", "not-a-token"),
    ] {
        let response = api_get(&app, "/api/v1/lists", secret).await;
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{case}: {challenge}");
        assert!(challenge.contains("invalid_token"), "{case}: {challenge}");
        problem(response, StatusCode::UNAUTHORIZED).await;
    }
    let anonymous = app
        .api_client
        .get(format!("{}/api/v1/subscribers", app.address))
        .send()
        .await
        .unwrap();
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(anonymous, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_token_sent_to_an_admin_page_is_not_signed_in() {
    let app = spawn_app().await;
    let secret = token(&app, "everything", "read,write,publish").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/admin/dashboard", "/admin/tokens", "/admin/subscribers"] {
        let program = client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        assert_eq!(program.status(), StatusCode::UNAUTHORIZED, "{path}");
        let browser = client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&secret)
            .header("Accept", BROWSER_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(browser.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&browser), "/login");
    }
}

#[tokio::test]
async fn a_session_cookie_sent_to_the_api_is_answered_401() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    assert!(browser.is_signed_in().await);
    for path in ["/api/v1/lists", "/api/v1/subscribers"] {
        problem(browser.get(path).await, StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn every_api_route_refuses_a_request_without_a_token() {
    let app = spawn_app().await;
    let mut routes = 0;
    for endpoint in newsletter::routes::endpoints() {
        assert_eq!(
            endpoint.path.starts_with("/api/"),
            endpoint.access == newsletter::routes::Access::Token,
            "{}",
            endpoint.path
        );
        if endpoint.access != newsletter::routes::Access::Token {
            continue;
        }
        for method in endpoint.methods {
            routes += 1;
            let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let url = format!("{}{}", app.address, endpoint.path);
            let response = app
                .api_client
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            problem(response, StatusCode::UNAUTHORIZED).await;
        }
    }
    assert!(routes >= 5, "only {routes} API routes found");
}

/// Inserts `n` readers, three to each second so that the cursor's tie on
/// time is exercised, and returns their ids.
async fn readers(app: &TestApp, n: i32) -> HashSet<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         SELECT gen_random_uuid(), 'reader' || i || '@example.com', 'Reader ' || i, \
                date_trunc('second', now()) - make_interval(secs => i / 3), \
                CASE WHEN i % 2 = 0 THEN 'confirmed' ELSE 'pending_confirmation' END \
         FROM generate_series(1, $1) AS i RETURNING id",
    )
    .bind(n)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Every page of `query` at `limit` a page, followed through `next`.
async fn walk(app: &TestApp, secret: &str, query: &str, limit: usize) -> Vec<Uuid> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/api/v1/subscribers?limit={limit}{query}");
        if let Some(cursor) = &after {
            path.push_str(&format!("&after={cursor}"));
        }
        let response = api_get(app, &path, secret).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page: Value = response.json().await.unwrap();
        let rows = page["data"].as_array().unwrap();
        assert!(rows.len() <= limit);
        seen.extend(
            rows.iter()
                .map(|r| r["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
        );
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(rows.len(), limit, "a page before the last is full");
                after = Some(next.to_owned());
            }
            None => return seen,
        }
    }
    panic!("the walk did not end");
}

#[tokio::test]
async fn walking_the_pages_visits_every_reader_once() {
    let app = spawn_app().await;
    let secret = token(&app, "sync", "read").await;
    let all = readers(&app, 31).await;

    for limit in [1, 7, 31, 100] {
        let seen = walk(&app, &secret, "", limit).await;
        assert_eq!(
            seen.len(),
            all.len(),
            "limit {limit}: a reader seen twice or missed"
        );
        assert_eq!(
            seen.iter().copied().collect::<HashSet<_>>(),
            all,
            "limit {limit}"
        );
    }
    let confirmed = walk(&app, &secret, "&status=confirmed", 4).await;
    assert_eq!(confirmed.len(), 15);
    let searched = walk(&app, &secret, "&q=reader1", 2).await;
    // reader1, reader10 … reader19
    assert_eq!(searched.len(), 11);
}

#[tokio::test]
async fn bad_paging_parameters_are_refused_naming_each() {
    let app = spawn_app().await;
    let secret = token(&app, "sync", "read").await;
    let unknown_list = format!("list={}", Uuid::new_v4());
    for (query, names) in [
        ("limit=0", vec!["limit"]),
        ("limit=501", vec!["limit"]),
        ("limit=lots", vec!["limit"]),
        ("after=yesterday", vec!["after"]),
        ("after=1_2", vec!["after"]),
        ("status=gone", vec!["status"]),
        ("list=not-a-list", vec!["list"]),
        (unknown_list.as_str(), vec!["list"]),
        ("limit=0&after=x", vec!["limit", "after"]),
    ] {
        let response = api_get(&app, &format!("/api/v1/subscribers?{query}"), &secret).await;
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(named(&body), names, "{query}");
    }
    let twice = api_get(&app, "/api/v1/subscribers?limit=1&limit=2", &secret).await;
    problem(twice, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_subscriber_is_read_by_id_and_an_unknown_id_is_a_404_problem() {
    let app = spawn_app().await;
    let secret = token(&app, "crm", "read").await;
    let id = *readers(&app, 1).await.iter().next().unwrap();
    let found: Value = api_get(&app, &format!("/api/v1/subscribers/{id}"), &secret)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["id"], id.to_string());
    assert_eq!(found["email"], "reader1@example.com");
    assert!(found["lists"].is_array());
    for missing in [Uuid::new_v4().to_string(), "not-an-id".to_owned()] {
        let response = api_get(&app, &format!("/api/v1/subscribers/{missing}"), &secret).await;
        problem(response, StatusCode::NOT_FOUND).await;
    }
}

#[tokio::test]
async fn a_new_list_with_bad_fields_is_refused_naming_them() {
    let app = spawn_app().await;
    let secret = token(&app, "writer", "write").await;
    for (body, names) in [
        ("{}", vec!["name"]),
        (r#"{"name": ""}"#, vec!["name"]),
        (r#"{"name": "a\u0000b"}"#, vec!["name"]),
        (r#"{"name": 7, "public": "yes"}"#, vec!["name", "public"]),
        ("[1]", vec!["body"]),
    ] {
        let response = api_post(&app, "/api/v1/lists", &secret, body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(named(&problem), names, "{body}");
    }
    let taken = api_post(&app, "/api/v1/lists", &secret, r#"{"name": "Taken"}"#).await;
    assert_eq!(taken.status(), StatusCode::CREATED);
    let again = api_post(&app, "/api/v1/lists", &secret, r#"{"name": "Taken"}"#).await;
    assert_eq!(
        named(&problem(again, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["name"]
    );
    let not_json = api_post(&app, "/api/v1/lists", &secret, "name=x").await;
    problem(not_json, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_token_over_its_budget_is_answered_429_and_another_token_is_not() {
    let app = spawn_app_with(|s| {
        s.rate_limit.api_per_token = LimitSettings {
            burst: 2,
            per_period: 1,
            period_seconds: 3600,
        }
    })
    .await;
    let busy = token(&app, "busy", "read").await;
    let quiet = token(&app, "quiet", "read").await;
    for _ in 0..2 {
        assert_eq!(
            api_get(&app, "/api/v1/lists", &busy).await.status(),
            StatusCode::OK
        );
    }
    let refused = api_get(&app, "/api/v1/lists", &busy).await;
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 3600, "{wait}");
    problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        api_get(&app, "/api/v1/lists", &quiet).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn made_up_tokens_from_one_address_are_answered_429_once_its_budget_is_spent() {
    let app = spawn_app_with(|s| {
        s.rate_limit.api_per_ip = LimitSettings {
            burst: 3,
            per_period: 1,
            period_seconds: 3600,
        }
    })
    .await;
    let guesses: Vec<String> = (0..3)
        .map(|n| format!("nl_{}", "A".repeat(42) + &n.to_string()))
        .collect();
    for guess in &guesses {
        problem(
            api_get(&app, "/api/v1/lists", guess).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }

    let refused = api_get(&app, "/api/v1/lists", &guesses[0]).await;

    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn sign_ups_through_one_token_past_its_sign_up_budget_are_answered_429_and_its_reads_go_on() {
    let app = spawn_app_with(|s| {
        s.rate_limit.api_signups_per_token = LimitSettings {
            burst: 2,
            per_period: 1,
            period_seconds: 3600,
        }
    })
    .await;
    app.mock_email_api_ok().await;
    let write = token(&app, "signup form", "write").await;
    for n in 0..2 {
        let body = format!(r#"{{"email": "reader{n}@example.com", "name": "Reader"}}"#);
        let accepted = api_post(&app, "/api/v1/subscribers", &write, &body).await;
        assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    }

    let body = r#"{"email": "reader2@example.com", "name": "Reader"}"#;
    let refused = api_post(&app, "/api/v1/subscribers", &write, body).await;

    problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(app.subscriber_count().await, 2);
    assert_eq!(
        api_get(&app, "/api/v1/lists", &write).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_use_is_recorded_at_most_once_a_minute() {
    let app = spawn_app().await;
    let secret = token(&app, "sync", "read").await;
    let last_used = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT last_used_at FROM api_tokens WHERE name = 'sync'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
    };
    assert_eq!(last_used().await, None);
    api_get(&app, "/api/v1/lists", &secret).await;
    let first = last_used().await.expect("the first use is recorded");
    api_get(&app, "/api/v1/lists", &secret).await;
    assert_eq!(
        last_used().await,
        Some(first),
        "a second use within the minute writes nothing"
    );
}

/// Runs `newsletter admin token <args>` against the app's database.
async fn token_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut command = app.newsletter_command("http://127.0.0.1:9");
    command
        .args(["admin", "token"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_command_line_prints_a_token_once_that_opens_the_api_and_revoking_it_closes_it() {
    let app = spawn_app().await;
    let made = token_command(
        &app,
        &[
            "create",
            "--name",
            "site build",
            "--scope",
            "read",
            "--expires-in-days",
            "30",
        ],
    )
    .await;
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("nl_"), "{secret}");
    assert_eq!(
        api_get(&app, "/api/v1/lists", &secret).await.status(),
        StatusCode::OK
    );
    let stored: (Vec<String>, bool) =
        sqlx::query_as("SELECT scopes, expires_at > now() + interval '29 days' FROM api_tokens")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(stored, (vec!["read".to_owned()], true));

    let revoked = token_command(&app, &["revoke", "--name", "site build"]).await;
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    problem(
        api_get(&app, "/api/v1/lists", &secret).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let again = token_command(&app, &["revoke", "--name", "site build"]).await;
    assert!(!again.status.success());

    let actions = audit_actions(&app).await;
    assert_eq!(actions, ["api-token-created", "api-token-revoked"]);
    let details: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_log")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert!(details.iter().all(|d| !d.contains(&secret)), "{details:?}");
}

/// The token an answer page shows, if it shows one.
fn shown_token(page: &str) -> Option<String> {
    let start = page.find("id=\"token-secret\">")? + "id=\"token-secret\">".len();
    let end = start + page[start..].find('<')?;
    Some(page[start..end].to_owned())
}

#[tokio::test]
async fn the_tokens_page_shows_a_new_token_once_and_revokes_it() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let dashboard = browser.get("/admin/dashboard").await.text().await.unwrap();
    assert!(
        dashboard.contains("href=\"/admin/tokens\""),
        "linked from the navigation"
    );

    let made = browser
        .submit("/admin/tokens", &[("name", "crm sync"), ("write", "on")])
        .await;
    assert_eq!(made.status(), StatusCode::OK);
    let secret = shown_token(&made.text().await.unwrap()).expect("the token is shown");
    assert_eq!(
        api_get(&app, "/api/v1/lists", &secret).await.status(),
        StatusCode::OK
    );

    let listed = browser.get("/admin/tokens").await.text().await.unwrap();
    assert!(
        listed.contains("crm sync") && listed.contains("read,write"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "the token is shown once only");

    let refused = browser
        .submit(
            "/admin/tokens",
            &[("name", "crm sync"), ("expires_in_days", "0")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("id=\"expires-error\"") && shown_token(&refused).is_none());

    let id: Uuid = sqlx::query_scalar("SELECT id FROM api_tokens WHERE name = 'crm sync'")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let revoked = browser
        .submit(&format!("/admin/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&revoked), "/admin/tokens?notice=revoked");
    problem(
        api_get(&app, "/api/v1/lists", &secret).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let twice = browser
        .submit(&format!("/admin/tokens/{id}/revoke"), &[])
        .await;
    assert_eq!(twice.status(), StatusCode::NOT_FOUND);

    let actions = audit_actions(&app).await;
    let token_actions: Vec<_> = actions
        .iter()
        .filter(|a| a.starts_with("api-token"))
        .collect();
    assert_eq!(token_actions, ["api-token-created", "api-token-revoked"]);
    let details: Vec<String> = sqlx::query_scalar("SELECT detail FROM audit_log")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert!(details.iter().all(|d| !d.contains(&secret)), "{details:?}");
}

#[tokio::test]
async fn a_sign_up_through_the_api_is_asked_to_confirm_by_email_as_from_the_form() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let write = token(&app, "signup form", "write").await;
    let read = token(&app, "crm", "read").await;
    let body = r#"{"email": "api.reader@example.com", "name": "Api Reader"}"#;

    let refused = api_post(&app, "/api/v1/subscribers", &read, body).await;
    problem(refused, StatusCode::FORBIDDEN).await;
    assert_eq!(app.subscriber_count().await, 0);

    let accepted = api_post(&app, "/api/v1/subscribers", &write, body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    let id = accepted["subscriber_id"]
        .as_str()
        .expect("a pending subscriber");
    let status = async || -> Value {
        let reader: Value = api_get(&app, &format!("/api/v1/subscribers/{id}"), &read)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(reader["email"], "api.reader@example.com");
        reader["status"].clone()
    };
    assert_eq!(status().await, "pending_confirmation");
    let emails = app.wait_for_emails(1).await;
    let link = app.confirmation_links(&emails[0]).html;
    assert_eq!(app.click(&link).await.status(), StatusCode::OK);
    assert_eq!(
        status().await,
        "confirmed",
        "the email's link confirms them"
    );

    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'api-write' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert!(
        detail.contains(id) && !detail.contains("api.reader"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_sign_up_with_bad_fields_is_refused_naming_them_and_stores_nothing() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let secret = token(&app, "signup form", "write").await;
    let unknown_list = format!(
        r#"{{"email": "a@example.com", "name": "A", "lists": ["{}"]}}"#,
        Uuid::new_v4()
    );
    for (body, names) in [
        ("{}", vec!["email", "name"]),
        (
            r#"{"email": "not an address", "name": ""}"#,
            vec!["email", "name"],
        ),
        (
            r#"{"email": "a@example.com", "name": "A\u202eB"}"#,
            vec!["name"],
        ),
        (
            r#"{"email": "a@example.com", "name": "A", "lists": ["x"]}"#,
            vec!["lists"],
        ),
        (
            r#"{"email": "a@example.com", "name": "A", "lists": 3}"#,
            vec!["lists"],
        ),
        (unknown_list.as_str(), vec!["lists"]),
    ] {
        let response = api_post(&app, "/api/v1/subscribers", &secret, body).await;
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(named(&problem), names, "{body}");
    }
    assert_eq!(app.subscriber_count().await, 0);
}
