//! The newsroom over HTTP: signing in and out, sessions, CSRF, limits, the
//! second factor and the admin pages.

use std::time::Duration;

use newsletter::admin::accounts;
use newsletter::admin::password::{self, NewPassword};
use newsletter::admin::totp::{self, TotpSecret};
use newsletter::configuration::LimitSettings;
use newsletter::routes::{Access, endpoints};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, RETRY_AFTER, SET_COOKIE};
use secrecy::SecretString;
use uuid::Uuid;

use crate::helpers::{
    BROWSER_ACCEPT, TcpProxy, TestApp, eventually, eventually_within, spawn_app, spawn_app_with,
};
use crate::newsroom::{
    Browser, PASSWORD, audit_actions, create_admin, hidden_csrf_token, location, sign_in_form,
};

/// `burst` attempts at once, then one per `period`.
fn login_limit(burst: u32, period: Duration) -> LimitSettings {
    LimitSettings {
        burst,
        per_period: 1,
        period_seconds: period.as_secs(),
    }
}

/// Someone else tries wrong passwords on `username` until refused.
async fn exhaust_account(app: &TestApp, username: &str) {
    let attacker = Browser::new(app);
    while attacker
        .log_in(username, "guessing and guessing")
        .await
        .status()
        != StatusCode::TOO_MANY_REQUESTS
    {}
}

