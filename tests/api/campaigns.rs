//! Sending an issue through the delivery ledger, seen from the email API and
//! the ledger's tables. Issues are published through the ledger directly;
//! the admin pages that do it are tested in `newsletters`.
//!
//! Most tests run the senders inside the test's app; those about crashes
//! and about the fleet-wide send rate run `newsletter worker` processes
//! against the test's database, Redis keys and mock email API.

use std::collections::{HashMap, HashSet};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use newsletter::campaigns::ledger::{self, Fingerprint, IdempotencyKey, KeyOwner, NewIssue};
use newsletter::domain::Newsletter;
use newsletter::newsletters::{Draft, render};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{
    EMAIL_API, HeldEmailApi, TcpProxy, TestApp, accept_every_message, answer_each_message,
    eventually, eventually_within, spawn_app, spawn_app_with,
};
use crate::smtp_server::{SmtpServer, SmtpServerOptions};

/// Adds `n` subscribers with the given status, confirmed a minute ago when
/// confirmed; returns their ids in order.
pub async fn add_subscribers(app: &TestApp, n: i32, status: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         SELECT gen_random_uuid(), $2 || i || '-' || substr(md5(random()::text), 1, 6) || '@example.com', \
                'Reader ' || i, now() - interval '1 hour', $2, \
                CASE WHEN $2 = 'confirmed' THEN now() - interval '1 minute' END \
         FROM generate_series(1, $1) AS i RETURNING id",
    )
    .bind(n)
    .bind(status)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// An admin to publish as.
async fn an_admin(app: &TestApp) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO admins (id, username, password_hash) VALUES ($1, $2, 'unused')")
        .bind(id)
        .bind(format!("editor-{}", id.simple()))
        .execute(&app.db_pool)
        .await
        .unwrap();
    id
}

/// Publishes an issue now, as a fresh admin, with a fresh key.
pub async fn publish(app: &TestApp, title: &str, content: &str) -> Uuid {
    publish_to(app, title, content, None).await
}

