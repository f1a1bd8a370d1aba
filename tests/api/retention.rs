//! The retention job: what it forgets and what it keeps, one run at a time
//! across processes, and a run over a million rows while sign-ups go on.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use newsletter::db::Db;
use newsletter::retention::{Outcome, Report, Retention, When};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app};

/// The job as the app would run it, with the app's settings (7 days for
/// bodies, 30 for the rest) and `batch_size`.
fn retention(app: &TestApp, batch_size: i64) -> Retention {
    let mut settings = app.settings.retention.clone();
    settings.batch_size = batch_size;
    Retention::new(Db::connect_lazy(&app.settings.database, 1), settings).unwrap()
}

/// Runs the job once, now, and expects it to finish.
async fn run_now(app: &TestApp) -> Report {
    match retention(app, 2)
        .run(When::Now, &CancellationToken::new())
        .await
        .unwrap()
    {
        Outcome::Finished(report) => report,
        other => panic!("the run did not finish: {other:?}"),
    }
}

async fn subscriber(pool: &PgPool, email: &str, status: &str, days_ago: i32) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         VALUES ($1, $2, 'Someone', now() - make_interval(days => $3), $4)",
    )
    .bind(id)
    .bind(email)
    .bind(days_ago)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// A token for `subscriber` that expires `hours` from now (before now if
/// negative); returns its hash.
async fn token(pool: &PgPool, subscriber: Uuid, hours: i32) -> Vec<u8> {
    let hash = Uuid::new_v4().as_bytes().to_vec();
    sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at) \
         VALUES ($1, $2, now() + make_interval(hours => $3))",
    )
    .bind(&hash)
    .bind(subscriber)
    .bind(hours)
    .execute(pool)
    .await
    .unwrap();
    hash
}

async fn exists(pool: &PgPool, query: &str, id: impl AsRef<[u8]>) -> bool {
    sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(format!("SELECT EXISTS ({query})")))
        .bind(id.as_ref())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn token_exists(pool: &PgPool, hash: &[u8]) -> bool {
    exists(
        pool,
        "SELECT 1 FROM confirmation_tokens WHERE token_hash = $1",
        hash,
    )
    .await
}

async fn subscriber_exists(pool: &PgPool, id: Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// An outbox row with inline bodies, in `status`, finished `days_ago`
/// (enqueued then too, for a pending one).
async fn outbox_row(pool: &PgPool, status: &str, days_ago: i32) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO email_outbox \
             (id, recipient, subject, html_body, text_body, message_stream, status, \
              enqueued_at, sent_at, failed_at) \
         VALUES ($1, 'someone@example.com', 'Hello', '<p>link</p>', 'link', 'outbound', $2, \
                 now() - make_interval(days => $3), \
                 CASE WHEN $2 = 'sent' THEN now() - make_interval(days => $3) END, \
                 CASE WHEN $2 = 'failed' THEN now() - make_interval(days => $3) END)",
    )
    .bind(id)
    .bind(status)
    .bind(days_ago)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// (subject, has inline body, has personalisation, content_id) of a row,
/// or None once it is deleted.
async fn outbox_state(
    pool: &PgPool,
    id: Uuid,
) -> Option<(Option<String>, bool, bool, Option<Uuid>)> {
    sqlx::query_as(
        "SELECT subject, html_body IS NOT NULL OR text_body IS NOT NULL, \
                personalisation IS NOT NULL, content_id \
         FROM email_outbox WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// A shared content written `days_ago`, with one row per given status
/// referring to it (finished, or enqueued, that long ago).
async fn shared_content(pool: &PgPool, days_ago: i32, rows: &[&str]) -> (Uuid, Vec<Uuid>) {
    let content = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO email_contents (id, subject, html_body, text_body, created_at) \
         VALUES ($1, 'Issue 7', '<p>Dear {{name}}</p>', 'Dear {{name}}', \
                 now() - make_interval(days => $2))",
    )
    .bind(content)
    .bind(days_ago)
    .execute(pool)
    .await
    .unwrap();
    let mut ids = Vec::new();
    for status in rows {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO email_outbox \
                 (id, recipient, content_id, personalisation, message_stream, status, \
                  enqueued_at, sent_at) \
             VALUES ($1, 'reader@example.com', $2, '{\"name\": \"Ada\"}', 'broadcast', $3, \
                     now() - make_interval(days => $4), \
                     CASE WHEN $3 = 'sent' THEN now() - make_interval(days => $4) END)",
        )
        .bind(id)
        .bind(content)
        .bind(status)
        .bind(days_ago)
        .execute(pool)
        .await
        .unwrap();
        ids.push(id);
    }
    (content, ids)
}

