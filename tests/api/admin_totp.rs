//! TOTP secrets at rest: what Postgres and Redis hold of an admin's second
//! factor is sealed, and a code still signs in after the sealing key
//! rotates.

use newsletter::admin::totp::{self, TotpSecret};
use newsletter::admin::totp_keys::{Place, TotpKeys};
use newsletter::configuration::AdminSettings;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::admin::{enrol, secret_on, submit_code};
use crate::helpers::{ServedApp, TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin, location};

/// Every form the secret could be written in: raw bytes, hex, base32 (as
/// the enrolment page shows it) and a JSON array of its bytes.
fn spellings(secret: &TotpSecret) -> Vec<String> {
    let bytes = secret.as_bytes();
    let json: Vec<String> = bytes.iter().map(u8::to_string).collect();
    vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        secret.display_base32().replace(' ', ""),
        json.join(","),
    ]
}

/// The value Redis holds for each of this test's sessions, read directly.
async fn session_values(app: &TestApp) -> Vec<String> {
    let client = redis::Client::open(app.settings.redis_uri.expose_secret()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}session:*", app.settings.rate_limit.key_prefix))
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut values = Vec::new();
    for key in keys {
        let value: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        values.push(value);
    }
    values
}

async fn stored_secret(app: &TestApp, id: Uuid) -> Vec<u8> {
    sqlx::query_scalar("SELECT totp_secret FROM admins WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// Keys as the service would build them from these settings.
fn keys(current: &SecretString, previous: &[SecretString]) -> TotpKeys {
    let settings = AdminSettings {
        session_idle_timeout_seconds: 60,
        session_lifetime_seconds: 60,
        secure_cookie: false,
        totp_key: current.clone(),
        previous_totp_keys: previous.to_vec(),
    };
    TotpKeys::from_settings(&settings).unwrap()
}

#[tokio::test]
async fn neither_the_admins_row_nor_the_pending_enrolment_in_redis_holds_the_plain_secret() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let page = browser.get("/admin/totp").await.text().await.unwrap();
    let shown = secret_on(&page);
    let values = session_values(&app).await;
    assert_eq!(values.len(), 1, "{values:?}");
    let session = &values[0];
    assert!(
        session.contains("\"sealed_pending_totp_secret\":["),
        "no pending enrolment in {session}"
    );
    for spelling in spellings(&shown) {
        assert!(
            !session.contains(&spelling),
            "the session holds the secret as {spelling}"
        );
    }

    let (enrolled, _, _) = enrol(&browser).await;
    assert_eq!(enrolled.as_bytes(), shown.as_bytes());
    let stored = stored_secret(&app, id).await;
    assert!(
        !stored
            .windows(shown.as_bytes().len())
            .any(|w| w == shown.as_bytes()),
        "the row holds the plain secret"
    );
    let stored_text = String::from_utf8_lossy(&stored).to_lowercase();
    for spelling in spellings(&shown) {
        assert!(!stored_text.contains(&spelling.to_lowercase()));
    }
    // Sealed for this admin's row, under the configured key.
    let configured = keys(&app.settings.admin.totp_key, &[]);
    let opened = configured.open(&stored, Place::Account(id)).unwrap();
    assert_eq!(opened.secret.as_bytes(), shown.as_bytes());
    assert!(!opened.stale);
    for value in session_values(&app).await {
        assert!(
            !value.contains("\"sealed_pending_totp_secret\":["),
            "{value}"
        );
    }
}

#[tokio::test]
async fn after_the_totp_key_rotates_a_code_still_signs_in_and_seals_the_secret_under_the_new_key() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (secret, _, _) = enrol(&browser).await;
    let before = stored_secret(&app, id).await;

    // The same database and Redis, served by an instance restarted with a
    // new key and the old one as previous.
    let old_key = app.settings.admin.totp_key.clone();
    let new_key = SecretString::from("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=");
    let mut settings = app.settings.clone();
    settings.admin.totp_key = new_key.clone();
    settings.admin.previous_totp_keys = vec![old_key];
    // Stopped before `app` lets go of the Redis keys they share.
    let rotated = ServedApp::start(settings).await;
    let address = format!("http://127.0.0.1:{}", rotated.port);
    // The enrolment's code counts as used; this test is not about replays.
    sqlx::query("UPDATE admins SET totp_last_step = NULL WHERE id = $1")
        .bind(id)
        .execute(&app.db_pool)
        .await
        .unwrap();

    let mut browser = Browser::new(&app);
    browser.address = address;
    let response = browser.log_in("ada", PASSWORD).await;
    assert_eq!(location(&response), "/login/code");
    let code = totp::code_at(&secret, std::time::SystemTime::now());
    let response = submit_code(&browser, &code).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/dashboard");
    assert!(browser.is_signed_in().await);
    let after = stored_secret(&app, id).await;
    assert_ne!(after, before, "not sealed again");
    // The new key alone opens it now: the old one can be dropped.
    let opened = keys(&new_key, &[])
        .open(&after, Place::Account(id))
        .unwrap();
    assert_eq!(opened.secret.as_bytes(), secret.as_bytes());
    assert!(!opened.stale);
    assert!(
        keys(&new_key, &[])
            .open(&before, Place::Account(id))
            .is_err()
    );
}

#[tokio::test]
async fn a_secret_stored_plain_before_sealing_still_signs_in_and_is_sealed_on_the_way() {
    let app = spawn_app().await;
    let id = create_admin(&app, "ada", PASSWORD).await;
    let secret = TotpSecret::generate();
    sqlx::query("UPDATE admins SET totp_secret = $2 WHERE id = $1")
        .bind(id)
        .bind(secret.as_bytes())
        .execute(&app.db_pool)
        .await
        .unwrap();

    let browser = Browser::new(&app);
    browser.log_in("ada", PASSWORD).await;
    let code = totp::code_at(&secret, std::time::SystemTime::now());
    let response = submit_code(&browser, &code).await;

    assert_eq!(location(&response), "/admin/dashboard");
    let after = stored_secret(&app, id).await;
    assert_ne!(after, secret.as_bytes());
    let opened = keys(&app.settings.admin.totp_key, &[])
        .open(&after, Place::Account(id))
        .unwrap();
    assert_eq!(opened.secret.as_bytes(), secret.as_bytes());
    assert!(!opened.stale);
}

#[tokio::test]
async fn a_secret_copied_onto_another_admins_row_gives_no_code_sign_in() {
    let app = spawn_app().await;
    let ada = create_admin(&app, "ada", PASSWORD).await;
    let bob = create_admin(&app, "bob", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let (secret, _, _) = enrol(&browser).await;
    sqlx::query(
        "UPDATE admins SET totp_secret = (SELECT totp_secret FROM admins WHERE id = $1) \
         WHERE id = $2",
    )
    .bind(ada)
    .bind(bob)
    .execute(&app.db_pool)
    .await
    .unwrap();

    let intruder = Browser::new(&app);
    let response = intruder.log_in("bob", PASSWORD).await;
    assert_eq!(
        location(&response),
        "/login/code",
        "a code is still asked for"
    );
    let code = totp::code_at(&secret, std::time::SystemTime::now());
    let response = submit_code(&intruder, &code).await;

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!intruder.is_signed_in().await);
}