/// Publishes an issue to `lists` (`None`: every confirmed subscriber).
pub async fn publish_to(app: &TestApp, title: &str, content: &str, lists: Option<&[Uuid]>) -> Uuid {
    let admin = an_admin(app).await;
    let draft = Draft::parse(title, content).unwrap();
    let newsletter =
        Newsletter::parse("Test letters", "Tests, now and then.", "Test letters").unwrap();
    let rendered = render(&newsletter, &draft);
    let key = IdempotencyKey::parse(&Uuid::new_v4().to_string()).unwrap();
    let mut transaction = app.db_pool.begin().await.unwrap();
    let issue = NewIssue {
        id: Uuid::new_v4(),
        title,
        content,
        rendered: &rendered,
        message_stream: &app.settings.email_client.broadcast_stream,
        send_at: None,
        created_by: Some(admin),
        list_ids: lists,
        segment: None,
        public: false,
    };
    let fingerprint = Fingerprint::of(&issue);
    let published = ledger::publish(
        &mut transaction,
        KeyOwner::Admin(admin),
        &key,
        &fingerprint,
        issue,
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    published.issue_id
}

/// Waits until the issue is in `state`; returns its progress.
pub async fn wait_for_state(app: &TestApp, issue: Uuid, state: &str) -> ledger::Progress {
    wait_for_state_within(app, issue, state, Duration::from_secs(10)).await
}

/// Like [`wait_for_state`], failing the test after `patience`.
pub async fn wait_for_state_within(
    app: &TestApp,
    issue: Uuid,
    state: &str,
    patience: Duration,
) -> ledger::Progress {
    eventually_within(patience, &format!("the issue to be {state}"), || async {
        let progress = progress_of(app, issue).await;
        (progress.summary.state().as_str() == state).then_some(progress)
    })
    .await
}

/// Where the issue stands now.
pub async fn progress_of(app: &TestApp, issue: Uuid) -> ledger::Progress {
    let mut conn = app.db_pool.acquire().await.unwrap();
    ledger::progress(&mut conn, issue).await.unwrap().unwrap()
}

/// Each delivery's (seq, status, message id), in order.
pub async fn deliveries(app: &TestApp, issue: Uuid) -> Vec<(i32, String, Option<String>)> {
    sqlx::query_as(
        "SELECT seq, status, message_id FROM deliveries WHERE issue_id = $1 ORDER BY seq",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_issue_reaches_each_confirmed_subscriber_once_personalised_on_the_broadcast_stream() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(accept_every_message)
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 3, "confirmed").await;
    add_subscribers(&app, 2, "pending_confirmation").await;

    let issue = publish(&app, "Issue one", "Hello {{name}}, the news.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    let sent = app.sent_emails().await;
    assert_eq!(sent.len(), 3, "one email per confirmed subscriber");
    let mut names: Vec<String> = Vec::new();
    for email in &sent {
        assert_eq!(email["MessageStream"], "broadcast");
        let text = email["TextBody"].as_str().unwrap();
        let name = text
            .split("Hello ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or_else(|| panic!("no greeting in {text}"));
        assert!(name.starts_with("Reader "), "{text}");
        names.push(name.to_owned());
        let delivery: ledger::DeliveryId = email["Metadata"]["delivery_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(delivery.issue_id, issue);
    }
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        3,
        "each email is rendered for its own recipient"
    );
    assert_eq!(progress.summary.sent, 3);
    assert_eq!(progress.summary.recipients, 3);
    assert_eq!(progress.percent(), 100);
    for (seq, status, message_id) in deliveries(&app, issue).await {
        assert_eq!(status, "sent", "delivery {seq}");
        assert!(
            message_id.is_some_and(|id| !id.is_empty()),
            "delivery {seq} keeps its MessageID"
        );
    }
}

#[tokio::test]
async fn an_issue_with_no_confirmed_subscriber_is_done_without_sending() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 2, "pending_confirmation").await;

    let issue = publish(&app, "Nobody yet", "Hello.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    assert_eq!(progress.summary.recipients, 0);
}

// ---------------------------------------------------------------------------
// What the tests below look at.

/// A subscriber numbered `n`: their id is `n` as a UUID, so ids sort as the
/// numbers do and a test knows which audience chunk holds whom. Confirmed
/// `confirmed_in` seconds from now (negative: in the past), if at all.
async fn add_numbered_subscriber(
    app: &TestApp,
    n: u128,
    status: &str,
    confirmed_in: Option<f64>,
) -> Uuid {
    let id = Uuid::from_u128(n);
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         VALUES ($1, $2, $3, now() - interval '1 hour', $4, now() + make_interval(secs => $5))",
    )
    .bind(id)
    .bind(numbered_address(n))
    .bind(format!("Reader {n}"))
    .bind(status)
    .bind(confirmed_in)
    .execute(&app.db_pool)
    .await
    .unwrap();
    id
}

fn numbered_address(n: u128) -> String {
    format!("reader{n}@example.com")
}

/// One row of the ledger, with the address of its subscriber (`None` once
/// erased).
#[derive(Debug, sqlx::FromRow)]
struct Delivery {
    seq: i32,
    subscriber_id: Uuid,
    email: Option<String>,
    status: String,
    attempts: i16,
    last_error: Option<String>,
}

async fn ledger_rows(app: &TestApp, issue: Uuid) -> Vec<Delivery> {
    sqlx::query_as(
        "SELECT d.seq, d.subscriber_id, s.email, d.status, d.attempts, d.last_error \
         FROM deliveries d LEFT JOIN subscriptions s ON s.id = d.subscriber_id \
         WHERE d.issue_id = $1 ORDER BY d.seq",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// The issue's batches as `(first_seq, last_seq, done, held)`, in order;
/// held means a sender's claim is on it.
async fn batches(app: &TestApp, issue: Uuid) -> Vec<(i32, i32, bool, bool)> {
    sqlx::query_as(
        "SELECT first_seq, last_seq, done, claim_id IS NOT NULL FROM delivery_batches \
         WHERE issue_id = $1 ORDER BY first_seq",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// Waits until every batch of the issue is done and none is held.
async fn wait_for_batches_to_settle(app: &TestApp, issue: Uuid) {
    eventually("the issue's batches to be done", || async {
        let batches = batches(app, issue).await;
        batches
            .iter()
            .all(|&(_, _, done, held)| done && !held)
            .then_some(())
    })
    .await;
}

/// How many messages of `issue` went to each address, among `messages`.
fn messages_per_address(messages: &[Value], issue: Uuid) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for message in messages {
        let delivery: ledger::DeliveryId = message["Metadata"]["delivery_id"]
            .as_str()
            .expect("an issue's email names its delivery")
            .parse()
            .unwrap();
        if delivery.issue_id == issue {
            *counts
                .entry(message["To"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Each address the ledger holds for `issue`, in order of `seq`.
async fn addresses(app: &TestApp, issue: Uuid) -> Vec<String> {
    ledger_rows(app, issue)
        .await
        .into_iter()
        .map(|row| row.email.expect("a recipient still subscribed"))
        .collect()
}

async fn set_status(app: &TestApp, ids: &[Uuid], status: &str) {
    sqlx::query("UPDATE subscriptions SET status = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(status)
        .execute(&app.db_pool)
        .await
        .unwrap();
}

/// Connections of the test's database waiting for a lock.
async fn lock_waits(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

/// Takes the place of delivery `seq` of `issue` in a transaction left open:
/// the audience chunk that numbers a recipient `seq` waits for it to end.
/// Deliveries have no foreign keys, so the row needs no real subscriber.
async fn hold_seq(
    app: &TestApp,
    issue: Uuid,
    seq: i32,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut holder = app.db_pool.begin().await.unwrap();
    sqlx::query("INSERT INTO deliveries (issue_id, seq, subscriber_id) VALUES ($1, $2, $3)")
        .bind(issue)
        .bind(seq)
        .bind(Uuid::new_v4())
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// The ledger says every one of `recipients` recipients was sent the issue,
/// exactly once; the email API got a message for each of them, a second
/// one for at most `sent_twice` of them, a third for none.
async fn assert_everyone_sent_once_at_most_some_twice(
    app: &TestApp,
    issue: Uuid,
    recipients: usize,
    sent_twice: usize,
) {
    let rows = ledger_rows(app, issue).await;
    assert_eq!(rows.len(), recipients, "one delivery per recipient");
    let seqs: Vec<i32> = rows.iter().map(|row| row.seq).collect();
    assert_eq!(seqs, (1..=recipients as i32).collect::<Vec<_>>());
    let subscribers: HashSet<Uuid> = rows.iter().map(|row| row.subscriber_id).collect();
    assert_eq!(subscribers.len(), recipients, "nobody recorded twice");
    for row in &rows {
        assert_eq!(
            row.status, "sent",
            "delivery {}: {:?}",
            row.seq, row.last_error
        );
    }
    let received = messages_per_address(&app.sent_emails().await, issue);
    for row in &rows {
        let address = row.email.as_ref().unwrap();
        assert!(
            received.get(address).is_some_and(|n| *n >= 1),
            "{address} never reached the email API"
        );
    }
    let twice = received.values().filter(|n| **n == 2).count();
    let more = received.values().filter(|n| **n > 2).count();
    assert!(
        twice <= sent_twice,
        "{twice} recipients were sent the issue twice; at most {sent_twice} may be"
    );
    assert_eq!(
        more, 0,
        "some recipients were sent the issue three times or more"
    );
}

// ---------------------------------------------------------------------------
// Who receives an issue.

#[tokio::test]
async fn an_issues_audience_is_who_had_confirmed_by_its_send_time_however_many_chunks_it_takes() {
    // The app sends nothing: the test starts senders once it holds the
    // second audience chunk up, so that confirmations land mid-recording.
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    app.mock_email_api_ok().await;
    // Numbered 1 to 40: up to 30 confirmed a minute ago, above 30 with a
    // confirmation time after the issue's send time; but 5, 17, 25 and 35
    // pending for now.
    let mut expected = HashSet::new();
    for n in 1..=40u128 {
        let (status, confirmed_in) = match n {
            5 | 17 | 25 | 35 => ("pending_confirmation", None),
            31..=40 => ("confirmed", Some(3_600.0)),
            _ => ("confirmed", Some(-60.0)),
        };
        add_numbered_subscriber(&app, n, status, confirmed_in).await;
        if status == "confirmed" && n <= 30 {
            expected.insert(numbered_address(n));
        }
    }
    let issue = publish(&app, "Frozen", "Hello {{name}}.").await;
    // Chunk 1 numbers 10 recipients (ids 1 to 11 less 5); chunk 2 waits at seq 11.
    let holder = hold_seq(&app, issue, 11).await;
    let stop = CancellationToken::new();
    let mut senders = app.campaign_sender().await.spawn(stop.clone());
    eventually("the recording to wait at its second chunk", || async {
        let recorded = progress_of(&app, issue).await.summary.recipients;
        (recorded == 10 && lock_waits(&app).await > 0).then_some(())
    })
    .await;

    // Two confirm now, while their chunks are still to be recorded.
    set_status(
        &app,
        &[Uuid::from_u128(25), Uuid::from_u128(35)],
        "confirmed",
    )
    .await;
    sqlx::query("UPDATE subscriptions SET confirmed_at = now() WHERE id = ANY($1)")
        .bind([Uuid::from_u128(25), Uuid::from_u128(35)])
        .execute(&app.db_pool)
        .await
        .unwrap();
    holder.rollback().await.unwrap();
    let progress = wait_for_state(&app, issue, "done").await;
    stop.cancel();
    while senders.join_next().await.is_some() {}

    let recorded: HashSet<String> = addresses(&app, issue).await.into_iter().collect();
    assert_eq!(recorded, expected, "the recorded audience");
    let received = messages_per_address(&app.sent_emails().await, issue);
    assert_eq!(received.keys().cloned().collect::<HashSet<_>>(), expected);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    assert_eq!(progress.summary.recipients, expected.len() as i64);
    assert_eq!(progress.summary.sent, expected.len() as i64);
}

#[tokio::test]
async fn only_subscribers_confirmed_when_an_issue_goes_out_receive_it() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    app.mock_email_api_ok().await;
    let confirmed = add_subscribers(&app, 25, "confirmed").await;
    add_subscribers(&app, 15, "pending_confirmation").await;
    // Confirmed once, and no longer.
    let left = add_subscribers(&app, 5, "unsubscribed").await;
    sqlx::query(
        "UPDATE subscriptions SET confirmed_at = now() - interval '1 minute' WHERE id = ANY($1)",
    )
    .bind(&left)
    .execute(&app.db_pool)
    .await
    .unwrap();

    let issue = publish(&app, "Confirmed only", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    let recorded: HashSet<Uuid> = ledger_rows(&app, issue)
        .await
        .iter()
        .map(|row| row.subscriber_id)
        .collect();
    assert_eq!(recorded, confirmed.iter().copied().collect::<HashSet<_>>());
    let confirmed_addresses: HashSet<String> = addresses(&app, issue).await.into_iter().collect();
    let received = messages_per_address(&app.sent_emails().await, issue);
    assert_eq!(
        received.keys().cloned().collect::<HashSet<_>>(),
        confirmed_addresses
    );
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    assert_eq!(
        (progress.summary.recipients, progress.summary.sent),
        (25, 25)
    );
}

/// An issue to `subscribers` confirmed subscribers, in batches of 10, held
/// at its first batch: the API has it (the addresses returned) and answers
/// once released, and the rest wait their turn.
pub async fn a_held_issue(subscribers: i32) -> (HeldEmailApi, TestApp, Uuid, HashSet<String>) {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    add_subscribers(&app, subscribers, "confirmed").await;
    let issue = publish(&app, "Leaving", "Hello {{name}}.").await;
    api.wait_for_requests(1).await;
    let in_flight = api.requests()[0]
        .iter()
        .map(|message| message["To"].as_str().unwrap().to_owned())
        .collect();
    (api, app, issue, in_flight)
}

#[tokio::test]
async fn subscribers_who_leave_before_their_message_goes_out_are_skipped_and_counted() {
    let (api, app, issue, in_flight) = a_held_issue(30).await;
    let rows = ledger_rows(&app, issue).await;
    let (flying, waiting): (Vec<&Delivery>, Vec<&Delivery>) = rows
        .iter()
        .partition(|row| in_flight.contains(row.email.as_ref().unwrap()));
    assert_eq!((flying.len(), waiting.len()), (10, 20));

    // One leaves with their message already at the API; two leave and one
    // is erased before theirs is sent.
    set_status(&app, &[flying[2].subscriber_id], "unsubscribed").await;
    set_status(
        &app,
        &[waiting[1].subscriber_id, waiting[14].subscriber_id],
        "unsubscribed",
    )
    .await;
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(waiting[8].subscriber_id)
        .execute(&app.db_pool)
        .await
        .unwrap();
    let gone: Vec<(i32, String)> = [waiting[1], waiting[8], waiting[14]]
        .iter()
        .map(|row| (row.seq, row.email.clone().unwrap()))
        .collect();
    api.release();
    let progress = wait_for_state(&app, issue, "done").await;

    let s = &progress.summary;
    assert_eq!((s.recipients, s.sent, s.skipped, s.failed), (30, 27, 3, 0));
    let mut conn = app.db_pool.acquire().await.unwrap();
    let undelivered = ledger::undelivered(&mut conn, issue, 0, 100).await.unwrap();
    let skipped: Vec<i32> = undelivered.iter().map(|u| u.seq).collect();
    assert_eq!(
        skipped,
        gone.iter().map(|(seq, _)| *seq).collect::<Vec<_>>()
    );
    for row in &undelivered {
        assert_eq!(row.status, "skipped");
        assert_eq!(
            row.reason.as_deref(),
            Some("no longer subscribed when the issue was sent")
        );
    }
    assert_eq!(undelivered[1].email, None, "the erased subscriber");
    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    let received = messages_per_address(&sent, issue);
    for (_, address) in &gone {
        assert!(
            !received.contains_key(address),
            "{address} was sent the issue"
        );
    }
    assert_eq!(
        received.get(flying[2].email.as_ref().unwrap()),
        Some(&1),
        "the message already at the API was sent"
    );
    assert_eq!(received.len(), 27);
}

// ---------------------------------------------------------------------------
// Pausing, resuming and cancelling.

/// An app whose email API holds every batch until released, sending in
/// batches of 10 with two senders, and `n` confirmed subscribers.
async fn app_with_held_api(n: i32) -> (TestApp, HeldEmailApi) {
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.workers = 2;
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    add_subscribers(&app, n, "confirmed").await;
    (app, api)
}

async fn pause(app: &TestApp, issue: Uuid) -> bool {
    let mut conn = app.db_pool.acquire().await.unwrap();
    ledger::pause(&mut conn, issue).await.unwrap()
}

async fn resume(app: &TestApp, issue: Uuid) -> bool {
    let mut conn = app.db_pool.acquire().await.unwrap();
    ledger::resume(&mut conn, issue).await.unwrap()
}

#[tokio::test]
async fn a_paused_issue_hands_out_no_more_batches_and_once_resumed_reaches_everyone_once() {
    let (app, api) = app_with_held_api(60).await;
    let issue = publish(&app, "Paused", "Hello {{name}}.").await;
    api.wait_for_requests(2).await;

    assert!(pause(&app, issue).await);
    api.release();
    wait_for_batches_in_flight_to_finish(&app, issue, 20).await;
    // Another issue goes out meanwhile. Once it is done, the senders have
    // looked past the paused issue's batches, which are older and due.
    let other = publish(&app, "Meanwhile", "Hello.").await;
    wait_for_state(&app, other, "done").await;

    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    assert_eq!(
        messages_per_address(&sent, issue).len(),
        20,
        "only the batches in flight were sent"
    );
    let paused = progress_of(&app, issue).await;
    assert_eq!(paused.summary.state().as_str(), "paused");
    assert_eq!((paused.summary.sent, paused.summary.queued()), (20, 40));
    let queued = ledger_rows(&app, issue)
        .await
        .iter()
        .filter(|row| row.status == "queued")
        .count();
    assert_eq!(queued, 40);

    assert!(resume(&app, issue).await);
    let progress = wait_for_state(&app, issue, "done").await;
    assert_eq!(progress.summary.sent, 60);
    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    let received = messages_per_address(&sent, issue);
    assert_eq!(received.len(), 60);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
}

#[tokio::test]
async fn a_reader_who_leaves_the_issues_list_before_their_batch_is_skipped_with_the_reason() {
    let (app, api) = app_with_held_api(60).await;
    // Everyone is also on a second list, the one the issue goes to.
    let weekly: Uuid =
        sqlx::query_scalar("INSERT INTO lists (name) VALUES ('Weekly') RETURNING id")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO memberships (list_id, subscriber_id, status, confirmed_at) \
         SELECT $1, id, 'confirmed', now() FROM subscriptions",
    )
    .bind(weekly)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let issue = publish_to(&app, "Weekly", "Hello {{name}}.", Some(&[weekly])).await;
    api.wait_for_requests(2).await;
    assert!(pause(&app, issue).await);
    api.release();
    wait_for_batches_in_flight_to_finish(&app, issue, 20).await;

    // A reader whose delivery is recorded and still queued leaves the
    // list, and stays confirmed on the default one.
    let leaver = ledger_rows(&app, issue)
        .await
        .into_iter()
        .find(|row| row.status == "queued")
        .expect("a delivery still queued");
    sqlx::query(
        "UPDATE memberships SET status = 'unsubscribed', unsubscribed_at = now() \
         WHERE list_id = $1 AND subscriber_id = $2",
    )
    .bind(weekly)
    .bind(leaver.subscriber_id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    assert!(resume(&app, issue).await);
    let progress = wait_for_state(&app, issue, "done").await;

    let row = ledger_rows(&app, issue)
        .await
        .into_iter()
        .find(|row| row.subscriber_id == leaver.subscriber_id)
        .unwrap();
    assert_eq!(row.status, "skipped");
    assert_eq!(
        row.last_error.as_deref(),
        Some("had left the issue's lists when it was sent")
    );
    assert_eq!((progress.summary.sent, progress.summary.skipped), (59, 1));
    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    let received = messages_per_address(&sent, issue);
    assert_eq!(received.len(), 59);
    assert!(!received.contains_key(leaver.email.as_deref().unwrap()));
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1")
        .bind(leaver.subscriber_id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(status, "confirmed", "still on the default list");
}

/// Waits until `sent` deliveries are sent and no batch of the issue is held.
async fn wait_for_batches_in_flight_to_finish(app: &TestApp, issue: Uuid, sent: i64) {
    eventually("the batches in flight to be recorded", || async {
        let settled = progress_of(app, issue).await.summary.sent == sent;
        let held = batches(app, issue).await.iter().any(|batch| batch.3);
        (settled && !held).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_issue_paused_while_its_last_batches_were_in_flight_is_done_once_resumed() {
    let (app, api) = app_with_held_api(20).await;
    let issue = publish(&app, "Last batches", "Hello {{name}}.").await;
    api.wait_for_requests(2).await;

    assert!(pause(&app, issue).await);
    api.release();
    wait_for_batches_to_settle(&app, issue).await;
    assert_eq!(
        progress_of(&app, issue).await.summary.state().as_str(),
        "paused"
    );

    assert!(resume(&app, issue).await);
    let progress = wait_for_state(&app, issue, "done").await;
    assert_eq!(progress.summary.sent, 20);
    assert_eq!(progress.percent(), 100);
}

#[tokio::test]
async fn an_issue_paused_while_its_audience_was_recorded_records_the_rest_once_resumed() {
    // Senders started by the test; claims far longer than the test waits,
    // so that resuming cannot rely on one running out.
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
        s.campaigns.sending.claim_timeout_seconds = 60;
    })
    .await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 40, "confirmed").await;
    let issue = publish(&app, "Paused early", "Hello {{name}}.").await;
    let holder = hold_seq(&app, issue, 11).await;
    let stop = CancellationToken::new();
    let mut senders = app.campaign_sender().await.spawn(stop.clone());
    eventually("the recording to wait at its second chunk", || async {
        let recorded = progress_of(&app, issue).await.summary.recipients;
        (recorded == 10 && lock_waits(&app).await > 0).then_some(())
    })
    .await;
    // The recorder stops after this chunk, as it does on finding the issue
    // paused, and keeps its lease. (Pausing while a chunk is recorded races
    // the next chunk for the issue's row, which a busy recorder can win.)
    stop.cancel();
    holder.rollback().await.unwrap();
    while senders.join_next().await.is_some() {}
    assert!(pause(&app, issue).await);
    let paused = progress_of(&app, issue).await.summary;
    assert_eq!((paused.recipients, paused.audience_complete), (20, false));
    let stop = CancellationToken::new();
    let mut senders = app.campaign_sender().await.spawn(stop.clone());

    assert!(resume(&app, issue).await);
    let progress = wait_for_state(&app, issue, "done").await;
    stop.cancel();
    while senders.join_next().await.is_some() {}

    assert_eq!(progress.summary.recipients, 40);
    assert_everyone_sent_once_at_most_some_twice(&app, issue, 40, 0).await;
}

#[tokio::test]
async fn cancelling_an_issue_skips_what_is_queued_and_lets_the_batches_in_flight_finish() {
    let (app, api) = app_with_held_api(60).await;
    let issue = publish(&app, "Cancelled", "Hello {{name}}.").await;
    api.wait_for_requests(2).await;

    let mut conn = app.db_pool.acquire().await.unwrap();
    assert!(ledger::cancel(&mut conn, issue).await.unwrap());
    let cancelled = progress_of(&app, issue).await;
    assert_eq!(cancelled.summary.state().as_str(), "cancelled");
    api.release();
    wait_for_batches_to_settle(&app, issue).await;

    let progress = progress_of(&app, issue).await;
    let s = &progress.summary;
    assert_eq!(s.state().as_str(), "cancelled");
    assert_eq!((s.sent, s.skipped, s.queued()), (20, 40, 0));
    assert_eq!(
        api.requests().len(),
        2,
        "no batch was sent after the cancel"
    );
    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    let received = messages_per_address(&sent, issue);
    assert_eq!(received.len(), 20);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    for row in ledger_rows(&app, issue).await {
        match row.status.as_str() {
            "sent" => assert!(received.contains_key(row.email.as_ref().unwrap())),
            "skipped" => {
                assert_eq!(row.last_error.as_deref(), Some("the issue was cancelled"));
                assert!(!received.contains_key(row.email.as_ref().unwrap()));
            }
            other => panic!("delivery {} is {other}", row.seq),
        }
    }
}

#[tokio::test]
async fn cancelling_an_issue_while_its_audience_is_recorded_leaves_nothing_queued() {
    let app = spawn_app_with(|s| {
        s.delivery.run_in_server = false;
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 40, "confirmed").await;
    let issue = publish(&app, "Cancelled early", "Hello {{name}}.").await;
    let holder = hold_seq(&app, issue, 11).await;
    let stop = CancellationToken::new();
    let mut senders = app.campaign_sender().await.spawn(stop.clone());
    eventually("the recording to wait at its second chunk", || async {
        let recorded = progress_of(&app, issue).await.summary.recipients;
        (recorded == 10 && lock_waits(&app).await > 0).then_some(())
    })
    .await;

    // The cancel waits for the chunk being recorded, which waits for the test.
    let cancelling = tokio::spawn({
        let pool = app.db_pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            ledger::cancel(&mut conn, issue).await.unwrap()
        }
    });
    eventually("the cancel to wait for the chunk", || async {
        (lock_waits(&app).await >= 2).then_some(())
    })
    .await;
    holder.rollback().await.unwrap();
    assert!(cancelling.await.unwrap());
    wait_for_batches_to_settle(&app, issue).await;
    stop.cancel();
    while senders.join_next().await.is_some() {}

    let progress = progress_of(&app, issue).await;
    let s = &progress.summary;
    assert_eq!(s.state().as_str(), "cancelled");
    // The chunk under way was recorded (and the next ones may have got
    // ahead of the cancel once it let go of the issue); none is left queued.
    assert!(s.recipients >= 20, "{} recipients recorded", s.recipients);
    assert_eq!((s.sent + s.skipped, s.queued()), (s.recipients, 0));
    let queued = ledger_rows(&app, issue)
        .await
        .into_iter()
        .filter(|row| row.status == "queued")
        .count();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn a_batch_released_as_its_issue_is_cancelled_leaves_nothing_queued() {
    // The API answers every message with a passing refusal (100: down for
    // maintenance), so the batch leaves its deliveries queued.
    let api = HeldEmailApi::answering_each_message(100).await;
    let app = spawn_app_with(|s| {
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    add_subscribers(&app, 10, "confirmed").await;
    let issue = publish(&app, "Cancelled in flight", "Hello {{name}}.").await;
    api.wait_for_requests(1).await;
    // The test holds the batch's row: the sender's release, once the API
    // has answered, waits for it.
    let mut holder = app.db_pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM delivery_batches WHERE issue_id = $1 FOR UPDATE")
        .bind(issue)
        .execute(&mut *holder)
        .await
        .unwrap();
    api.release();
    eventually("the release to wait for the batch's row", || async {
        (lock_waits(&app).await > 0).then_some(())
    })
    .await;

    let cancelling = tokio::spawn({
        let pool = app.db_pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            ledger::cancel(&mut conn, issue).await.unwrap()
        }
    });
    // The cancel either waits for the release or is through before it.
    eventually("the cancel to wait or be done", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND query LIKE 'UPDATE newsletter_issues SET state = ''cancelled''%'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
        let cancelled = progress_of(&app, issue).await.summary.state().as_str() == "cancelled";
        (waiting > 0 || cancelled).then_some(())
    })
    .await;
    holder.rollback().await.unwrap();
    assert!(cancelling.await.unwrap());
    wait_for_batches_to_settle(&app, issue).await;

    let progress = progress_of(&app, issue).await;
    let s = &progress.summary;
    assert_eq!(s.state().as_str(), "cancelled");
    assert_eq!((s.skipped, s.queued()), (10, 0));
}

// ---------------------------------------------------------------------------
// What the email API answers.

/// Says "too many requests" to the first `whole_calls` calls (every other
/// one with `Retry-After: 1`), then refuses each recipient's first
/// `per_message` messages with ErrorCode 429 inside a 200 answer, then
/// accepts.
struct ThrottlingApi {
    calls: AtomicUsize,
    whole_calls: usize,
    per_message: usize,
    /// Messages each address was sent in calls answered 200, and how many
    /// of them were accepted.
    seen: Mutex<HashMap<String, (usize, usize)>>,
}

impl Respond for ThrottlingApi {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.whole_calls {
            let refusal = ResponseTemplate::new(429).set_body_json(
                serde_json::json!({ "ErrorCode": 429, "Message": "Rate limit exceeded" }),
            );
            return if call.is_multiple_of(2) {
                refusal.insert_header("Retry-After", "1")
            } else {
                refusal
            };
        }
        answer_each_message(request, |message| {
            let mut seen = self.seen.lock().unwrap();
            let (sent, accepted) = seen
                .entry(message["To"].as_str().unwrap().to_owned())
                .or_default();
            *sent += 1;
            if *sent <= self.per_message {
                429
            } else {
                *accepted += 1;
                0
            }
        })
    }
}

#[tokio::test]
async fn throttling_answers_slow_an_issue_down_without_using_up_its_attempts() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.workers = 2;
        s.campaigns.sending.batch_size = 5;
        s.campaigns.audience_chunk = 5;
        s.campaigns.sending.max_attempts = 3;
    })
    .await;
    let api = Arc::new(ThrottlingApi {
        calls: AtomicUsize::new(0),
        whole_calls: 6,
        // As many as the attempts: counted, they would fail every delivery.
        per_message: 3,
        seen: Mutex::new(HashMap::new()),
    });
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(ArcResponder(api.clone()))
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 30, "confirmed").await;

    let issue = publish(&app, "Throttled", "Hello {{name}}.").await;
    let progress = wait_for_state_within(&app, issue, "done", Duration::from_secs(30)).await;

    let s = &progress.summary;
    assert_eq!((s.sent, s.failed, s.skipped), (30, 0, 0));
    for row in ledger_rows(&app, issue).await {
        assert_eq!(
            row.status, "sent",
            "delivery {}: {:?}",
            row.seq, row.last_error
        );
        assert_eq!(
            row.attempts, 1,
            "delivery {}: only the accepted send counts",
            row.seq
        );
    }
    let seen = api.seen.lock().unwrap();
    assert_eq!(seen.len(), 30);
    for (address, (sent, accepted)) in seen.iter() {
        assert_eq!((*sent, *accepted), (4, 1), "{address}");
    }
}

/// Shares one responder between the mock server and the test.
struct ArcResponder<R>(Arc<R>);

impl<R: Respond> Respond for ArcResponder<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}

#[tokio::test]
async fn whole_calls_that_fail_use_up_attempts_and_failed_deliveries_go_out_once_requeued() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
        s.campaigns.sending.max_attempts = 3;
    })
    .await;
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 20, "confirmed").await;

    let issue = publish(&app, "Unlucky", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    let s = &progress.summary;
    assert_eq!((s.sent, s.failed, s.queued()), (0, 20, 0));
    for row in ledger_rows(&app, issue).await {
        assert_eq!(row.status, "failed");
        assert_eq!(row.attempts, 3);
        let reason = row.last_error.unwrap_or_default();
        assert!(reason.starts_with("gave up after 3 attempts: "), "{reason}");
    }
    assert_eq!(app.email_api_requests().await.len(), 6, "3 calls per batch");

    app.email_server.reset().await;
    app.mock_email_api_ok().await;
    let mut conn = app.db_pool.acquire().await.unwrap();
    assert_eq!(ledger::requeue_failed(&mut conn, issue).await.unwrap(), 20);
    let progress = wait_for_state(&app, issue, "done").await;

    let s = &progress.summary;
    assert_eq!((s.sent, s.failed, s.queued()), (20, 0, 0));
    let received = messages_per_address(&app.sent_emails().await, issue);
    assert_eq!(received.len(), 20);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    for row in ledger_rows(&app, issue).await {
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 1));
    }
}

#[tokio::test]
async fn a_message_the_api_refuses_for_good_fails_alone_and_the_rest_of_its_batch_is_sent() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    let ids = add_subscribers(&app, 10, "confirmed").await;
    let refused: String = sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(ids[4])
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let inactive = refused.clone();
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(move |request: &Request| {
            // 406: the recipient is inactive (bounced or complained).
            answer_each_message(request, |m| if m["To"] == *inactive { 406 } else { 0 })
        })
        .mount(&app.email_server)
        .await;

    let issue = publish(&app, "One bounce", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    let s = &progress.summary;
    assert_eq!((s.sent, s.failed), (9, 1));
    assert_eq!(
        app.email_api_requests().await.len(),
        1,
        "a refusal for good is not retried"
    );
    for row in ledger_rows(&app, issue).await {
        if row.email.as_deref() == Some(&refused) {
            assert_eq!(row.status, "failed");
            let reason = row.last_error.unwrap_or_default();
            assert!(reason.contains("error 406"), "{reason}");
        } else {
            assert_eq!(row.status, "sent", "delivery {}", row.seq);
        }
    }
}

#[tokio::test]
async fn a_batch_refused_as_a_whole_is_sent_a_message_at_a_time_and_only_the_bad_one_fails() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    let ids = add_subscribers(&app, 10, "confirmed").await;
    let bad: String = sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(ids[7])
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let refused = bad.clone();
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(move |request: &Request| {
            let batch: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
            if batch.iter().any(|m| m["To"] == *refused) {
                ResponseTemplate::new(422).set_body_json(
                    serde_json::json!({ "ErrorCode": 300, "Message": "Invalid 'To' address" }),
                )
            } else {
                accept_every_message(request)
            }
        })
        .mount(&app.email_server)
        .await;

    let issue = publish(&app, "One bad address", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    assert_eq!((progress.summary.sent, progress.summary.failed), (9, 1));
    let requests = app.email_api_requests().await;
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        [vec![10], vec![1; 10]].concat(),
        "the batch, then each alone"
    );
    for row in ledger_rows(&app, issue).await {
        if row.email.as_deref() == Some(&bad) {
            assert_eq!(row.status, "failed");
            let reason = row.last_error.unwrap_or_default();
            assert!(reason.contains("422"), "{reason}");
        } else {
            assert_eq!(row.status, "sent", "delivery {}", row.seq);
        }
    }
}

#[tokio::test]
async fn two_issues_published_together_both_reach_everyone_once() {
    let app = spawn_app_with(|s| {
        s.campaigns.sending.workers = 2;
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 30, "confirmed").await;

    let first = publish(&app, "First", "Hello {{name}}.").await;
    let second = publish(&app, "Second", "Hello again {{name}}.").await;
    let first_progress = wait_for_state(&app, first, "done").await;
    let second_progress = wait_for_state(&app, second, "done").await;

    let sent = app.sent_emails().await;
    for (issue, progress) in [(first, first_progress), (second, second_progress)] {
        assert_eq!(progress.summary.sent, 30);
        let received = messages_per_address(&sent, issue);
        assert_eq!(received.len(), 30);
        assert!(received.values().all(|n| *n == 1), "{received:?}");
    }
}

// ---------------------------------------------------------------------------
// Worker processes: crashes, and one send rate for all of them.

/// A `newsletter worker` process on the test's database and Redis keys,
/// sending to `email_api` in batches of 20 with two senders. Killed when
/// dropped, so that a failing test leaves no process behind.
struct Worker(Child);

impl Worker {
    fn start(app: &TestApp, email_api: &str, settings: &[(&str, &str)]) -> Self {
        let mut command = app.newsletter_command(email_api);
        command
            .arg("worker")
            // A claim must outlast two calls; both short, so that the
            // claims of a killed worker lapse soon.
            .env("APP_EMAIL_CLIENT__TIMEOUT_MILLISECONDS", "1000")
            .env("APP_CAMPAIGNS__CLAIM_TIMEOUT_SECONDS", "3")
            .env("APP_CAMPAIGNS__SENDERS", "2")
            .env("APP_CAMPAIGNS__BATCH_SIZE", "20")
            .env("APP_CAMPAIGNS__AUDIENCE_CHUNK", "20")
            .env("APP_CAMPAIGNS__MESSAGES_PER_SECOND", "100000")
            .env("APP_CAMPAIGNS__POLL_INTERVAL_MILLISECONDS", "200")
            .env("APP_CAMPAIGNS__BACKOFF_BASE_MILLISECONDS", "50")
            .env("APP_CAMPAIGNS__BACKOFF_MAX_SECONDS", "1")
            .env("APP_DELIVERY__POLL_INTERVAL_MILLISECONDS", "200");
        for (name, value) in settings {
            command.env(name, value);
        }
        Self(
            command
                .spawn()
                .expect("Failed to start `newsletter worker`"),
        )
    }

    /// SIGKILL: the process ends wherever it is, releasing and recording
    /// nothing.
    fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Batches of the issue that a sender holds.
async fn held_batches(app: &TestApp, issue: Uuid) -> usize {
    batches(app, issue).await.iter().filter(|b| b.3).count()
}

#[tokio::test]
async fn a_worker_killed_mid_send_leaves_nobody_out_and_sends_at_most_its_batches_in_flight_twice()
{
    // Only the worker processes send.
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    // Slow answers, so that batches are in flight when the kill comes.
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(|request: &Request| {
            accept_every_message(request).set_delay(Duration::from_millis(200))
        })
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 300, "confirmed").await;
    let mut first = Worker::start(&app, &app.email_server.uri(), &[]);

    let issue = publish(&app, "Killed", "Hello {{name}}.").await;
    eventually_within(
        Duration::from_secs(20),
        "a few batches to be sent and one to be in flight",
        || async {
            let requests = app.email_api_requests().await.len();
            let done = batches(&app, issue).await.iter().filter(|b| b.2).count();
            (requests >= 4 && done < requests).then_some(())
        },
    )
    .await;
    first.kill();
    let at_the_kill = progress_of(&app, issue).await;
    let stranded = held_batches(&app, issue).await;
    assert!(
        at_the_kill.summary.sent < 300,
        "the campaign ended before the kill"
    );
    assert!(stranded >= 1, "no batch was in flight at the kill");

    let _second = Worker::start(&app, &app.email_server.uri(), &[]);
    let progress = wait_for_state_within(&app, issue, "done", Duration::from_secs(30)).await;

    assert_eq!(progress.summary.sent, 300);
    // Two senders: at most two batches of 20 were in flight.
    assert_everyone_sent_once_at_most_some_twice(&app, issue, 300, stranded * 20).await;
}

#[tokio::test]
async fn a_worker_killed_while_failing_over_to_smtp_leaves_nobody_out_and_sends_at_most_its_batches_in_flight_twice()
 {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    // Postmark is down, and slow to say so: every call probes it first
    // (the probe is due at once), so batches are in flight when the kill
    // comes, and each goes on to SMTP.
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(200)))
        .mount(&app.email_server)
        .await;
    let smtp = SmtpServer::start(SmtpServerOptions::default()).await;
    let port = smtp.settings().port.to_string();
    let failover = [
        ("APP_EMAIL_CLIENT__PROVIDERS", "postmark,smtp"),
        ("APP_EMAIL_CLIENT__OPEN_CIRCUIT_AFTER_FAILURES", "1"),
        ("APP_EMAIL_CLIENT__PROBE_AFTER_MILLISECONDS", "0"),
        ("APP_EMAIL_CLIENT__SMTP__HOST", "127.0.0.1"),
        ("APP_EMAIL_CLIENT__SMTP__PORT", port.as_str()),
        ("APP_EMAIL_CLIENT__SMTP__TLS", "none"),
        ("APP_EMAIL_CLIENT__SMTP__POOL_SIZE", "4"),
        // Long enough that no email times out on a busy machine: one that
        // did could have arrived, and would go again, outside the bound
        // this test checks. A call may take twice it, and a claim must
        // outlast two calls.
        ("APP_EMAIL_CLIENT__SMTP__TIMEOUT_MILLISECONDS", "1500"),
        ("APP_CAMPAIGNS__CLAIM_TIMEOUT_SECONDS", "7"),
    ];
    add_subscribers(&app, 300, "confirmed").await;
    let mut first = Worker::start(&app, &app.email_server.uri(), &failover);

    let issue = publish(&app, "Killed while failing over", "Hello {{name}}.").await;
    eventually_within(
        Duration::from_secs(20),
        "a few batches to go through SMTP and one to be in flight",
        || async {
            let received = smtp.received().len();
            (received >= 60 && held_batches(&app, issue).await >= 1).then_some(())
        },
    )
    .await;
    first.kill();
    let at_the_kill = progress_of(&app, issue).await;
    let stranded = held_batches(&app, issue).await;
    assert!(
        at_the_kill.summary.sent < 300,
        "the campaign ended before the kill"
    );
    assert!(stranded >= 1, "no batch was in flight at the kill");

    let _second = Worker::start(&app, &app.email_server.uri(), &failover);
    let progress = wait_for_state_within(&app, issue, "done", Duration::from_secs(30)).await;

    assert_eq!(progress.summary.sent, 300);
    let rows = ledger_rows(&app, issue).await;
    assert!(rows.iter().all(|row| row.status == "sent"));
    let mut received: HashMap<String, usize> = HashMap::new();
    for message in smtp.received() {
        *received.entry(message.rcpt_to).or_default() += 1;
    }
    for row in &rows {
        let address = row.email.as_ref().unwrap();
        assert!(received.contains_key(address), "{address} got nothing");
    }
    let twice = received.values().filter(|n| **n == 2).count();
    assert!(
        twice <= stranded * 20,
        "{twice} recipients got the issue twice; at most {} may",
        stranded * 20
    );
    assert!(
        received.values().all(|n| *n <= 2),
        "some got it three times"
    );
}

#[tokio::test]
async fn a_worker_killed_while_recording_an_audience_leaves_nobody_out_and_nobody_recorded_twice() {
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 100, "confirmed").await;
    let issue = publish(&app, "Killed while recording", "Hello {{name}}.").await;
    // Chunks of 20: the third, numbering from 41, waits for the test.
    let holder = hold_seq(&app, issue, 41).await;
    let mut first = Worker::start(&app, &app.email_server.uri(), &[]);
    eventually_within(
        Duration::from_secs(20),
        "the recording to wait at its third chunk",
        || async {
            let recorded = progress_of(&app, issue).await.summary.recipients;
            (recorded == 40 && lock_waits(&app).await > 0).then_some(())
        },
    )
    .await;

    first.kill();
    holder.rollback().await.unwrap();
    let _second = Worker::start(&app, &app.email_server.uri(), &[]);
    let progress = wait_for_state_within(&app, issue, "done", Duration::from_secs(30)).await;

    assert_eq!(progress.summary.recipients, 100);
    assert_everyone_sent_once_at_most_some_twice(&app, issue, 100, 2 * 20).await;
    // The batches cut 1..=100 into ranges with neither gap nor overlap.
    let mut next = 1;
    for (first_seq, last_seq, done, _) in batches(&app, issue).await {
        assert_eq!(first_seq, next, "batches leave a gap or overlap");
        assert!(done);
        next = last_seq + 1;
    }
    assert_eq!(next, 101);
}

