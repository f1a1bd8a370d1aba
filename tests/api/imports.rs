//! Importing subscribers from CSV files: through the library's importer
//! (what the page and the command share) against a real database, and
//! through the `newsletter import` command for what only a process shows
//! (its exit status, being killed).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use newsletter::domain::ConsentSource;
use newsletter::imports::{ImportError, ImportRecord, ImportRequest, Importer, ListRef, Outcome};
use newsletter::keys::Keys;
use newsletter::subscribers::{history, suppression};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually_within, spawn_app_with};
use crate::newsroom::{Browser, PASSWORD, create_admin};

/// A file in the temporary directory, removed when dropped.
struct CsvFile(PathBuf);

impl CsvFile {
    fn new(contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("import-{}.csv", Uuid::new_v4()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    /// `rows` generated addresses `reader{n}@example.com`, after a header.
    fn generated(rows: usize) -> Self {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("import-{}.csv", Uuid::new_v4()));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(file, "email,name,created_at").unwrap();
        for n in 0..rows {
            writeln!(file, "reader{n}@example.com,Reader {n},2024-01-02 03:04:05").unwrap();
        }
        file.flush().unwrap();
        Self(path)
    }
}

impl Drop for CsvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An app that does not deliver: the queued emails stay as queued.
async fn app() -> TestApp {
    spawn_app_with(|s| s.delivery.run_in_server = false).await
}

fn request(file: &CsvFile, consent: Option<&str>) -> ImportRequest {
    ImportRequest {
        path: file.0.clone(),
        file_name: "readers.csv".into(),
        list: ListRef::Name("newsletter".into()),
        consent: consent.map(|c| ConsentSource::parse(c).unwrap()),
        welcome: false,
        started_by: "test".into(),
    }
}

async fn import(
    app: &TestApp,
    file: &CsvFile,
    consent: Option<&str>,
) -> Result<Outcome, ImportError> {
    Importer::from_settings(&app.settings)
        .unwrap()
        .run(request(file, consent), |_| {})
        .await
}

async fn imported(app: &TestApp, file: &CsvFile, consent: Option<&str>) -> ImportRecord {
    match import(app, file, consent).await.unwrap() {
        Outcome::Imported(record) => record,
        Outcome::AlreadyImported(record) => panic!("already imported: {record:?}"),
    }
}

async fn refusals(app: &TestApp, import_id: Uuid) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT line, reason FROM import_refusals WHERE import_id = $1 ORDER BY line")
        .bind(import_id)
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_import_adds_its_readers_pending_and_their_confirmation_links_work() {
    let app = app().await;
    // A BOM, CRLF endings, a quoted field holding a line break, and
    // Mailchimp's column names.
    let file = CsvFile::new(
        b"\xEF\xBB\xBFEmail Address,First Name,Last Name,OPTIN_TIME\r\n\
          ada@example.com,Ada,Lovelace,2024-01-01 10:00:00\r\n\
          bob@example.com,\"Bob\r\nBroken\",Name,\r\n\
          cy@example.com,Cy,,\r\n",
    );

    let record = imported(&app, &file, None).await;

    assert_eq!(record.state, "done");
    assert_eq!((record.rows_read, record.subscribers_added), (3, 2));
    assert_eq!(record.confirmations_queued, 2);
    // The record with a line break in its name starts on line 3; the one
    // after it on line 5.
    let refused = refusals(&app, record.id).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 3, "{refused:?}");
    let (status, subscribed_at): (String, chrono::DateTime<Utc>) = sqlx::query_as(
        "SELECT status, subscribed_at FROM subscriptions WHERE email = 'ada@example.com'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(status, "pending_confirmation");
    // Signed up now, not at the file's time: the retention job deletes
    // sign-ups left unconfirmed, counted from then.
    assert!(
        Utc::now() - subscribed_at < chrono::Duration::minutes(5),
        "{subscribed_at}"
    );
    let from_import = count(
        &app,
        &format!(
            "SELECT count(*) FROM memberships WHERE status = 'pending' AND import_id = '{}'",
            record.id
        ),
    )
    .await;
    assert_eq!(from_import, 2);
    let on_broadcast: Vec<(String, String)> =
        sqlx::query_as("SELECT recipient, message_stream FROM email_outbox ORDER BY recipient")
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        on_broadcast,
        vec![
            (
                "ada@example.com".to_owned(),
                app.settings.email_client.broadcast_stream.clone()
            ),
            (
                "cy@example.com".to_owned(),
                app.settings.email_client.broadcast_stream.clone()
            ),
        ]
    );

