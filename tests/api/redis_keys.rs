//! What a test leaves in the Redis that every test, every engineer's run and
//! the local service share: nothing once it is done, and nothing, ever,
//! outside its own key prefix (two deployments on one Redis keep apart the
//! same way).

use std::time::Duration;

use newsletter::configuration::SlowdownSettings;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::admin::{enrol, submit_code};
use crate::helpers::{TcpProxy, eventually, spawn_app_with};
use crate::newsroom::{Browser, PASSWORD, create_admin};

/// The keys under `prefix`, read with the configured (unrestricted) user.
async fn keys_under(prefix: &str) -> Vec<String> {
    let mut connection = connection(&default_redis_uri()).await;
    redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap()
}

fn default_redis_uri() -> SecretString {
    newsletter::configuration::get_configuration()
        .unwrap()
        .redis_uri
}

async fn connection(uri: &SecretString) -> redis::aio::MultiplexedConnection {
    redis::Client::open(uri.expose_secret())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sign_in_still_in_flight_when_its_test_ends_leaves_no_redis_key_behind() {
    let app = spawn_app_with(|s| {
        // Every attempt waits before it checks the password: the sign-in
        // is still in the server, with sessions and remembered browsers
        // to write, when the test lets go of it.
        s.rate_limit.login_account_slowdown = SlowdownSettings {
            free_attempts: 0,
            window_seconds: 3600,
            max_delay_milliseconds: 1_000,
        };
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let prefix = app.settings.rate_limit.key_prefix.clone();
    let port = app.port;
    let browser = Browser::new(&app);
    let sign_in = tokio::spawn(async move { browser.log_in("ada", PASSWORD).await });
    // The slowdown's counter is written before the wait.
    eventually("the sign-in to reach its wait", || async {
        let keys = keys_under(&prefix).await;
        keys.iter()
            .any(|key| key.contains("rl:login-slowdown:"))
            .then_some(())
    })
    .await;

    // The client gives up, as a failed test or a killed browser does, and
    // the test ends.
    sign_in.abort();
    drop(app);

    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the app still serves after its test ended"
    );
    assert_eq!(keys_under(&prefix).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_test_that_ends_with_its_redis_cut_off_still_leaves_no_redis_key_behind() {
    let proxy = TcpProxy::to_redis().await;
    let app = spawn_app_with(|s| {
        s.redis_uri = format!("redis://127.0.0.1:{}", proxy.port).into();
    })
    .await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::new(&app);
    let signed_in = browser.log_in("ada", PASSWORD).await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let prefix = app.settings.rate_limit.key_prefix.clone();
    assert!(
        keys_under(&prefix).await.len() > 1,
        "the sign-in wrote no session"
    );

    // The test ends in the middle of a Redis outage, as the outage tests do.
    proxy.cut();
    drop(app);

    assert_eq!(keys_under(&prefix).await, Vec::<String>::new());
}

/// A Redis user that may touch no key outside `prefix`, removed when
/// dropped. What it was refused is in Redis's `ACL LOG`, under its name.
struct PrefixOnlyUser {
    name: String,
    uri: SecretString,
}

impl PrefixOnlyUser {
    fn create(prefix: &str) -> Self {
        let name = format!("test-{}", Uuid::new_v4().simple());
        let password = Uuid::new_v4().simple().to_string();
        let admin = redis::Client::open(default_redis_uri().expose_secret()).unwrap();
        let mut connection = admin.get_connection().unwrap();
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&name)
            .arg("on")
            .arg(format!(">{password}"))
            .arg(format!("~{prefix}*"))
            .arg("+@all")
            .query(&mut connection)
            .unwrap();
        let mut uri = reqwest::Url::parse(default_redis_uri().expose_secret()).unwrap();
        uri.set_username(&name).unwrap();
        uri.set_password(Some(&password)).unwrap();
        Self {
            name,
            uri: SecretString::from(uri.to_string()),
        }
    }

    /// The keys this user was refused, as `command key`.
    async fn refused(&self) -> Vec<String> {
        let mut connection = connection(&default_redis_uri()).await;
        let entries: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut connection)
            .await
            .unwrap();
        let text = |entry: &std::collections::HashMap<String, redis::Value>, field: &str| {
            entry
                .get(field)
                .and_then(|value| redis::from_redis_value::<String>(value.clone()).ok())
                .unwrap_or_default()
        };
        entries
            .iter()
            .filter(|entry| text(entry, "username") == self.name)
            .map(|entry| {
                format!(
                    "{} {} ({})",
                    text(entry, "context"),
                    text(entry, "object"),
                    text(entry, "reason")
                )
            })
            .collect()
    }
}

impl Drop for PrefixOnlyUser {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(default_redis_uri().expose_secret()) else {
            return;
        };
        if let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(1)) {
            let _: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut connection);
        }
    }
}