/// When each batch reached the email API, through which path, and how many
/// messages it carried.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<(Instant, String, usize)>>>);

impl Respond for Arrivals {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let batch: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), request.url.path().to_owned(), batch.len()));
        accept_every_message(request)
    }
}

#[tokio::test]
async fn two_worker_processes_share_one_send_rate() {
    const CAP: usize = 200;
    const BATCH: usize = 20;
    const RECIPIENTS: usize = 600;
    let app = spawn_app_with(|s| s.delivery.run_in_server = false).await;
    let arrivals = Arrivals::default();
    Mock::given(method("POST"))
        .respond_with(arrivals.clone())
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, RECIPIENTS as i32, "confirmed").await;
    // One mock API, a path of its own for each process.
    let rate = [("APP_CAMPAIGNS__MESSAGES_PER_SECOND", "200")];
    let _a = Worker::start(&app, &format!("{}/a", app.email_server.uri()), &rate);
    let _b = Worker::start(&app, &format!("{}/b", app.email_server.uri()), &rate);
    eventually_within(
        Duration::from_secs(20),
        "the app and both workers to listen for work",
        || async {
            let listening: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                   AND query LIKE 'LISTEN %\"newsletter_work\"%'",
            )
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
            // One listener per process, the app's included.
            (listening == 3).then_some(())
        },
    )
    .await;

    let published = Instant::now();
    let issue = publish(&app, "Rated", "Hello {{name}}.").await;
    wait_for_state_within(&app, issue, "done", Duration::from_secs(30)).await;
    let took = published.elapsed();

    let mut arrivals = arrivals.0.lock().unwrap().clone();
    arrivals.sort_by_key(|(at, _, _)| *at);
    let total: usize = arrivals.iter().map(|(_, _, n)| n).sum();
    assert_eq!(total, RECIPIENTS, "each recipient sent once");
    for process in ["/a/", "/b/"] {
        assert!(
            arrivals
                .iter()
                .any(|(_, path, _)| path.starts_with(process)),
            "the worker at {process} sent nothing"
        );
    }
    // In any second: the cap; the burst an idle schedule lets go early; the
    // batch whose turn starts right at the end of the second, since a batch
    // goes whole; and a tenth of the cap for timers firing late on a busy
    // machine. Two processes each keeping the cap alone would send twice it.
    let busiest = arrivals
        .iter()
        .map(|(start, _, _)| {
            arrivals
                .iter()
                .filter(|(at, _, _)| *at >= *start && *at < *start + Duration::from_secs(1))
                .map(|(_, _, n)| n)
                .sum::<usize>()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= CAP + 2 * BATCH + CAP / 10,
        "{busiest} messages in one second at a cap of {CAP}"
    );
    // The schedule lets an idle fleet's first batch go a burst early, and a
    // batch goes at the start of its turn: all but those two batches' worth
    // take their turn at the cap.
    let least = Duration::from_secs_f64((RECIPIENTS - 2 * BATCH) as f64 / CAP as f64);
    assert!(took >= least, "{RECIPIENTS} messages sent in {took:?}");
}