    // The link the email will carry confirms the reader.
    confirm_from_the_email(&app, "ada@example.com").await;
    let status: String =
        sqlx::query_scalar("SELECT status FROM subscriptions WHERE email = 'ada@example.com'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(status, "confirmed");
}

#[tokio::test]
async fn an_attested_import_confirms_its_readers_sends_nothing_and_records_the_consent() {
    let app = app().await;
    let file = CsvFile::new(b"email,name,subscribed_at\nada@example.com,Ada,2024-01-01 10:00:00\n");

    let record = imported(&app, &file, Some("Our old site's double opt-in form")).await;

    assert_eq!(
        record.consent_source.as_deref(),
        Some("Our old site's double opt-in form")
    );
    assert_eq!(
        (record.subscribers_added, record.confirmations_queued),
        (1, 0)
    );
    assert_eq!(count(&app, "SELECT count(*) FROM email_outbox").await, 0);
    let (status, membership, from): (String, String, Option<Uuid>) = sqlx::query_as(
        "SELECT s.status, m.status, m.import_id FROM subscriptions s \
         JOIN memberships m ON m.subscriber_id = s.id",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), membership.as_str()),
        ("confirmed", "confirmed")
    );
    assert_eq!(from, Some(record.id));
    // Attested, the file's time is the consent's.
    let subscribed_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT subscribed_at FROM subscriptions")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(subscribed_at.to_rfc3339(), "2024-01-01T10:00:00+00:00");
}

/// Runs an import that asks for the list's welcome email.
async fn imported_with_welcome(
    app: &TestApp,
    file: &CsvFile,
    consent: Option<&str>,
) -> ImportRecord {
    let mut request = request(file, consent);
    request.welcome = true;
    match Importer::from_settings(&app.settings)
        .unwrap()
        .run(request, |_| {})
        .await
        .unwrap()
    {
        Outcome::Imported(record) => record,
        Outcome::AlreadyImported(record) => panic!("already imported: {record:?}"),
    }
}

/// Gives the list imports go onto a welcome email; returns its subject.
async fn welcome_on_the_list(app: &TestApp) -> &'static str {
    let list: Uuid = sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    crate::welcome::set_welcome(app, list, "Welcome aboard", "Glad you are here.").await;
    "Welcome aboard"
}

/// (recipient, stream, the name and unsubscribe link it is filled with) of
/// every queued email with `subject`, stored once or per message.
async fn queued_with_subject(
    app: &TestApp,
    subject: &str,
) -> Vec<(String, String, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT o.recipient, o.message_stream, o.personalisation->>'name', \
                o.personalisation->>'unsubscribe_url' \
         FROM email_outbox o LEFT JOIN email_contents c ON c.id = o.content_id \
         WHERE COALESCE(o.subject, c.subject) = $1 ORDER BY o.recipient",
    )
    .bind(subject)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// The confirmation link's token queued for `email`, as a reader clicks it.