fn expect(got: StatusCode, wanted: StatusCode, step: &str) -> Result<(), String> {
    (got == wanted)
        .then_some(())
        .ok_or_else(|| format!("{step} answered {got}, not {wanted}"))
}

#[tokio::test]
async fn every_redis_key_the_newsroom_and_the_sign_up_form_use_carries_the_configured_prefix() {
    let mut user = None;
    // Declared before the app, the user outlives it: the app's last
    // commands are made as that user too.
    let app = spawn_app_with(|s| {
        let restricted = PrefixOnlyUser::create(&s.rate_limit.key_prefix);
        s.redis_uri = restricted.uri.clone();
        s.rate_limit.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        // Slowed from the first attempt: the slowdown's counter too.
        s.rate_limit.login_account_slowdown = SlowdownSettings {
            free_attempts: 0,
            window_seconds: 3600,
            max_delay_milliseconds: 300,
        };
        user = Some(restricted);
    })
    .await;
    let user = user.as_ref().unwrap();
    let prefix = app.settings.rate_limit.key_prefix.clone();
    app.mock_email_api_ok().await;
    create_admin(&app, "ada", PASSWORD).await;

    // A wrong password, then the right one with a second factor enrolled
    // and used: limits, slowdowns, sessions, remembered browsers, the
    // index of an admin's sessions, a pending enrolment. A key outside the
    // prefix is refused, and the page that needed it fails: what was
    // refused is asserted first, as the clearer message.
    let flow = async {
        let stranger = Browser::at(&app, "203.0.113.9");
        let wrong = stranger.log_in("ada", "guessing and guessing").await;
        expect(wrong.status(), StatusCode::UNAUTHORIZED, "a wrong password")?;
        let browser = Browser::new(&app);
        let signed_in = browser.log_in("ada", PASSWORD).await;
        expect(signed_in.status(), StatusCode::SEE_OTHER, "signing in")?;
        let (_, _, recovery_codes) = enrol(&browser).await;
        browser.submit("/admin/logout", &[]).await;
        let code_step = browser.log_in("ada", PASSWORD).await;
        expect(code_step.status(), StatusCode::SEE_OTHER, "the password")?;
        let signed_in = submit_code(&browser, &recovery_codes[0]).await;
        expect(signed_in.status(), StatusCode::SEE_OTHER, "a recovery code")?;
        // The sign-up form's limits, per address and per recipient.
        let signed_up = app
            .post_subscriptions("name=le%20guin&email=ursula_le_guin%40gmail.com")
            .await;
        expect(signed_up.status(), StatusCode::OK, "signing up")
    }
    .await;

    assert_eq!(user.refused().await, Vec::<String>::new(), "{flow:?}");
    flow.unwrap();
    let keys = keys_under(&prefix).await;
    for kind in [
        "session:",
        "device:",
        "admin_sessions:",
        "rl:login-slowdown:",
    ] {
        assert!(
            keys.iter().any(|key| key[prefix.len()..].starts_with(kind)),
            "no {kind} key was written under the prefix: {keys:?}"
        );
    }
}