async fn content_exists(pool: &PgPool, id: Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM email_contents WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn expired_confirmation_tokens_are_deleted_and_live_ones_kept() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    let ada = subscriber(pool, "ada@example.com", "confirmed", 1).await;
    let expired = token(pool, ada, -1).await;
    let used_and_expired = token(pool, ada, -24 * 8).await;
    let live = token(pool, ada, 1).await;

    let report = run_now(&app).await;

    assert!(!token_exists(pool, &expired).await, "an expired token");
    assert!(
        !token_exists(pool, &used_and_expired).await,
        "a long expired token"
    );
    assert!(token_exists(pool, &live).await, "a live token was deleted");
    assert_eq!(report.expired_tokens, 2);
}

#[tokio::test]
async fn finished_outbox_rows_are_deleted_after_outbox_days_and_pending_ones_never() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    let cases = [
        (
            "sent 31 days ago",
            outbox_row(pool, "sent", 31).await,
            false,
        ),
        (
            "failed 31 days ago",
            outbox_row(pool, "failed", 31).await,
            false,
        ),
        ("sent 29 days ago", outbox_row(pool, "sent", 29).await, true),
        (
            "failed 29 days ago",
            outbox_row(pool, "failed", 29).await,
            true,
        ),
        (
            "pending for 40 days",
            outbox_row(pool, "pending", 40).await,
            true,
        ),
    ];

    let report = run_now(&app).await;

    for (case, id, kept) in cases {
        assert_eq!(outbox_state(pool, id).await.is_some(), kept, "{case}");
    }
    assert_eq!(report.finished_outbox, 2);
    let (_, body, _, _) = outbox_state(pool, cases[4].1).await.unwrap();
    assert!(body, "a pending message lost its body");
}

#[tokio::test]
async fn bodies_are_cleared_after_body_days_from_finished_messages_only() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    let failed_long_ago = outbox_row(pool, "failed", 8).await;
    let failed_lately = outbox_row(pool, "failed", 6).await;
    let pending_long = outbox_row(pool, "pending", 8).await;
    let (sent_content, sent_rows) = shared_content(pool, 8, &["sent", "sent"]).await;
    let (waiting_content, waiting_rows) = shared_content(pool, 8, &["pending"]).await;
    let (young_content, _) = shared_content(pool, 6, &[]).await;

    let report = run_now(&app).await;

    let cleared = outbox_state(pool, failed_long_ago).await.unwrap();
    assert_eq!(cleared, (Some("Hello".into()), false, false, None));
    assert!(
        outbox_state(pool, failed_lately).await.unwrap().1,
        "failed 6 days ago"
    );
    assert!(
        outbox_state(pool, pending_long).await.unwrap().1,
        "pending for 8 days"
    );
    for row in &sent_rows {
        // The row lets go of the shared content and keeps its subject.
        let state = outbox_state(pool, *row).await.unwrap();
        assert_eq!(state, (Some("Issue 7".into()), false, false, None));
    }
    assert!(
        !content_exists(pool, sent_content).await,
        "content of sent rows only"
    );
    let waiting = outbox_state(pool, waiting_rows[0]).await.unwrap();
    assert_eq!(waiting, (None, false, true, Some(waiting_content)));
    assert!(
        content_exists(pool, waiting_content).await,
        "content a pending row needs"
    );
    assert!(
        content_exists(pool, young_content).await,
        "content written 6 days ago"
    );
    assert_eq!(report.outbox_bodies, 3);
    assert_eq!(report.shared_contents, 1);
}