async fn confirm_from_the_email(app: &TestApp, email: &str) {
    let token: String = sqlx::query_scalar(
        "SELECT personalisation->>'token' FROM email_outbox \
         WHERE recipient = $1 AND personalisation ? 'token'",
    )
    .bind(email)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    let response = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn an_attested_import_asked_to_welcome_queues_each_new_reader_one_welcome_on_the_broadcast_stream()
 {
    let app = app().await;
    let subject = welcome_on_the_list(&app).await;
    let broadcast = app.settings.email_client.broadcast_stream.clone();
    let file = CsvFile::new(b"email,name\nada@example.com,Ada\nbob@example.com,Bob\n");

    let record = imported_with_welcome(&app, &file, Some("Our old form")).await;

    assert_eq!(record.welcomes_queued, 2);
    let queued = queued_with_subject(&app, subject).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    for ((to, stream, name, unsubscribe), (email, expected_name)) in queued
        .iter()
        .zip([("ada@example.com", "Ada"), ("bob@example.com", "Bob")])
    {
        assert_eq!((to.as_str(), stream), (email, &broadcast));
        assert_eq!(name.as_deref(), Some(expected_name));
        let link = unsubscribe.as_deref().unwrap_or_default();
        assert!(
            link.starts_with(&app.settings.application.base_url),
            "{link}"
        );
    }
    let welcomed = count(
        &app,
        "SELECT count(*) FROM memberships WHERE welcomed_at IS NOT NULL",
    )
    .await;
    assert_eq!(welcomed, 2);

    // A second file with one of them again: only the new reader is welcomed.
    let second = CsvFile::new(b"email,name\nada@example.com,Ada\ncy@example.com,Cy\n");
    let record = imported_with_welcome(&app, &second, Some("Our old form")).await;

    assert_eq!((record.welcomes_queued, record.already_on_list), (1, 1));
    let recipients: Vec<String> = queued_with_subject(&app, subject)
        .await
        .into_iter()
        .map(|(to, ..)| to)
        .collect();
    assert_eq!(
        recipients,
        ["ada@example.com", "bob@example.com", "cy@example.com"]
    );
}

#[tokio::test]
async fn an_import_not_asked_to_welcome_sends_no_welcome_even_when_its_readers_confirm() {
    let app = app().await;
    let subject = welcome_on_the_list(&app).await;
    let attested = CsvFile::new(b"email,name\nada@example.com,Ada\n");
    let pending = CsvFile::new(b"email,name\nbob@example.com,Bob\n");

    let record = imported(&app, &attested, Some("Our old form")).await;
    assert_eq!(record.welcomes_queued, 0);
    imported(&app, &pending, None).await;
    confirm_from_the_email(&app, "bob@example.com").await;

    let status: String =
        sqlx::query_scalar("SELECT status FROM subscriptions WHERE email = 'bob@example.com'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(status, "confirmed");
    assert_eq!(queued_with_subject(&app, subject).await, vec![]);
}

#[tokio::test]
async fn a_reader_an_import_asked_to_welcome_is_welcomed_once_they_confirm() {
    let app = app().await;
    let subject = welcome_on_the_list(&app).await;
    let file = CsvFile::new(b"email,name\nbob@example.com,Bob\n");

    let record = imported_with_welcome(&app, &file, None).await;
    assert_eq!(record.welcomes_queued, 0);
    assert_eq!(queued_with_subject(&app, subject).await, vec![]);
    confirm_from_the_email(&app, "bob@example.com").await;

    let queued = queued_with_subject(&app, subject).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "bob@example.com");
}

#[tokio::test]
async fn importing_the_same_file_twice_changes_nothing_the_second_time() {
    let app = app().await;
    let file = CsvFile::new(b"email,name\nada@example.com,Ada\nbob@example.com,Bob\n");
    imported(&app, &file, None).await;
    let before = (
        count(&app, "SELECT count(*) FROM subscriptions").await,
        count(&app, "SELECT count(*) FROM memberships").await,
        count(&app, "SELECT count(*) FROM email_outbox").await,
        count(&app, "SELECT count(*) FROM confirmation_tokens").await,
    );

    let again = import(&app, &file, None).await.unwrap();

    assert!(matches!(again, Outcome::AlreadyImported(_)), "{again:?}");
    let after = (
        count(&app, "SELECT count(*) FROM subscriptions").await,
        count(&app, "SELECT count(*) FROM memberships").await,
        count(&app, "SELECT count(*) FROM email_outbox").await,
        count(&app, "SELECT count(*) FROM confirmation_tokens").await,
    );
    assert_eq!(before, (2, 2, 2, 2));
    assert_eq!(after, before);
}

#[tokio::test]
async fn unsubscribed_suppressed_erased_and_duplicate_addresses_are_reported_and_never_subscribed()
{
    let app = app().await;
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, unsubscribed_at) \
         VALUES (gen_random_uuid(), 'left@example.com', 'Left', now(), 'unsubscribed', now())",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let mut connection = app.db_pool.acquire().await.unwrap();
    suppression::suppress(
        &mut connection,
        &keys,
        "bounced@example.com",
        suppression::Reason::HardBounce,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    // Erased as erased+news@: the mailbox is remembered, in any spelling.
    history::remember_departure(&mut connection, &keys, "erased+news@example.com")
        .await
        .unwrap();
    drop(connection);
    let file = CsvFile::new(
        b"email,name\n\
          LEFT@example.com,Left\n\
          bounced@example.com,Bounced\n\
          Erased@Example.com,Erased\n\
          new@example.com,New\n\
          NEW@example.com,New again\n",
    );

    let record = imported(&app, &file, None).await;

    let refused = refusals(&app, record.id).await;
    let lines: Vec<i64> = refused.iter().map(|(line, _)| *line).collect();
    assert_eq!(lines, vec![2, 3, 4, 6], "{refused:?}");
    assert!(refused[0].1.contains("unsubscribed"), "{refused:?}");
    assert!(refused[1].1.contains("suppression list"), "{refused:?}");
    assert!(refused[2].1.contains("erased"), "{refused:?}");
    assert!(refused[3].1.contains("line 5"), "{refused:?}");
    assert_eq!(record.refused, 4);
    assert_eq!(record.subscribers_added, 1);
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT lower(email), status FROM subscriptions ORDER BY 1")
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("left@example.com".to_owned(), "unsubscribed".to_owned()),
            (
                "new@example.com".to_owned(),
                "pending_confirmation".to_owned()
            ),
        ]
    );
    assert_eq!(count(&app, "SELECT count(*) FROM email_outbox").await, 1);
}

