//! Sending an issue through the delivery ledger, seen from the email API and
//! the ledger's tables. Issues are published through the ledger directly;
//! the admin pages that do it are tested in `newsletters`.

use newsletter::campaigns::ledger::{self, IdempotencyKey, NewIssue};
use newsletter::domain::Newsletter;
use newsletter::newsletters::{Draft, render};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{EMAIL_API, TestApp, accept_every_message, eventually, spawn_app};

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
    let admin = an_admin(app).await;
    let draft = Draft::parse(title, content).unwrap();
    let newsletter =
        Newsletter::parse("Test letters", "Tests, now and then.", "Test letters").unwrap();
    let rendered = render(&newsletter, &draft);
    let key = IdempotencyKey::parse(&Uuid::new_v4().to_string()).unwrap();
    let mut transaction = app.db_pool.begin().await.unwrap();
    let published = ledger::publish(
        &mut transaction,
        &key,
        NewIssue {
            title,
            content,
            rendered: &rendered,
            message_stream: &app.settings.email_client.broadcast_stream,
            send_at: None,
            created_by: admin,
        },
    )
    .await
    .unwrap();
    transaction.commit().await.unwrap();
    published.issue_id
}

/// Waits until the issue is in `state`; returns its progress.
pub async fn wait_for_state(app: &TestApp, issue: Uuid, state: &str) -> ledger::Progress {
    eventually(&format!("the issue to be {state}"), || async {
        let mut conn = app.db_pool.acquire().await.unwrap();
        let progress = ledger::progress(&mut conn, issue).await.unwrap().unwrap();
        (progress.summary.state().as_str() == state).then_some(progress)
    })
    .await
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
