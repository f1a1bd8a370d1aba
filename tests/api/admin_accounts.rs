//! Admin accounts and the audit log against a real database, and the
//! `newsletter admin` commands run as an operator would run them.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};

use newsletter::admin::accounts::{self, Admin, CreateError};
use newsletter::admin::audit::{self, Action, Actor};
use newsletter::admin::password::{self, Verified};
use newsletter::admin::totp::TotpSecret;
use newsletter::admin::totp_keys::{Place, TotpKeys};
use newsletter::admin::username::AdminUsername;
use newsletter::configuration::get_configuration;
use newsletter::domain::SubscriberEmail;
use secrecy::{ExposeSecret, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Postgres};
use uuid::Uuid;

use crate::helpers::TestDatabase;

/// A database of the test's own, migrated, without an app in front of it.
async fn database() -> TestDatabase {
    let settings = get_configuration().expect("Failed to read the configuration");
    let database = TestDatabase::create(&settings.database).await;
    database.migrate().await;
    database
}

async fn connection(database: &TestDatabase) -> PoolConnection<Postgres> {
    database.pool.acquire().await.unwrap()
}

fn username(raw: &str) -> AdminUsername {
    AdminUsername::parse(raw).unwrap()
}

/// Creates an admin with a placeholder hash: these tests are about rows,
/// not passwords.
async fn create_admin(conn: &mut sqlx::PgConnection, name: &str) -> Uuid {
    accounts::create(conn, &username(name), None, "placeholder-hash")
        .await
        .unwrap()
}

async fn stored(conn: &mut sqlx::PgConnection, id: Uuid) -> Admin {
    accounts::find(conn, id)
        .await
        .unwrap()
        .expect("the admin exists")
}