#[tokio::test]
async fn a_latin1_file_is_refused_naming_its_encoding_and_nothing_is_recorded() {
    let app = app().await;
    let file = CsvFile::new(b"email,name\nrenee@example.com,Ren\xE9e\n");

    let error = import(&app, &file, None).await.unwrap_err();

    let reason = error.to_string();
    assert!(matches!(error, ImportError::File(_)), "{error:?}");
    assert!(
        reason.contains("Latin-1") && reason.contains("line 2"),
        "{reason}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM imports").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 0);
}

#[tokio::test]
async fn an_empty_file_is_refused_and_a_header_alone_imports_nothing() {
    let app = app().await;
    let empty = CsvFile::new(b"");
    let error = import(&app, &empty, None).await.unwrap_err();
    assert!(error.to_string().contains("empty"), "{error}");

    let header_only = CsvFile::new(b"email,name\r\n");
    let record = imported(&app, &header_only, None).await;
    assert_eq!((record.state.as_str(), record.rows_read), ("done", 0));
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 0);
}

#[tokio::test]
async fn a_ten_megabyte_line_is_refused_as_a_row_and_the_rows_around_it_are_imported() {
    let app = app().await;
    let mut contents = b"email,name\nada@example.com,Ada\nhuge@example.com,".to_vec();
    contents.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    contents.extend_from_slice(b"\nbob@example.com,Bob\n");
    let file = CsvFile::new(&contents);

    let record = imported(&app, &file, None).await;

    let refused = refusals(&app, record.id).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, 3);
    assert!(refused[0].1.contains("bytes long"), "{}", refused[0].1);
    assert_eq!(record.subscribers_added, 2);
}

#[tokio::test]
async fn nul_and_bidi_characters_are_refused_row_by_row_with_a_reason() {
    let app = app().await;
    let file = CsvFile::new(
        "email,name\nada@example.com,A\u{0}da\nbob@example.com,B\u{202E}ob\ncy@example.com,Cy\n"
            .as_bytes(),
    );

    let record = imported(&app, &file, None).await;

    let refused = refusals(&app, record.id).await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].1.contains("null"), "{refused:?}");
    assert!(refused[1].1.contains("U+202E"), "{refused:?}");
    assert_eq!(record.subscribers_added, 1);
}