#[tokio::test]
async fn old_unconfirmed_sign_ups_go_with_their_tokens_and_everyone_else_stays() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    let old_pending = subscriber(pool, "Old.Pending@example.com", "pending_confirmation", 31).await;
    let old_token = token(pool, old_pending, -24 * 24).await;
    // Suppressed while they existed: the entry keeps the hash, not the address.
    sqlx::query(
        "INSERT INTO suppressions (address_hash, email, reason, changed_at) \
         VALUES ('\\x01', 'old.pending@example.com', 'hard_bounce', now())",
    )
    .execute(pool)
    .await
    .unwrap();
    let old_pending_asked_again =
        subscriber(pool, "again@example.com", "pending_confirmation", 31).await;
    let fresh_token = token(pool, old_pending_asked_again, 20).await;
    let kept = [
        ("asked again lately", old_pending_asked_again),
        (
            "confirmed 400 days ago",
            subscriber(pool, "c@example.com", "confirmed", 400).await,
        ),
        (
            "unsubscribed 400 days ago",
            subscriber(pool, "u@example.com", "unsubscribed", 400).await,
        ),
        (
            "pending for 29 days",
            subscriber(pool, "p@example.com", "pending_confirmation", 29).await,
        ),
    ];

    let report = run_now(&app).await;

    assert!(
        !subscriber_exists(pool, old_pending).await,
        "pending for 31 days"
    );
    assert!(
        !token_exists(pool, &old_token).await,
        "the old sign-up's token"
    );
    for (case, id) in kept {
        assert!(subscriber_exists(pool, id).await, "{case} was deleted");
    }
    assert!(token_exists(pool, &fresh_token).await);
    let address: Option<String> =
        sqlx::query_scalar("SELECT email FROM suppressions WHERE address_hash = '\\x01'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(address, None, "the suppression kept the erased address");
    assert_eq!(report.unconfirmed_signups, 1);
}

#[tokio::test]
async fn webhook_records_are_forgotten_after_webhook_record_days() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    for (id, days) in [("old", 31), ("young", 29)] {
        sqlx::query(
            "INSERT INTO webhook_records (source, record_id, record_type, received_at) \
             VALUES ('postmark', $1, 'Bounce', now() - make_interval(days => $2))",
        )
        .bind(id)
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
    }

    let report = run_now(&app).await;

    let left: Vec<String> = sqlx::query_scalar("SELECT record_id FROM webhook_records")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["young"]);
    assert_eq!(report.webhook_records, 1);
}

#[tokio::test]
async fn the_local_inboxs_emails_are_forgotten_after_body_days() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    for (subject, days) in [("old", 8), ("young", 6)] {
        sqlx::query(
            "INSERT INTO inbox_emails \
                 (id, sender, recipient, subject, html_body, text_body, headers, \
                  message_stream, received_at) \
             VALUES ($1, 'news@example.com', 'someone@example.com', $2, '<p>link</p>', \
                     'link', '', 'outbound', now() - make_interval(days => $3))",
        )
        .bind(Uuid::new_v4())
        .bind(subject)
        .bind(days)
        .execute(pool)
        .await
        .unwrap();
    }

    let report = run_now(&app).await;

    let left: Vec<String> = sqlx::query_scalar("SELECT subject FROM inbox_emails")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["young"]);
    assert_eq!(report.inbox_emails, 1);
}

/// `n` expired tokens of one confirmed subscriber, in one statement.
async fn expired_tokens(pool: &PgPool, n: i32) {
    let id = subscriber(
        pool,
        &format!("{}@example.com", Uuid::new_v4()),
        "confirmed",
        1,
    )
    .await;
    sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, expires_at) \
         SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')), $1, now() - interval '1 hour' \
         FROM generate_series(1, $2)",
    )
    .bind(id)
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn of_two_runs_at_once_only_one_does_the_work() {
    let app = spawn_app().await;
    expired_tokens(&app.db_pool, 3_000).await;
    let stop = CancellationToken::new();
    let (first, second) = (retention(&app, 100), retention(&app, 100));

    let (a, b) = tokio::join!(first.run(When::Due, &stop), second.run(When::Due, &stop));

    let outcomes = [a.unwrap(), b.unwrap()];
    let finished: Vec<Report> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Finished(report) => Some(*report),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "{outcomes:?}");
    assert_eq!(finished[0].expired_tokens, 3_000);
    // The other found the lease held, or (if the first was already done)
    // the next run not due yet: either way it did nothing.
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Busy | Outcome::NotDue)),
        "{outcomes:?}"
    );
    assert_eq!(count(&app.db_pool, "confirmation_tokens").await, 0);
}