/// Whether the audit log holds an entry for `action`.
async fn audited(app: &TestApp, action: &str) -> bool {
    audit_actions(app).await.iter().any(|a| a == action)
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The Redis keys of this test's sessions.
async fn session_keys(app: &TestApp) -> Vec<String> {
    use secrecy::ExposeSecret;
    let client = redis::Client::open(app.settings.redis_uri.expose_secret()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{}session:*", app.settings.rate_limit.key_prefix))
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_signs_in_with_a_fresh_http_only_strict_cookie_and_sees_the_dashboard() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::new(&app);

    let response = browser.log_in("Ada", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/dashboard");
    let cookie = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains("Domain"),
        "the cookie must be host-only: {cookie}"
    );
    let dashboard = browser.get("/admin/dashboard").await;
    assert_eq!(dashboard.status(), StatusCode::OK);
    assert_eq!(dashboard.headers()[CACHE_CONTROL], "no-store");
    let page = dashboard.text().await.unwrap();
    assert!(page.contains("Dashboard"));
    assert!(page.contains("<svg class=\"chart\""));
    assert_eq!(audit_actions(&app).await, ["sign-in"]);
}

#[tokio::test]
async fn outside_local_runs_the_cookie_is_secure_and_host_prefixed() {
    let app = spawn_app_with(|s| s.admin.secure_cookie = true).await;
    create_admin(&app, "ada", PASSWORD).await;
    // A cookie jar keeps `Secure` cookies away from plain HTTP: this client
    // says which cookies it sends.
    let client = bare_client();
    let form = client
        .get(format!("{}/login", app.address))
        .send()
        .await
        .unwrap();
    let form_cookie = set_cookies(&form)
        .into_iter()
        .find(|c| c.starts_with("__Host-sign-in="))
        .expect("a __Host- cookie for the sign-in form");
    let token = hidden_csrf_token(&form.text().await.unwrap());

    let response = client
        .post(format!("{}/login", app.address))
        .header("Cookie", form_cookie.split(';').next().unwrap())
        .form(&[
            ("username", "ada"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();

    let cookie = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("__Host-session="))
        .expect("a __Host- session cookie");
    for cookie in [&cookie, &form_cookie] {
        assert!(cookie.contains("Secure"), "{cookie}");
        assert!(cookie.contains("Path=/"), "{cookie}");
    }
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_username_get_the_same_answer() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::new(&app);

    let wrong_password = browser.log_in("ada", "not the password at all").await;
    let unknown_user = browser.log_in("bob", "not the password at all").await;

    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_user.status(), StatusCode::UNAUTHORIZED);
    // Each form carries a fresh CSRF token: the rest must be the same.
    let same = |page: String, name: &str| {
        page.replace(&hidden_csrf_token(&page), "TOKEN")
            .replace(name, "NAME")
    };
    let wrong_password = same(wrong_password.text().await.unwrap(), "ada");
    let unknown_user = same(unknown_user.text().await.unwrap(), "bob");
    assert_eq!(wrong_password, unknown_user);
    assert!(!browser.is_signed_in().await);
    assert_eq!(
        audit_actions(&app).await,
        ["sign-in-failed", "sign-in-failed"]
    );
}

#[tokio::test]
async fn every_admin_route_sends_browsers_to_sign_in_and_refuses_other_clients() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut admin_routes = 0;
    for endpoint in endpoints() {
        assert_eq!(
            endpoint.path.starts_with("/admin"),
            endpoint.access == Access::Admin,
            "{} is {:?}",
            endpoint.path,
            endpoint.access
        );
        if endpoint.access != Access::Admin {
            continue;
        }
        for method in endpoint.methods {
            admin_routes += 1;
            let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let url = format!("{}{}", app.address, endpoint.path);
            let browser = client
                .request(method.clone(), &url)
                .header("Accept", BROWSER_ACCEPT)
                .send()
                .await
                .unwrap();
            assert_eq!(browser.status(), StatusCode::SEE_OTHER, "{method} {url}");
            assert_eq!(location(&browser), "/login");
            let api = client.request(method.clone(), &url).send().await.unwrap();
            assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "{method} {url}");
        }
    }
    assert!(admin_routes >= 9, "only {admin_routes} admin routes found");
    // Paths under /admin that name no route are guarded too: their 404
    // would tell a stranger which ones exist.
    let unknown = client
        .get(format!("{}/admin/no-such-page", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_admin_form_without_the_sessions_csrf_token_is_refused_with_403() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let forms: Vec<_> = endpoints()
        .into_iter()
        .filter(|e| e.access == Access::Admin && e.methods.contains(&actix_web::http::Method::POST))
        .collect();
    assert!(forms.len() >= 4);

    for endpoint in &forms {
        let missing = browser
            .post(endpoint.path, &[("email", "x@example.com")])
            .await;
        assert_eq!(missing.status(), StatusCode::FORBIDDEN, "{}", endpoint.path);
        let wrong = browser
            .post(endpoint.path, &[("csrf_token", &"0".repeat(64))])
            .await;
        assert_eq!(wrong.status(), StatusCode::FORBIDDEN, "{}", endpoint.path);
    }
    // Nothing happened: the admin is still signed in (logout was refused).
    assert!(browser.is_signed_in().await);
}

/// A client that keeps no cookies: each request says which it sends.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in, sending `session` as the session cookie if given, and returns
/// the session id the answer sets.
async fn sign_in_with_cookie(app: &TestApp, session: Option<&str>) -> String {
    let client = bare_client();
    let (form_cookie, token) = sign_in_form(&client, app).await;
    let cookie = match session {
        Some(session) => format!("{form_cookie}; session={session}"),
        None => form_cookie,
    };
    let request = client
        .post(format!("{}/login", app.address))
        .header("Cookie", cookie)
        .form(&[
            ("username", "ada"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ]);
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    set_cookies(&response)
        .into_iter()
        .find_map(|c| Some(c.strip_prefix("session=")?.split(';').next()?.to_owned()))
        .expect("a session cookie")
}

async fn dashboard_with_cookie(app: &TestApp, session: &str) -> StatusCode {
    bare_client()
        .get(format!("{}/admin/dashboard", app.address))
        .header("Cookie", format!("session={session}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn signing_in_never_keeps_the_session_id_the_browser_came_with() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let first = sign_in_with_cookie(&app, None).await;
    assert_eq!(dashboard_with_cookie(&app, &first).await, StatusCode::OK);

    // Signing in again with that session ends it and hands out another.
    let second = sign_in_with_cookie(&app, Some(&first)).await;

    assert_ne!(first, second);
    assert_eq!(
        dashboard_with_cookie(&app, &first).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(dashboard_with_cookie(&app, &second).await, StatusCode::OK);
    // An id planted in a browser before sign-in is never adopted.
    let planted = "ab".repeat(32);
    let given = sign_in_with_cookie(&app, Some(&planted)).await;
    assert_ne!(given, planted);
    assert_eq!(
        dashboard_with_cookie(&app, &planted).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_session_id_is_not_what_redis_stores_it_under() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;

    let id = sign_in_with_cookie(&app, None).await;

    let keys = session_keys(&app).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(&id), "the key {} holds the id", keys[0]);
    assert!(id.len() >= 32, "a session id of 128 bits or more: {id}");
}

#[tokio::test]
async fn signing_out_ends_the_session_and_its_cookie_no_longer_works() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let id = sign_in_with_cookie(&app, None).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let response = browser.submit("/admin/logout", &[]).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(location(&response).starts_with("/login"));
    assert!(!browser.is_signed_in().await);
    // Another session of the same admin is not affected.
    assert_eq!(dashboard_with_cookie(&app, &id).await, StatusCode::OK);
    assert!(audited(&app, "sign-out").await);
}

#[tokio::test]
async fn a_session_ends_after_its_idle_timeout() {
    let app = spawn_app_with(|s| s.admin.session_idle_timeout_seconds = 1).await;
    create_admin(&app, "ada", PASSWORD).await;
    let id = sign_in_with_cookie(&app, None).await;

    // Watched from Redis, not through the session: using it would keep it.
    eventually("the idle session to expire", || async {
        session_keys(&app).await.is_empty().then_some(())
    })
    .await;

    assert_eq!(
        dashboard_with_cookie(&app, &id).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_session_in_constant_use_still_ends_at_its_absolute_lifetime() {
    let app = spawn_app_with(|s| {
        s.admin.session_idle_timeout_seconds = 60;
        s.admin.session_lifetime_seconds = 2;
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let id = sign_in_with_cookie(&app, None).await;
    assert_eq!(dashboard_with_cookie(&app, &id).await, StatusCode::OK);

    // Each request would slide an idle timeout; the lifetime does not move.
    eventually("the session to reach its lifetime", || async {
        (dashboard_with_cookie(&app, &id).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_password_change_ends_every_session_of_that_admin() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    create_admin(&app, "bob", PASSWORD).await;
    let laptop = Browser::signed_in(&app, "ada", PASSWORD).await;
    let phone = Browser::signed_in(&app, "ada", PASSWORD).await;
    let colleague = Browser::signed_in(&app, "bob", PASSWORD).await;
    let new_password = "a much longer new password";

    let response = laptop.change_password(PASSWORD, new_password).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(!laptop.is_signed_in().await);
    assert!(!phone.is_signed_in().await);
    assert!(colleague.is_signed_in().await);
    let fresh = Browser::new(&app);
    assert_eq!(
        fresh.log_in("ada", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        fresh.log_in("ada", new_password).await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(audited(&app, "password-changed").await);
}

#[tokio::test]
async fn a_password_change_is_refused_with_the_reason_when_something_is_wrong() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let cases = [
        (
            "wrong current password",
            "a much longer new password",
            "a much longer new password",
            "current password is wrong",
        ),
        (PASSWORD, "too short", "too short", "12"),
        (
            PASSWORD,
            "a much longer new password",
            "a different longer password",
            "differ",
        ),
    ];

    for (current, new, check, reason) in cases {
        let response = browser
            .submit(
                "/admin/password",
                &[
                    ("current_password", current),
                    ("new_password", new),
                    ("new_password_check", check),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{reason}");
        let page = response.text().await.unwrap();
        assert!(page.contains(reason), "{reason} not in {page}");
    }
    assert!(browser.is_signed_in().await);
    assert_eq!(
        Browser::new(&app).log_in("ada", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn sign_in_attempts_on_one_account_from_one_address_are_limited_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.rate_limit.login_per_account = login_limit(3, Duration::from_secs(60));
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let attacker = Browser::at(&app, "203.0.113.9");
    for _ in 0..3 {
        let response = attacker.log_in("ada", "wrong password, again").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let limited = attacker.log_in("ada", "wrong password, again").await;
    // Another new browser at the same address waits too: the budget is the
    // pair (account, address), whichever browser spends it.
    let same_address = Browser::at(&app, "203.0.113.9")
        .log_in("ADA", PASSWORD)
        .await;
    // The owner elsewhere does not: the attempts spent the attacker's
    // address's budget, not the account's.
    let owner_elsewhere = Browser::at(&app, "198.51.100.20")
        .log_in("ADA", PASSWORD)
        .await;

    for response in [limited, same_address] {
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = response.headers()[RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(owner_elsewhere.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_browser_that_signed_in_before_is_not_locked_out_by_attempts_on_its_account() {
    let app = spawn_app_with(|s| {
        s.rate_limit.login_per_account = login_limit(2, Duration::from_secs(3600))
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let owner = Browser::signed_in(&app, "ada", PASSWORD).await;
    owner.submit("/admin/logout", &[]).await;
    exhaust_account(&app, "ada").await;

    let response = owner.log_in("ada", PASSWORD).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(owner.is_signed_in().await);
}

#[tokio::test]
async fn sign_in_attempts_from_one_ip_are_limited_whatever_account_they_name() {
    let app =
        spawn_app_with(|s| s.rate_limit.login_per_ip = login_limit(3, Duration::from_secs(60)))
            .await;
    let browser = Browser::new(&app);
    for name in ["ann", "ben", "cat"] {
        assert_eq!(
            browser.log_in(name, "some password here").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }

    let response = browser.log_in("dan", "some password here").await;

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key(RETRY_AFTER));
}

#[tokio::test]
async fn without_redis_signing_in_answers_503_while_the_subscribe_form_keeps_working() {
    let app = spawn_app_with(|s| {
        // A port nothing listens on.
        s.redis_uri = SecretString::from("redis://127.0.0.1:1");
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    app.mock_email_api_ok().await;

    let sign_in = Browser::new(&app).log_in("ada", PASSWORD).await;
    let subscribe = app
        .submit_form("name=Ada%20Lovelace&email=ada%40example.com")
        .await;

    assert_eq!(sign_in.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(sign_in.headers().contains_key(RETRY_AFTER));
    let page = sign_in.text().await.unwrap();
    assert!(
        page.contains("Signing in is unavailable right now"),
        "{page}"
    );
    assert_eq!(subscribe.status(), StatusCode::OK);
    assert_eq!(app.subscriber_count().await, 1);
    // A page behind the sign-in cannot check its session either.
    let page = dashboard_with_cookie(&app, &"ab".repeat(32)).await;
    assert_eq!(page, StatusCode::SERVICE_UNAVAILABLE);
}

/// The TOTP secret shown on the enrolment page.
pub(crate) fn secret_on(page: &str) -> TotpSecret {
    let marker = r#"<code id="totp-secret">"#;
    let start = page.find(marker).expect("the page shows the key") + marker.len();
    let shown = &page[start..start + page[start..].find('<').unwrap()];
    let base32: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = totp_rs::Secret::try_from_base32(&base32).expect("a base32 key");
    TotpSecret::from_bytes(secret.as_bytes().to_vec())
}

/// Enrols a second factor for a signed-in browser; returns the secret, the
/// code used to confirm it and the recovery codes.
pub(crate) async fn enrol(browser: &Browser) -> (TotpSecret, String, Vec<String>) {
    let page = browser.get("/admin/totp").await.text().await.unwrap();
    assert!(page.contains("<svg"), "the QR code is drawn in the page");
    let secret = secret_on(&page);
    let code = totp::code_at(&secret, std::time::SystemTime::now());
    let token = hidden_csrf_token(&page);
    let response = browser
        .post(
            "/admin/totp",
            &[
                ("code", &code),
                ("password", PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let codes: Vec<String> = page
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(codes.len(), 10, "{page}");
    (secret, code, codes)
}

pub(crate) async fn submit_code(browser: &Browser, code: &str) -> reqwest::Response {
    let page = browser.get("/login/code").await.text().await.unwrap();
    let token = hidden_csrf_token(&page);
    browser
        .post("/login/code", &[("code", code), ("csrf_token", &token)])
        .await
}

#[tokio::test]
async fn with_totp_on_a_password_alone_does_not_sign_in_and_a_code_does() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (secret, enrolment_code, _) = enrol(&browser).await;
    browser.submit("/admin/logout", &[]).await;

    let response = browser.log_in("ada", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login/code");
    assert!(
        !browser.is_signed_in().await,
        "a password alone is not enough"
    );
    // The code that confirmed enrolment was used: it does not work twice.
    let replayed = submit_code(&browser, &enrolment_code).await;
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    let code = eventually_within(Duration::from_secs(35), "a code not used yet", || async {
        let code = totp::code_at(&secret, std::time::SystemTime::now());
        (code != enrolment_code).then_some(code)
    })
    .await;
    let response = submit_code(&browser, &code).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/dashboard");
    assert!(browser.is_signed_in().await);
    let actions = audit_actions(&app).await;
    assert!(actions.contains(&"totp-enrolled".to_owned()), "{actions:?}");
}

#[tokio::test]
async fn a_recovery_code_signs_in_once() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (_, _, recovery_codes) = enrol(&browser).await;
    browser.submit("/admin/logout", &[]).await;

    browser.log_in("ada", PASSWORD).await;
    let first = submit_code(&browser, &recovery_codes[3].to_uppercase()).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert!(browser.is_signed_in().await);
    browser.submit("/admin/logout", &[]).await;
    browser.log_in("ada", PASSWORD).await;
    let second = submit_code(&browser, &recovery_codes[3]).await;

    assert_eq!(second.status(), StatusCode::UNAUTHORIZED);
    assert!(audited(&app, "recovery-code-used").await);
}

#[tokio::test]
async fn too_many_wrong_codes_send_the_admin_back_to_the_password() {
    // Codes count against the account's sign-in limit too; this test is
    // about the count of codes within one sign-in.
    let app = spawn_app_with(|s| s.rate_limit.login_per_account.burst = 100).await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    enrol(&browser).await;
    browser.submit("/admin/logout", &[]).await;
    browser.log_in("ada", PASSWORD).await;

    let mut last = None;
    for _ in 0..5 {
        last = Some(submit_code(&browser, "000000x").await);
    }

    let last = last.unwrap();
    assert_eq!(last.status(), StatusCode::SEE_OTHER);
    assert!(location(&last).starts_with("/login?"));
    let response = browser.get("/login/code").await;
    assert_eq!(location(&response), "/login");
}

/// Stores a subscriber directly, with the times given.
async fn insert_subscriber(app: &TestApp, email: &str, name: &str, confirmed: bool, days_ago: i64) {
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at)          VALUES ($1, $2, $3, now() - make_interval(days => $4::int), $5,                  CASE WHEN $6 THEN now() - make_interval(days => $4::int) END)",
    )
    .bind(Uuid::new_v4())
    .bind(email)
    .bind(name)
    .bind(days_ago as i32)
    .bind(if confirmed { "confirmed" } else { "pending_confirmation" })
    .bind(confirmed)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_dashboard_counts_the_list_and_charts_the_last_30_days() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    insert_subscriber(&app, "a@example.com", "A", true, 0).await;
    insert_subscriber(&app, "b@example.com", "B", true, 0).await;
    insert_subscriber(&app, "c@example.com", "C", false, 0).await;
    insert_subscriber(&app, "d@example.com", "D", false, 3).await;
    insert_subscriber(&app, "old@example.com", "Old", true, 45).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let page = browser.get("/admin/dashboard").await.text().await.unwrap();

    assert!(page.contains(r#"<dd id="total">5</dd>"#), "{page}");
    assert!(page.contains(r#"<dd data-status="confirmed">3</dd>"#));
    assert!(page.contains(r#"<dd data-status="pending_confirmation">2</dd>"#));
    assert!(page.contains(r#"<dd id="sign-ups">4</dd>"#));
    // 2 of the 4 who signed up in the last 30 days confirmed.
    assert!(page.contains(r#"<dd id="confirmation-rate">50%</dd>"#));
    assert_eq!(page.matches(r#"<rect class="sign-ups""#).count(), 30);
    assert!(page.contains(": 3 sign-ups</title>"), "today's bar");
    assert!(page.contains(": 2 confirmations</title>"));
    assert!(page.contains("<td>sign-in</td>"), "the audit log is shown");
}

#[tokio::test]
async fn the_subscriber_list_searches_filters_and_pages_through_everyone_once() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    for i in 0..120 {
        insert_subscriber(
            &app,
            &format!("person{i}@example.com"),
            &format!("Person {i}"),
            i % 3 == 0,
            i % 40,
        )
        .await;
    }
    insert_subscriber(&app, "grace@example.com", "Grace 100%_Hopper", true, 1).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let mut seen = Vec::new();
    let mut next = Some("/admin/subscribers".to_owned());
    let mut pages = 0;
    while let Some(path) = next {
        pages += 1;
        assert!(pages <= 3, "more pages than 121 subscribers need: {path}");
        let page = browser.get(&path).await.text().await.unwrap();
        seen.extend(
            page.split("<tr><td>")
                .skip(1)
                .map(|row| row[..row.find('<').unwrap()].to_owned()),
        );
        next = page.find(r#"" rel="next""#).map(|end| {
            let start = page[..end].rfind(r#"<a href=""#).unwrap() + r#"<a href=""#.len();
            page[start..end].replace("&#38;", "&")
        });
    }
    let search = browser
        .get("/admin/subscribers?q=100%25_h")
        .await
        .text()
        .await
        .unwrap();
    let confirmed = browser
        .get("/admin/subscribers?status=confirmed&q=person")
        .await
        .text()
        .await
        .unwrap();
    let bad_status = browser.get("/admin/subscribers?status=everyone").await;

    assert_eq!(seen.len(), 121);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 121, "a subscriber appeared on two pages");
    assert_eq!(search.matches("<tr><td>").count(), 1);
    assert!(search.contains("grace@example.com"));
    assert_eq!(confirmed.matches("<tr><td>").count(), 40);
    assert_eq!(bad_status.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_csv_export_streams_every_matching_subscriber_with_formulas_defused() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status)          SELECT gen_random_uuid(), 'bulk' || i || '@example.com', 'Bulk ' || i,                 now() - make_interval(secs => i), 'pending_confirmation'          FROM generate_series(1, 2500) AS i",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    insert_subscriber(
        &app,
        "eve@example.com",
        r#"=HYPERLINK("http://x")"#,
        true,
        0,
    )
    .await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let response = browser.get("/admin/subscribers.csv").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "email,name,status,subscribed_at,confirmed_at");
    assert_eq!(lines.len(), 2502);
    assert!(
        body.contains(r#"eve@example.com,"'=HYPERLINK(""http://x"")",confirmed"#),
        "{}",
        lines[1]
    );
    let filtered = browser
        .get("/admin/subscribers.csv?status=confirmed")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(filtered.lines().count(), 2);
    let exports = audit_actions(&app)
        .await
        .into_iter()
        .filter(|a| a == "subscribers-exported")
        .count();
    assert_eq!(exports, 2, "each export is on record");
}

#[tokio::test]
async fn an_admin_sets_and_clears_the_address_test_sends_go_to() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let stored = || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT email FROM admins WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap()
    };

    let saved = browser
        .submit("/admin/email", &[("email", "ada@example.com")])
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(stored().await.as_deref(), Some("ada@example.com"));
    let refused = browser
        .submit("/admin/email", &[("email", "not an address")])
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let page = refused.text().await.unwrap();
    assert!(
        page.contains(r#"value="not an address""#),
        "what was typed is kept"
    );
    assert_eq!(stored().await.as_deref(), Some("ada@example.com"));
    browser.submit("/admin/email", &[("email", "")]).await;
    assert_eq!(stored().await, None);
    assert!(audited(&app, "email-changed").await);
}

#[tokio::test]
async fn with_totp_on_a_browser_that_signed_in_before_still_gets_to_enter_its_code() {
    let app = spawn_app_with(|s| {
        s.rate_limit.login_per_account = login_limit(4, Duration::from_secs(3600))
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let owner = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (_, _, recovery_codes) = enrol(&owner).await;
    owner.submit("/admin/logout", &[]).await;
    exhaust_account(&app, "ada").await;

    let password_step = owner.log_in("ada", PASSWORD).await;
    let code_step = submit_code(&owner, &recovery_codes[0]).await;

    assert_eq!(location(&password_step), "/login/code");
    assert_eq!(code_step.status(), StatusCode::SEE_OTHER);
    assert!(owner.is_signed_in().await);
}

#[tokio::test]
async fn enrolling_a_second_factor_needs_the_password() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page = browser.get("/admin/totp").await.text().await.unwrap();
    let code = totp::code_at(&secret_on(&page), std::time::SystemTime::now());
    let token = hidden_csrf_token(&page);

    let response = browser
        .post(
            "/admin/totp",
            &[
                ("code", &code),
                ("password", "not my password"),
                ("csrf_token", &token),
            ],
        )
        .await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let enrolled: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT totp_secret FROM admins WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(enrolled, None);
}

#[tokio::test]
async fn a_password_reset_ends_a_sign_in_waiting_for_its_code() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (_, _, recovery_codes) = enrol(&browser).await;
    browser.submit("/admin/logout", &[]).await;
    browser.log_in("ada", PASSWORD).await;

    // What `newsletter admin reset-password` does.
    let hash = password::hash(
        &NewPassword::parse(SecretString::from("an entirely new password")).unwrap(),
    )
    .await
    .unwrap();
    let mut connection = app.db_pool.acquire().await.unwrap();
    accounts::change_password(&mut connection, id, &hash)
        .await
        .unwrap();
    let response = submit_code(&browser, &recovery_codes[0]).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/login");
    assert!(!browser.is_signed_in().await);
}

#[tokio::test]
async fn a_search_or_page_address_that_cannot_match_any_row_is_a_400_not_a_500() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    for path in [
        "/admin/subscribers?q=%00",
        "/admin/subscribers.csv?q=a%00b",
        "/admin/subscribers?after=-7000000000000000000_00000000-0000-0000-0000-000000000000",
        "/admin/subscribers?after=nonsense",
        "/admin/subscribers?status=deleted",
    ] {
        let response = browser.get(path).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
}

#[tokio::test]
async fn without_postgres_admin_pages_and_sign_in_answer_503_and_recover() {
    let proxy = TcpProxy::to_postgres().await;
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.database.acquire_timeout_milliseconds = 1_000;
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    proxy.cut();
    let page = browser.get("/admin/dashboard").await;
    let sign_in = Browser::new(&app).log_in("ada", PASSWORD).await;
    proxy.restore();

    for response in [page, sign_in] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(RETRY_AFTER));
    }
    eventually("the dashboard to come back", || async {
        browser.is_signed_in().await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn reloading_the_enrolment_page_keeps_the_secret_already_scanned() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let first = browser.get("/admin/totp").await.text().await.unwrap();
    let second = browser.get("/admin/totp").await.text().await.unwrap();

    assert_eq!(secret_on(&first).as_bytes(), secret_on(&second).as_bytes());
    // Enrolled, the next enrolment starts from a new secret.
    let (enrolled, _, _) = enrol(&browser).await;
    let next = browser.get("/admin/totp").await.text().await.unwrap();
    assert_ne!(secret_on(&next).as_bytes(), enrolled.as_bytes());
}

#[tokio::test]
async fn odd_sign_in_requests_get_a_4xx_with_a_reason() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let client = bare_client();
    let login = format!("{}/login", app.address);
    let (form_cookie, token) = sign_in_form(&client, &app).await;

    let huge = client
        .post(&login)
        .form(&[("username", "ada"), ("password", &"x".repeat(1 << 20))])
        .send()
        .await
        .unwrap();
    let json = client
        .post(&login)
        .json(&serde_json::json!({ "username": "ada", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let nul = client
        .post(&login)
        .header("Cookie", &form_cookie)
        .form(&[
            ("username", "ada\0\r\n"),
            ("password", "with\0nul\r\n"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(nul.status(), StatusCode::UNAUTHORIZED);
    assert!(!huge.text().await.unwrap().is_empty());
    assert!(audited(&app, "sign-in-failed").await);
}