#[tokio::test]
async fn formula_like_cells_are_stored_as_given_and_the_export_defuses_them() {
    let app = app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let file = CsvFile::new(
        b"email,name\n=1+2@example.com,=1+2\nbob@example.com,@Bob\ncy@example.com,-Cy\n",
    );

    let record = imported(&app, &file, Some("test list")).await;
    assert_eq!(
        record.subscribers_added,
        3,
        "{:?}",
        refusals(&app, record.id).await
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM subscriptions ORDER BY name")
        .fetch_all(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(names, vec!["-Cy", "=1+2", "@Bob"]);

    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let response = browser.get("/admin/subscribers.csv").await;
    assert_eq!(response.status(), StatusCode::OK);
    let csv = response.text().await.unwrap();
    for defused in ["'=1+2@example.com", "'=1+2", "'@Bob", "'-Cy"] {
        assert!(csv.contains(defused), "{defused} in {csv}");
    }
}

/// Many rows at once: the ledgers' counts and the emails' spread. How fast
/// a million go is `scripts/bench_import.sh`'s to say: a debug build on a
/// busy machine measures nothing but the machine.
#[tokio::test]
async fn twenty_thousand_rows_are_counted_on_the_list_and_their_emails_spread_at_the_broadcast_rate()
 {
    let app = app().await;
    let rows = 20_000;
    let file = CsvFile::generated(rows);

    let started = Instant::now();
    let record = imported(&app, &file, None).await;
    println!("{rows} rows imported in {:?}", started.elapsed());

    assert_eq!(record.subscribers_added, rows as i64);
    assert_eq!(record.confirmations_queued, rows as i64);
    // The lists' counts follow, per statement.
    let on_list = count(
        &app,
        "SELECT COALESCE(sum(n), 0)::bigint FROM list_counts WHERE status = 'pending'",
    )
    .await;
    assert_eq!(on_list, rows as i64);
    // Spread at the broadcast rate: the last is due long after the first.
    let spread: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(next_attempt_at) - min(next_attempt_at))::float8 FROM email_outbox",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    let per_second = f64::from(app.settings.campaigns.messages_per_second);
    let expected = (rows - 1) as f64 / per_second;
    assert!(
        (spread - expected).abs() < 1.0,
        "{spread} s, not {expected} s"
    );
}

/// Runs `newsletter import` on the file, as a child process.
fn import_command(app: &TestApp, file: &CsvFile) -> std::process::Command {
    let mut command = app.newsletter_command("http://127.0.0.1:9");
    command
        .arg("import")
        .arg(&file.0)
        .args(["--list", "Newsletter"])
        .stderr(std::process::Stdio::null());
    command
}

#[tokio::test]
async fn an_import_killed_during_its_merge_leaves_nothing_merged_and_running_it_again_finishes_it()
{
    let app = app().await;
    let file = CsvFile::generated(2_000);
    // A sign-up of an address in the file, left uncommitted: the merge's
    // insert waits for it, so the kill lands mid-merge, whatever the load.
    let mut blocker = app.db_pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, memberships_written) \
         VALUES (gen_random_uuid(), 'reader1999@example.com', 'Blocker', now(), 'pending_confirmation', true)",
    )
    .execute(&mut *blocker)
    .await
    .unwrap();
    let mut child = import_command(&app, &file).spawn().unwrap();

    eventually_within(
        Duration::from_secs(30),
        "the merge to wait for the lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM imports i, pg_stat_activity a \
             WHERE i.state = 'merging' AND a.datname = current_database() \
               AND a.wait_event_type = 'Lock' AND a.query LIKE 'INSERT INTO subscriptions%'",
            )
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    blocker.rollback().await.unwrap();

    let state: String = sqlx::query_scalar("SELECT state FROM imports")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(state, "merging");
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM memberships").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM email_outbox").await, 0);

    let rerun = import_command(&app, &file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();

    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let report = String::from_utf8_lossy(&rerun.stdout);
    assert!(report.contains("2000 new subscribers"), "{report}");
    assert_eq!(
        count(&app, "SELECT count(*) FROM imports WHERE state = 'done'").await,
        1
    );
    assert_eq!(count(&app, "SELECT count(*) FROM memberships").await, 2_000);
    assert_eq!(
        count(&app, "SELECT count(*) FROM email_outbox").await,
        2_000
    );
}

#[tokio::test]
async fn the_import_command_fails_with_the_reason_for_an_unknown_list() {
    let app = app().await;
    let file = CsvFile::new(b"email\nada@example.com\n");

    let output = import_command(&app, &file)
        .args(["--list", "No such list"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no list called"), "{stderr}");
}