#[tokio::test]
async fn a_run_held_elsewhere_is_left_alone_until_its_lease_lapses() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    expired_tokens(pool, 10).await;
    // Another replica's run, renewing as it goes.
    sqlx::query(
        "INSERT INTO job_leases (job, holder, held_until) \
         VALUES ('retention', gen_random_uuid(), now() + interval '1 minute')",
    )
    .execute(pool)
    .await
    .unwrap();

    let held = retention(&app, 100)
        .run(When::Now, &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(held, Outcome::Busy);
    assert_eq!(count(pool, "confirmation_tokens").await, 10);

    // That replica died: its lease lapses and the run is taken over.
    sqlx::query("UPDATE job_leases SET held_until = now() - interval '1 second'")
        .execute(pool)
        .await
        .unwrap();
    let report = run_now(&app).await;
    assert_eq!(report.expired_tokens, 10);
}

#[tokio::test]
async fn the_next_run_is_due_an_interval_after_the_last_one_finished() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    let job = retention(&app, 100);
    let stop = CancellationToken::new();
    assert!(matches!(
        job.run(When::Due, &stop).await.unwrap(),
        Outcome::Finished(_)
    ));
    expired_tokens(pool, 5).await;

    let early = job.run(When::Due, &stop).await.unwrap();

    assert_eq!(early, Outcome::NotDue);
    assert_eq!(count(pool, "confirmation_tokens").await, 5);
    let forced = job.run(When::Now, &stop).await.unwrap();
    assert!(
        matches!(forced, Outcome::Finished(r) if r.expired_tokens == 5),
        "{forced:?}"
    );
}

#[tokio::test]
async fn a_stopped_run_releases_the_lease_and_leaves_the_next_one_due() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    expired_tokens(pool, 5).await;
    let job = retention(&app, 100);
    let stopped = CancellationToken::new();
    stopped.cancel();

    let outcome = job.run(When::Due, &stopped).await.unwrap();

    assert!(
        matches!(outcome, Outcome::Stopped(r) if r.total() == 0),
        "{outcome:?}"
    );
    let next = job.run(When::Due, &CancellationToken::new()).await.unwrap();
    assert!(
        matches!(next, Outcome::Finished(r) if r.expired_tokens == 5),
        "{next:?}"
    );
}

#[tokio::test]
async fn the_background_job_runs_when_due_and_stops_when_told() {
    let app = spawn_app().await;
    let pool = app.db_pool.clone();
    expired_tokens(&pool, 5).await;
    let stop = CancellationToken::new();
    let job = tokio::spawn(retention(&app, 100).run_periodically(stop.clone()));

    eventually("the background job deletes the expired tokens", || async {
        (count(&pool, "confirmation_tokens").await == 0).then_some(())
    })
    .await;
    stop.cancel();

    tokio::time::timeout(Duration::from_secs(10), job)
        .await
        .expect("the job did not stop")
        .unwrap();
}

#[tokio::test]
async fn the_retention_command_runs_now_and_says_when_another_run_holds_it() {
    let app = spawn_app().await;
    let pool = &app.db_pool;
    expired_tokens(pool, 7).await;
    let command = |app: &TestApp| {
        let mut command = app.newsletter_command("http://127.0.0.1:9");
        command
            .arg("retention")
            .env("APP_LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };

    let done = command(&app).output().unwrap();

    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}");
    assert!(stdout.contains("Retention run finished"), "{stdout}");
    assert!(
        stdout.contains("7  expired confirmation tokens"),
        "{stdout}"
    );
    assert_eq!(count(pool, "confirmation_tokens").await, 0);

    sqlx::query(
        "UPDATE job_leases SET holder = gen_random_uuid(), held_until = now() + interval '1 minute'",
    )
    .execute(pool)
    .await
    .unwrap();
    let busy = command(&app).output().unwrap();
    assert_eq!(busy.status.code(), Some(75));
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains("Another process is running retention"),
        "{stderr}"
    );
}