#[tokio::test]
async fn a_created_admin_is_found_by_id_and_by_username() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let email = SubscriberEmail::parse("ada@example.com").unwrap();

    let id = accounts::create(&mut conn, &username("Ada"), Some(&email), "the-hash")
        .await
        .unwrap();

    let by_id = stored(&mut conn, id).await;
    assert_eq!(by_id.username, "ada");
    assert_eq!(by_id.email.as_deref(), Some("ada@example.com"));
    assert_eq!(by_id.password_hash, "the-hash");
    assert_eq!(by_id.totp_secret, None);
    assert_eq!(by_id.session_generation, 0);
    let by_name = accounts::find_by_username(&mut conn, &username("ADA"))
        .await
        .unwrap()
        .expect("found whatever the letter case");
    assert_eq!(by_name.id, id);
    assert!(
        accounts::find_by_username(&mut conn, &username("bob"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        accounts::find(&mut conn, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_username_taken_in_another_letter_case_is_refused() {
    let database = database().await;
    let mut conn = connection(&database).await;
    create_admin(&mut conn, "ada").await;

    // Parsing folds the case; the index on lower(username) would refuse a
    // mixed-case row written by other means too.
    let second = accounts::create(&mut conn, &username("ADA"), None, "another-hash").await;

    assert!(
        matches!(&second, Err(CreateError::UsernameTaken(name)) if name == "ada"),
        "{second:?}"
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM admins")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn changing_the_password_raises_the_session_generation_and_upgrading_the_hash_does_not() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;

    let first = accounts::change_password(&mut conn, id, "second-hash")
        .await
        .unwrap();
    let second = accounts::change_password(&mut conn, id, "third-hash")
        .await
        .unwrap();
    accounts::upgrade_hash(&mut conn, id, "third-hash-stronger")
        .await
        .unwrap();

    assert_eq!((first, second), (1, 2));
    let admin = stored(&mut conn, id).await;
    assert_eq!(admin.password_hash, "third-hash-stronger");
    assert_eq!(admin.session_generation, 2, "an upgrade ends no session");
    let unknown = accounts::change_password(&mut conn, Uuid::new_v4(), "hash").await;
    assert!(
        matches!(unknown, Err(sqlx::Error::RowNotFound)),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn changing_the_password_records_when() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    // Back-dated, so that `now()` in the change is surely later.
    sqlx::query("UPDATE admins SET password_changed_at = now() - interval '1 day' WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .unwrap();

    accounts::change_password(&mut conn, id, "new-hash")
        .await
        .unwrap();

    let changed_recently: bool = sqlx::query_scalar(
        "SELECT password_changed_at > now() - interval '1 minute' FROM admins WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(changed_recently);
}

#[tokio::test]
async fn an_email_address_can_be_set_and_cleared() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    let email = SubscriberEmail::parse("ada@example.com").unwrap();

    accounts::set_email(&mut conn, id, Some(&email))
        .await
        .unwrap();
    assert_eq!(
        stored(&mut conn, id).await.email.as_deref(),
        Some("ada@example.com")
    );
    accounts::set_email(&mut conn, id, None).await.unwrap();
    assert_eq!(stored(&mut conn, id).await.email, None);
}

#[tokio::test]
async fn a_totp_step_is_accepted_once_and_an_earlier_one_never_after_it() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    accounts::enable_totp(&mut conn, id, b"secret", &[])
        .await
        .unwrap();

    let mut accepted = Vec::new();
    for step in [100, 100, 99, 101] {
        accepted.push(
            accounts::accept_totp_step(&mut conn, id, step)
                .await
                .unwrap(),
        );
    }

    assert_eq!(
        accepted,
        [true, false, false, true],
        "steps 100, 100, 99, 101"
    );
    assert_eq!(stored(&mut conn, id).await.totp_last_step, Some(101));
}

#[tokio::test]
async fn enabling_totp_stores_the_secret_clears_the_last_step_and_replaces_the_recovery_codes() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    let old_codes = vec![b"old-1".to_vec(), b"old-2".to_vec()];
    accounts::enable_totp(&mut conn, id, b"old secret", &old_codes)
        .await
        .unwrap();
    assert!(
        accounts::accept_totp_step(&mut conn, id, 500)
            .await
            .unwrap()
    );

    let new_codes = vec![b"new-1".to_vec(), b"new-2".to_vec(), b"new-3".to_vec()];
    let mut transaction = conn.begin().await.unwrap();
    accounts::enable_totp(&mut transaction, id, b"new secret", &new_codes)
        .await
        .unwrap();
    transaction.commit().await.unwrap();

    let admin = stored(&mut conn, id).await;
    assert_eq!(admin.totp_secret.as_deref(), Some(&b"new secret"[..]));
    assert_eq!(admin.totp_last_step, None);
    assert_eq!(
        accounts::unused_recovery_codes(&mut conn, id)
            .await
            .unwrap(),
        3
    );
    assert!(
        !accounts::use_recovery_code(&mut conn, id, b"old-1")
            .await
            .unwrap(),
        "an old code still works"
    );
}

#[tokio::test]
async fn a_recovery_code_works_once_and_only_for_its_admin() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let ada = create_admin(&mut conn, "ada").await;
    let bob = create_admin(&mut conn, "bob").await;
    let codes = vec![b"code-1".to_vec(), b"code-2".to_vec()];
    accounts::enable_totp(&mut conn, ada, b"secret", &codes)
        .await
        .unwrap();

    let by_bob = accounts::use_recovery_code(&mut conn, bob, b"code-1")
        .await
        .unwrap();
    let first = accounts::use_recovery_code(&mut conn, ada, b"code-1")
        .await
        .unwrap();
    let again = accounts::use_recovery_code(&mut conn, ada, b"code-1")
        .await
        .unwrap();
    let unknown = accounts::use_recovery_code(&mut conn, ada, b"code-9")
        .await
        .unwrap();

    assert_eq!((by_bob, first, again, unknown), (false, true, false, false));
    assert_eq!(
        accounts::unused_recovery_codes(&mut conn, ada)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn the_audit_log_lists_the_latest_entries_newest_first() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    let ada = Actor {
        admin_id: Some(id),
        username: Some("ada".into()),
        client_ip: Some("2001:db8::1".parse::<IpAddr>().unwrap()),
    };
    let stranger = Actor {
        admin_id: None,
        username: Some("mallory\0\r\n".into()),
        client_ip: Some("203.0.113.7".parse::<IpAddr>().unwrap()),
    };

    audit::record(&mut conn, &stranger, Action::SignInFailed, "wrong password")
        .await
        .unwrap();
    // Two entries in one transaction share its `now()`.
    let mut transaction = conn.begin().await.unwrap();
    audit::record(&mut transaction, &ada, Action::SignIn, "")
        .await
        .unwrap();
    audit::record(&mut transaction, &ada, Action::SignOut, "")
        .await
        .unwrap();
    transaction.commit().await.unwrap();

    let latest = audit::latest(&mut conn, 2).await.unwrap();
    let summary: Vec<_> = latest
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.username.as_deref(),
                e.client_ip.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("sign-out", Some("ada"), Some("2001:db8::1")),
            ("sign-in", Some("ada"), Some("2001:db8::1")),
        ]
    );
    let all = audit::latest(&mut conn, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    let oldest = &all[2];
    assert_eq!(oldest.action, "sign-in-failed");
    assert_eq!(oldest.detail, "wrong password");
    assert_eq!(oldest.client_ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(
        oldest.username.as_deref(),
        Some("mallory\u{FFFD}\u{FFFD}\u{FFFD}"),
        "control characters are not stored"
    );
}

// The `newsletter admin` commands, run as a separate process.

/// Runs `newsletter admin <args>` on `database`, with `stdin` piped in.
async fn newsletter_admin(database: &TestDatabase, args: &[&str], stdin: &str) -> Output {
    newsletter_admin_with(database, args, stdin, &[]).await
}

/// Like [`newsletter_admin`], with these environment variables too.
async fn newsletter_admin_with(
    database: &TestDatabase,
    args: &[&str],
    stdin: &str,
    variables: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_newsletter"));
    command
        .arg("admin")
        .args(args)
        .envs(variables.iter().copied())
        .env(
            "APP_DATABASE__DATABASE_NAME",
            &database.settings.database_name,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().expect("Failed to start newsletter");
        // A command that fails before reading may close its end first.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn printed(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn verifies(admin: &Admin, candidate: &str) -> bool {
    let verified = password::verify(
        password::Asker::Anyone,
        SecretString::from(candidate),
        Some(admin.password_hash.clone()),
    )
    .await
    .unwrap();
    matches!(verified, Verified::Yes { .. })
}

async fn admin_named(database: &TestDatabase, name: &str) -> Option<Admin> {
    accounts::find_by_username(&mut *connection(database).await, &username(name))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_create_command_adds_an_admin_whose_password_verifies() {
    let database = database().await;

    let output = newsletter_admin(
        &database,
        &["create", "--username", "Ada", "--email", "ada@example.com"],
        "correct horse battery\n",
    )
    .await;

    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("Created the admin ada."),
        "{}",
        printed(&output)
    );
    let admin = admin_named(&database, "ada")
        .await
        .expect("the admin exists");
    assert_eq!(admin.email.as_deref(), Some("ada@example.com"));
    assert!(verifies(&admin, "correct horse battery").await);
    assert!(!verifies(&admin, "correct horse battery\n").await);
    let log = audit::latest(&mut *connection(&database).await, 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].action, Action::AdminCreated.as_str());
    assert_eq!(log[0].username.as_deref(), Some("ada"));
    assert_eq!(log[0].detail, "from the command line");
    assert_eq!(log[0].client_ip, None);
}

#[tokio::test]
async fn the_create_command_refuses_a_short_password_and_stores_nothing() {
    let database = database().await;

    let output =
        newsletter_admin(&database, &["create", "--username", "ada"], "eleven char\n").await;

    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("at least 12 characters"),
        "{}",
        printed(&output)
    );
    assert!(admin_named(&database, "ada").await.is_none());
    let log = audit::latest(&mut *connection(&database).await, 10)
        .await
        .unwrap();
    assert!(log.is_empty(), "{log:?}");
}

#[tokio::test]
async fn the_create_command_refuses_a_username_that_is_taken() {
    let database = database().await;
    let first = newsletter_admin(
        &database,
        &["create", "--username", "ada"],
        "correct horse battery\n",
    )
    .await;
    assert!(first.status.success(), "{}", printed(&first));

    let second = newsletter_admin(
        &database,
        &["create", "--username", "ADA"],
        "another good password\n",
    )
    .await;

    assert!(!second.status.success(), "{}", printed(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("an admin named ada already exists"),
        "{}",
        printed(&second)
    );
    let admin = admin_named(&database, "ada").await.unwrap();
    assert!(
        verifies(&admin, "correct horse battery").await,
        "the first password was replaced"
    );
}

#[tokio::test]
async fn the_reset_password_command_replaces_the_hash_and_ends_the_sessions() {
    let database = database().await;
    let created = newsletter_admin(
        &database,
        &["create", "--username", "ada"],
        "correct horse battery\n",
    )
    .await;
    assert!(created.status.success(), "{}", printed(&created));
    let before = admin_named(&database, "ada").await.unwrap();

    let output = newsletter_admin(
        &database,
        &["reset-password", "--username", "Ada"],
        "a brand new passphrase\r\n",
    )
    .await;

    assert!(output.status.success(), "{}", printed(&output));
    let after = admin_named(&database, "ada").await.unwrap();
    assert!(verifies(&after, "a brand new passphrase").await);
    assert!(!verifies(&after, "correct horse battery").await);
    assert_eq!(after.session_generation, before.session_generation + 1);
    let log = audit::latest(&mut *connection(&database).await, 1)
        .await
        .unwrap();
    assert_eq!(log[0].action, Action::PasswordReset.as_str());
    assert_eq!(log[0].username.as_deref(), Some("ada"));
    assert_eq!(log[0].detail, "from the command line");
    assert_eq!(log[0].client_ip, None);
}

#[tokio::test]
async fn the_reset_password_command_refuses_an_unknown_username() {
    let database = database().await;

    let output = newsletter_admin(
        &database,
        &["reset-password", "--username", "nobody"],
        "a brand new passphrase\n",
    )
    .await;

    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("There is no admin named nobody"),
        "{}",
        printed(&output)
    );
}

#[tokio::test]
async fn an_admin_command_without_a_username_prints_the_usage_and_fails() {
    let database = database().await;

    for args in [&["create"][..], &["delete", "--username", "ada"], &[]] {
        let output = newsletter_admin(&database, args, "").await;

        assert!(!output.status.success(), "{args:?}: {}", printed(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("newsletter admin create --username"),
            "{args:?}: {}",
            printed(&output)
        );
    }
}

/// TOTP keys as the service builds them from these settings.
fn totp_keys(current: &str, previous: &[&str]) -> TotpKeys {
    let mut settings = get_configuration().unwrap().admin;
    settings.totp_key = SecretString::from(current);
    settings.previous_totp_keys = previous.iter().map(|k| SecretString::from(*k)).collect();
    TotpKeys::from_settings(&settings).unwrap()
}

/// A key other than the local configuration's.
const OLD_TOTP_KEY: &str = "b2xkIGtleSBvbGQga2V5IG9sZCBrZXkgb2xkIGtleSE=";

#[tokio::test]
async fn the_reseal_command_seals_plain_and_previous_key_secrets_under_the_current_key() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let local_key = get_configuration().unwrap().admin.totp_key;
    let plain_admin = create_admin(&mut conn, "ada").await;
    let old_key_admin = create_admin(&mut conn, "bob").await;
    let (plain, old) = (TotpSecret::generate(), TotpSecret::generate());
    accounts::enable_totp(&mut conn, plain_admin, plain.as_bytes(), &[])
        .await
        .unwrap();
    let sealed_under_old = totp_keys(OLD_TOTP_KEY, &[]).seal(&old, Place::Account(old_key_admin));
    accounts::enable_totp(&mut conn, old_key_admin, &sealed_under_old, &[])
        .await
        .unwrap();
    let rotating = [("APP_ADMIN__PREVIOUS_TOTP_KEYS", OLD_TOTP_KEY)];

    let output = newsletter_admin_with(&database, &["reseal-totp"], "", &rotating).await;
    assert!(output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("Sealed 2 TOTP secrets under the current key; 0 already were."),
        "{}",
        printed(&output)
    );

    // The current key alone opens both now.
    let current_only = totp_keys(local_key.expose_secret(), &[]);
    for (id, secret) in [(plain_admin, &plain), (old_key_admin, &old)] {
        let stored = stored(&mut conn, id).await.totp_secret.unwrap();
        let opened = current_only.open(&stored, Place::Account(id)).unwrap();
        assert_eq!(opened.secret.as_bytes(), secret.as_bytes());
        assert!(!opened.stale);
    }
    let again = newsletter_admin_with(&database, &["reseal-totp"], "", &rotating).await;
    assert!(
        printed(&again).contains("Sealed 0 TOTP secrets under the current key; 2 already were."),
        "{}",
        printed(&again)
    );
}

#[tokio::test]
async fn the_reseal_command_fails_and_leaves_a_secret_that_no_configured_key_opens() {
    let database = database().await;
    let mut conn = connection(&database).await;
    let id = create_admin(&mut conn, "ada").await;
    let sealed = totp_keys(OLD_TOTP_KEY, &[]).seal(&TotpSecret::generate(), Place::Account(id));
    accounts::enable_totp(&mut conn, id, &sealed, &[])
        .await
        .unwrap();

    let output = newsletter_admin(&database, &["reseal-totp"], "").await;

    assert!(!output.status.success(), "{}", printed(&output));
    assert!(
        printed(&output).contains("open under no configured key"),
        "{}",
        printed(&output)
    );
    assert_eq!(stored(&mut conn, id).await.totp_secret, Some(sealed));
}
