//! Signing in cannot be turned against the owner: wrong passwords from any
//! number of addresses neither keep the admin with the right password out
//! nor stop them changing it; failures are counted, not logged one by one;
//! and the form is only heard with the CSRF token it was given.

use std::time::{Duration, Instant, SystemTime};

use newsletter::admin::sign_in_form;
use newsletter::configuration::{LimitSettings, Settings, SlowdownSettings};
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;

use crate::helpers::{TestApp, spawn_app_with};
use crate::newsroom::{
    Browser, PASSWORD, audit_actions, create_admin, hidden_csrf_token, location, sign_in_form,
};

const NEW_PASSWORD: &str = "a brand new passphrase for ada";

/// An app that believes the forwarded header of requests from 127.0.0.1,
/// so that tests can come from many addresses; each (account, address) may
/// try `burst` times, and attempts on an account are slowed down past
/// `free` of them, by at most `max_delay`.
async fn app_with_limits(
    burst: u32,
    free: u32,
    max_delay: Duration,
    customise: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_with(|s| {
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.rate_limit.login_per_account = LimitSettings {
            burst,
            per_period: 1,
            period_seconds: 3600,
        };
        s.rate_limit.login_account_slowdown = SlowdownSettings {
            free_attempts: free,
            window_seconds: 3600,
            max_delay_milliseconds: max_delay.as_millis() as u64,
        };
        customise(s)
    })
    .await
}

/// Wrong passwords for `username` from `ip` until that address is refused.
/// Returns how many were heard (answered 401).
async fn guess_until_refused(app: &TestApp, ip: &str, username: &str) -> u32 {
    let attacker = Browser::at(app, ip);
    for heard in 0..50 {
        let status = attacker
            .log_in(username, "guessing and guessing")
            .await
            .status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return heard;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "from {ip}");
    }
    panic!("{ip} was never refused");
}

/// Ada, signed in from 198.51.100.7, whose address's budgets someone
/// sharing it (a shared network) has then spent: the sign-in budget of
/// (ada, that address) and the address's own. Each address may try 4
/// times; attempts on an account are slowed past `free`.
async fn owner_behind_a_spent_address(free: u32) -> (TestApp, Browser) {
    let app = app_with_limits(2, free, Duration::from_millis(100), |s| {
        s.rate_limit.login_per_ip = LimitSettings {
            burst: 4,
            per_period: 1,
            period_seconds: 3600,
        };
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let owner = Browser::at(&app, "198.51.100.7");
    assert_eq!(
        owner.log_in("ada", PASSWORD).await.status(),
        StatusCode::SEE_OTHER
    );
    guess_until_refused(&app, "198.51.100.7", "ada").await;
    guess_until_refused(&app, "198.51.100.7", "someone-else").await;
    (app, owner)
}

#[tokio::test]
async fn wrong_passwords_from_many_addresses_do_not_keep_the_owner_from_signing_in_and_changing_the_password()
 {
    let app = app_with_limits(2, 4, Duration::from_millis(300), |_| {}).await;
    create_admin(&app, "ada", PASSWORD).await;
    for n in 1..=6 {
        let heard = guess_until_refused(&app, &format!("203.0.113.{n}"), "ada").await;
        assert_eq!(heard, 2, "each address has a budget of its own");
    }

    // The owner, from a new browser at an address of their own.
    let owner = Browser::at(&app, "198.51.100.7");
    let sign_in = owner.log_in("ada", PASSWORD).await;
    assert_eq!(sign_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&sign_in), "/admin/dashboard");
    let changed = owner.change_password(PASSWORD, NEW_PASSWORD).await;

    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&changed), "/login?notice=password-changed");
    let again = Browser::at(&app, "198.51.100.8")
        .log_in("ada", NEW_PASSWORD)
        .await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_password_change_works_after_others_spent_every_budget_of_the_owners_address() {
    let (app, owner) = owner_behind_a_spent_address(100).await;
    assert_eq!(
        Browser::at(&app, "198.51.100.7")
            .log_in("ada", PASSWORD)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address's budgets are spent"
    );

    let changed = owner.change_password(PASSWORD, NEW_PASSWORD).await;

    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&changed), "/login?notice=password-changed");
}