/// Old sign-ups in the acceptance test.
const OLD_SIGN_UPS: i64 = 1_000_000;
/// Rows per batch in that test: larger than the default, so the million
/// go in fewer round trips; each batch still takes a fraction of a second.
const TEST_BATCH: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_of_a_million_old_sign_ups_lets_sign_ups_go_on() {
    let app = Arc::new(spawn_app().await);
    app.mock_email_api_ok().await;
    let pool = &app.db_pool.clone();
    let started = Instant::now();
    // Never confirmed, 31 days and more ago, old0000001@ the oldest; one in
    // ten with a token (long expired) from that time. Ids and addresses
    // ascend with n, so each index is filled at its end: twice as fast as
    // random ids. The set-up lifts the pool's statement timeout for its own
    // transaction: on a loaded machine a million rows take longer than the
    // five seconds the service allows one statement.
    let mut setup = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *setup)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         SELECT lpad(to_hex(n), 32, '0')::uuid, 'old' || lpad(n::text, 7, '0') || '@example.com', \
                'Old ' || n, now() - interval '31 days' - ($1 - n) * interval '1 second', \
                'pending_confirmation' \
         FROM generate_series(1, $1) AS n",
    )
    .bind(OLD_SIGN_UPS)
    .execute(&mut *setup)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO confirmation_tokens (token_hash, subscriber_id, created_at, expires_at) \
         SELECT sha256(convert_to(id::text, 'UTF8')), id, subscribed_at, subscribed_at + interval '7 days' \
         FROM subscriptions TABLESAMPLE SYSTEM (10)",
    )
    .execute(&mut *setup)
    .await
    .unwrap();
    sqlx::query("ANALYZE subscriptions, confirmation_tokens")
        .execute(&mut *setup)
        .await
        .unwrap();
    setup.commit().await.unwrap();
    println!(
        "inserted {OLD_SIGN_UPS} old sign-ups in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let job = retention(&app, TEST_BATCH);
    let run = tokio::spawn(async move { job.run(When::Now, &CancellationToken::new()).await });

    // Sign-ups go on until the run is over, four at a time: two new
    // addresses, one old address from anywhere in the table (deleted
    // already, or not reached yet), and one from the rows the run is about
    // to reach, which it may be deleting at that very moment.
    let mut signed_up = Vec::new();
    let mut answers = Vec::new();
    let mut round = 0_i64;
    while !run.is_finished() {
        let front: Option<String> = sqlx::query_scalar(
            "SELECT email FROM subscriptions \
             WHERE subscribed_at < now() - interval '30 days' \
             ORDER BY subscribed_at, id OFFSET $1 LIMIT 1",
        )
        .bind(TEST_BATCH / 2)
        .fetch_optional(pool)
        .await
        .unwrap();
        let mut batch = tokio::task::JoinSet::new();
        for k in 0..4 {
            let n = round * 4 + k;
            let email = match (k, &front) {
                (1, _) => format!("old{:07}@example.com", 1 + (n * 7_919) % OLD_SIGN_UPS),
                (3, Some(front)) => front.clone(),
                _ => format!("new{n}@example.com"),
            };
            let app = app.clone();
            signed_up.push(email.clone());
            batch.spawn(async move {
                let body = format!("name=Someone&email={}", email.replace('@', "%40"));
                let response = app.post_subscriptions(body).await;
                (
                    email,
                    response.status().as_u16(),
                    response.text().await.unwrap(),
                )
            });
        }
        answers.extend(batch.join_all().await);
        round += 1;
    }
    let outcome = run.await.unwrap().unwrap();
    let elapsed = started.elapsed();
    let Outcome::Finished(report) = outcome else {
        panic!("the run did not finish: {outcome:?}");
    };
    println!(
        "retention of {OLD_SIGN_UPS} sign-ups at batch size {TEST_BATCH}: {elapsed:?}, \
         with {} sign-ups meanwhile; {report:?}",
        answers.len()
    );

    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "sign-ups failed during retention: {failed:?}"
    );
    // Each is stored, pending with a live token, and its confirmation queued.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT lower(s.email)) FROM subscriptions s \
         JOIN confirmation_tokens t ON t.subscriber_id = s.id AND t.expires_at > now() \
         WHERE lower(s.email) = ANY($1) AND s.status = 'pending_confirmation'",
    )
    .bind(&signed_up)
    .fetch_one(pool)
    .await
    .unwrap();
    let distinct: HashSet<&String> = signed_up.iter().collect();
    assert_eq!(
        stored as usize,
        distinct.len(),
        "sign-ups stored with a live token"
    );
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT recipient) FROM email_outbox WHERE recipient = ANY($1)",
    )
    .bind(&signed_up)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(queued as usize, distinct.len(), "confirmations queued");
    // Every old row is gone but those signed up again before the run
    // reached them, which a live token keeps.
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions s \
         WHERE subscribed_at < now() - interval '30 days' \
           AND NOT (lower(email) = ANY($1))",
    )
    .bind(&signed_up)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "old sign-ups left behind");
    assert!(
        report.unconfirmed_signups as i64 > OLD_SIGN_UPS - answers.len() as i64,
        "{report:?}"
    );
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM confirmation_tokens WHERE expires_at < now()")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(expired, 0, "expired tokens left behind");
}