#[tokio::test]
async fn each_delivery_keeps_the_message_id_the_api_gave_its_own_email() {
    let app = spawn_app().await;
    // Long ids, named after the recipient: together they are more than one
    // statement recording them carries, so they are recorded in parts.
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(|request: &Request| {
            let messages: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
            let answers: Vec<_> = messages
                .iter()
                .map(|message| {
                    let to = message["To"].as_str().unwrap();
                    serde_json::json!({
                        "ErrorCode": 0,
                        "Message": "OK",
                        "MessageID": format!("{}:{to}", "m".repeat(400)),
                    })
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(answers)
        })
        .mount(&app.email_server)
        .await;
    add_subscribers(&app, 60, "confirmed").await;

    let issue = publish(&app, "Ids", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    assert_eq!(progress.summary.sent, 60);
    let recorded: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "SELECT d.seq, s.email, d.message_id FROM deliveries d \
         JOIN subscriptions s ON s.id = d.subscriber_id WHERE d.issue_id = $1 ORDER BY d.seq",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(recorded.len(), 60);
    for (seq, email, message_id) in recorded {
        let message_id = message_id.unwrap_or_else(|| panic!("delivery {seq} has no MessageID"));
        assert!(
            message_id.ends_with(&format!(":{email}")),
            "delivery {seq} to {email} keeps the id of its own email, not {message_id}"
        );
    }
}

// ---------------------------------------------------------------------------
// Dependencies that go away mid-campaign.

#[tokio::test]
async fn a_database_outage_mid_campaign_loses_nobody_and_doubles_at_most_the_batch_in_flight() {
    let proxy = TcpProxy::to_postgres().await;
    let api = HeldEmailApi::answering_each_message(0).await;
    let app = spawn_app_with(|s| {
        s.database.port = proxy.port;
        s.email_client.base_url = api.uri.clone();
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
    })
    .await;
    add_subscribers(&app, 40, "confirmed").await;
    let issue = publish(&app, "Through an outage", "Hello {{name}}.").await;
    api.wait_for_requests(1).await;

    // A batch is with the API; Postgres goes away before its outcome can
    // be recorded, and the senders meet the outage.
    proxy.cut();
    let refused = proxy.refused();
    api.release();
    eventually("the app to meet the outage", || async {
        (proxy.refused() > refused).then_some(())
    })
    .await;
    proxy.restore();
    wait_for_state(&app, issue, "done").await;

    let rows = ledger_rows(&app, issue).await;
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|row| row.status == "sent"), "{rows:?}");
    let sent: Vec<Value> = api.requests().into_iter().flatten().collect();
    let received = messages_per_address(&sent, issue);
    assert_eq!(received.len(), 40, "everyone reached the email API");
    let twice = received.values().filter(|n| **n == 2).count();
    assert!(
        twice <= 10,
        "{twice} sent twice: more than the batch in flight"
    );
    assert!(received.values().all(|n| *n <= 2), "{received:?}");
}

#[tokio::test]
async fn without_redis_an_issue_still_goes_out_to_everyone_once() {
    let app = spawn_app_with(|s| {
        // Nothing listens there: the throttle keeps its schedule in the
        // process.
        s.redis_uri = secrecy::SecretString::from("redis://127.0.0.1:1");
        s.campaigns.sending.batch_size = 10;
        s.campaigns.audience_chunk = 10;
        s.campaigns.messages_per_second = 1_000;
    })
    .await;
    app.mock_email_api_ok().await;
    add_subscribers(&app, 30, "confirmed").await;

    let issue = publish(&app, "No Redis", "Hello {{name}}.").await;
    let progress = wait_for_state(&app, issue, "done").await;

    assert_eq!((progress.summary.sent, progress.summary.failed), (30, 0));
    let received = messages_per_address(&app.sent_emails().await, issue);
    assert_eq!(received.len(), 30);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
}