#[tokio::test]
async fn the_owners_remembered_browser_signs_in_after_others_spent_every_budget_of_its_address() {
    let (_app, owner) = owner_behind_a_spent_address(100).await;
    owner.submit("/admin/logout", &[]).await;

    let sign_in = owner.log_in("ada", PASSWORD).await;

    assert_eq!(sign_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&sign_in), "/admin/dashboard");
}

#[tokio::test]
async fn a_sessions_password_rechecks_are_limited_on_that_sessions_own_budget() {
    let app = app_with_limits(2, 100, Duration::from_millis(100), |_| {}).await;
    create_admin(&app, "ada", PASSWORD).await;
    let stolen = Browser::signed_in(&app, "ada", PASSWORD).await;
    let owner = Browser::signed_in(&app, "ada", PASSWORD).await;
    for _ in 0..2 {
        let wrong = stolen
            .change_password("not the password", NEW_PASSWORD)
            .await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    }
    let limited = stolen.change_password(PASSWORD, NEW_PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("Retry-After"));

    let changed = owner.change_password(PASSWORD, NEW_PASSWORD).await;

    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert!(
        !stolen.is_signed_in().await,
        "a new password ends every session"
    );
}

#[tokio::test]
async fn attempts_past_the_accounts_ceiling_are_slowed_down_but_the_right_password_gets_in() {
    let max_delay = Duration::from_millis(600);
    let app = app_with_limits(10, 2, max_delay, |_| {}).await;
    create_admin(&app, "ada", PASSWORD).await;
    let attacker = Browser::at(&app, "203.0.113.1");
    // Two free attempts, then 250 ms, then 500 ms.
    for _ in 0..4 {
        let response = attacker.log_in("ada", "guessing and guessing").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let owner = Browser::at(&app, "198.51.100.7");
    let token = owner.sign_in_form_token().await;
    let started = Instant::now();
    let response = owner
        .post(
            "/login",
            &[
                ("username", "ada"),
                ("password", PASSWORD),
                ("csrf_token", &token),
            ],
        )
        .await;
    let took = started.elapsed();

    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "slowed, not refused"
    );
    assert!(
        took >= max_delay,
        "the fifth attempt waits the longest: {took:?}"
    );
    assert!(
        took < max_delay + Duration::from_secs(10),
        "the wait is bounded: {took:?}"
    );
}

#[tokio::test]
async fn a_flood_of_random_usernames_adds_to_a_counter_the_dashboard_shows_not_an_audit_row_each() {
    let app = app_with_limits(5, 1000, Duration::from_millis(10), |_| {}).await;
    create_admin(&app, "ada", PASSWORD).await;
    let flood = 30;
    for n in 0..flood {
        let guesser = Browser::at(&app, &format!("203.0.113.{}", n % 5 + 1));
        let name = format!("random-{n}@example.com");
        let response = guesser.log_in(&name, "guessing and guessing").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let wrong = Browser::at(&app, "203.0.113.1")
        .log_in("ada", "guessing and guessing")
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let owner = Browser::signed_in(&app, "ada", PASSWORD).await;
    let page = owner.get("/admin/dashboard").await.text().await.unwrap();

    // One row for the unknown usernames, one for ada's wrong password: the
    // first of each bucket's window; and the sign-in. Windows are 15
    // minutes of the clock, so a run that crosses an edge has a bucket in
    // two windows, and a second row for it: count the windows the
    // attempts fell in rather than assume one.
    let windows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account, count(*) FROM sign_in_failures GROUP BY account ORDER BY account",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        windows.len(),
        2,
        "one bucket for unknown names, one for ada: {windows:?}"
    );
    assert!(
        windows.iter().all(|(_, n)| (1..=2).contains(n)),
        "{windows:?}"
    );
    let failed_rows: usize = windows.iter().map(|(_, n)| *n as usize).sum();
    let mut expected = vec!["sign-in-failed"; failed_rows];
    expected.push("sign-in");
    assert_eq!(audit_actions(&app).await, expected);
    let failures = &page[page.find(r#"id="sign-in-failures""#).expect(&page)..];
    let unknown = &failures[failures.find("unknown usernames").expect(failures)..];
    assert!(
        unknown.contains(&format!(r#"<td class="failures">{flood}</td>"#)),
        "{failures}"
    );
    let ada = &failures[failures.find("<td>ada</td>").expect(failures)..];
    assert!(ada.contains(r#"<td class="failures">1</td>"#), "{failures}");
    // What was typed as an unknown username is kept nowhere.
    let kept: Vec<Option<String>> = sqlx::query_scalar("SELECT username FROM audit_log")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert!(
        kept.iter().flatten().all(|name| !name.contains("random-")),
        "{kept:?}"
    );
    assert!(!page.contains("random-"), "{page}");
}

/// The sign-in form's pre-session cookie and token, for a client that keeps
/// no cookies.
fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_login(
    client: &reqwest::Client,
    app: &TestApp,
    cookie: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut fields = vec![("username", "ada"), ("password", PASSWORD)];
    if let Some(token) = token {
        fields.push(("csrf_token", token));
    }
    let mut request = client
        .post(format!("{}/login", app.address))
        .header("Accept", "text/html")
        .form(&fields);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn signing_in_without_the_forms_matching_fresh_token_is_refused_with_403_and_a_fresh_form() {
    let app = app_with_limits(10, 100, Duration::from_millis(10), |_| {}).await;
    create_admin(&app, "ada", PASSWORD).await;
    let client = bare_client();
    let (cookie, token) = sign_in_form(&client, &app).await;
    let (other_cookie, _) = sign_in_form(&client, &app).await;
    let nonce = cookie.split_once('=').unwrap().1;
    let stale = sign_in_form::token(
        nonce,
        SystemTime::now() - sign_in_form::FORM_LIFETIME - Duration::from_secs(60),
    );

    let cases = [
        (
            "no cookie, no token",
            None,
            None,
            "did not come from this site",
        ),
        (
            "no token",
            Some(cookie.as_str()),
            None,
            "did not come from this site",
        ),
        (
            "no cookie",
            None,
            Some(token.as_str()),
            "did not come from this site",
        ),
        (
            "another browser's cookie",
            Some(other_cookie.as_str()),
            Some(token.as_str()),
            "does not belong to this browser",
        ),
        (
            "an expired token",
            Some(cookie.as_str()),
            Some(stale.as_str()),
            "open too long",
        ),
    ];
    for (case, cookie, token, reason) in cases {
        let response = post_login(&client, &app, cookie, token).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case}");
        let fresh_cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("sign-in="));
        assert!(fresh_cookie, "{case}: a fresh pre-session cookie");
        let page = response.text().await.unwrap();
        assert!(page.contains(reason), "{case}: {reason} not in {page}");
        assert_ne!(
            hidden_csrf_token(&page),
            token.unwrap_or_default(),
            "{case}"
        );
    }
    assert!(
        audit_actions(&app).await.is_empty(),
        "nothing was attempted"
    );

    let response = post_login(&client, &app, Some(&cookie), Some(&token)).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/dashboard");
}

#[tokio::test]
async fn with_guesses_from_everywhere_the_owner_still_enrols_a_second_factor_and_signs_in_with_it()
{
    // The owner's own address's budgets spent by someone sharing it, and
    // the account's from six more.
    let (app, owner) = owner_behind_a_spent_address(4).await;
    for n in 1..=6 {
        guess_until_refused(&app, &format!("203.0.113.{n}"), "ada").await;
    }

    let (_, _, recovery_codes) = crate::admin::enrol(&owner).await;
    let elsewhere = Browser::at(&app, "198.51.100.8");
    let password_step = elsewhere.log_in("ada", PASSWORD).await;
    assert_eq!(location(&password_step), "/login/code");
    let page = elsewhere.get("/login/code").await.text().await.unwrap();
    let token = hidden_csrf_token(&page);
    let code_step = elsewhere
        .post(
            "/login/code",
            &[("code", &recovery_codes[0]), ("csrf_token", &token)],
        )
        .await;

    assert_eq!(code_step.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&code_step), "/admin/dashboard");
    assert!(elsewhere.is_signed_in().await);
}
