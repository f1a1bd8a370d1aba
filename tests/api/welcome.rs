//! A list's welcome email, and what a confirmation link confirms: the
//! welcome goes once per reader and list, after their confirmation on it,
//! through the outbox on the transactional stream; a link confirms the
//! lists it was sent for and no other.

use newsletter::db::Db;
use newsletter::db::wakeups::Notifier;
use newsletter::keys::Keys;
use newsletter::newsletters::Welcome;
use newsletter::outbox::Outbox;
use newsletter::subscribers::lists::{self, List, ListFields};
use newsletter::subscribers::welcome::{Letterhead, Welcomer};
use reqwest::StatusCode;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::campaigns::add_subscribers;
use crate::helpers::{TestApp, eventually, spawn_app};
use crate::lists::{memberships_of, owned};
use crate::newsroom::{Browser, PASSWORD, audit_actions, create_admin, location};
use crate::unsubscribe::press_confirm;

/// The transactional stream, as the test settings name it.
const TRANSACTIONAL: &str = "outbound";

async fn add_list(app: &TestApp, name: &str, double_opt_in: bool) -> List {
    let mut connection = app.db_pool.acquire().await.unwrap();
    lists::create(
        &mut connection,
        &ListFields {
            name: name.into(),
            description: String::new(),
            public: true,
            double_opt_in,
        },
    )
    .await
    .unwrap()
}

/// Gives `list` a welcome email, as the admin's form stores it.
pub async fn set_welcome(app: &TestApp, list: Uuid, subject: &str, body: &str) {
    let welcome = Welcome::parse(subject, body).unwrap();
    let mut connection = app.db_pool.acquire().await.unwrap();
    lists::set_welcome(&mut connection, list, welcome.as_ref())
        .await
        .unwrap()
        .expect("the list exists");
}

/// (recipient, subject, stream) of every welcome in the outbox, by
/// subject. The outbox keeps a subject after sending; the rows are
/// written in the transaction that confirms, so they are there by the
/// time the answer is.
async fn welcomes(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT recipient, subject, message_stream FROM email_outbox \
         WHERE subject LIKE 'Welcome%' ORDER BY subject, enqueued_at",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

fn welcome_row(to: &str, subject: &str) -> (String, String, String) {
    (to.to_owned(), subject.to_owned(), TRANSACTIONAL.to_owned())
}

/// Signs `email` up to `lists` through the form, and returns the link of
/// the confirmation it was sent: the `sent`th email the test expects.
async fn sign_up(app: &TestApp, email: &str, lists: &[Uuid], sent: usize) -> reqwest::Url {
    let mut fields = vec![
        ("name".to_owned(), "Ada Lovelace".to_owned()),
        ("email".to_owned(), email.to_owned()),
    ];
    for list in lists {
        fields.push(("list".to_owned(), list.to_string()));
    }
    let response = app
        .post_subscriptions(serde_urlencoded::to_string(&fields).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK, "signing up {email}");
    let emails = app.wait_for_emails(sent).await;
    app.confirmation_links(&emails[sent - 1]).html
}

async fn subscriber_id(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM subscriptions WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

/// Saves the reader's page of lists with `lists` ticked.
async fn choose_lists(app: &TestApp, subscriber: Uuid, lists: &[Uuid]) {
    let keys = Keys::derive(&app.settings.application.hmac_secret).unwrap();
    let mut fields = vec![(
        "form_token".to_owned(),
        keys.preferences_form_token(subscriber),
    )];
    for list in lists {
        fields.push(("list".to_owned(), list.to_string()));
    }
    let response = app
        .api_client
        .post(format!(
            "{}/preferences/{}",
            app.address,
            keys.unsubscribe_token(subscriber).as_ref()
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(&fields).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_link_confirms_only_the_lists_it_was_sent_for() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let a = add_list(&app, "A list", true).await;
    let b = add_list(&app, "B list", true).await;
    let first = sign_up(&app, "ada@example.com", &[a.id], 1).await;
    // Someone else types the same address into the form, for another list.
    let second = sign_up(&app, "ada@example.com", &[b.id], 2).await;

    assert_eq!(app.click(&first).await.status(), StatusCode::OK);

    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("A list", "confirmed"), ("B list", "pending")])
    );
    assert_eq!(app.subscriber_status().await, "confirmed");
    // The second link still confirms its own list, by its button now that
    // the address is confirmed.
    assert_eq!(press_confirm(&app, &second).await.status(), StatusCode::OK);
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("A list", "confirmed"), ("B list", "confirmed")])
    );
}

#[tokio::test]
async fn a_link_from_the_release_before_confirms_every_pending_list_as_it_promised() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let a = add_list(&app, "A list", true).await;
    let b = add_list(&app, "B list", true).await;
    let first = sign_up(&app, "ada@example.com", &[a.id], 1).await;
    sign_up(&app, "ada@example.com", &[b.id], 2).await;
    // The previous release stored no lists with its tokens.
    sqlx::query("UPDATE confirmation_tokens SET list_ids = NULL")
        .execute(&app.db_pool)
        .await
        .unwrap();

    assert_eq!(app.click(&first).await.status(), StatusCode::OK);

    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("A list", "confirmed"), ("B list", "confirmed")])
    );
}

#[tokio::test]
async fn confirming_sends_the_welcome_of_each_list_that_has_one_once_on_the_transactional_stream() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    let events = add_list(&app, "Events", true).await;
    let quiet = add_list(&app, "Quiet", true).await;
    set_welcome(&app, rust.id, "Welcome to Rust weekly", "Crabs ahead.").await;
    set_welcome(&app, events.id, "Welcome to Events", "See you there.").await;
    let link = sign_up(&app, "ada@example.com", &[rust.id, events.id, quiet.id], 1).await;
    assert!(
        welcomes(&app).await.is_empty(),
        "welcomed before confirming"
    );

    assert_eq!(app.click(&link).await.status(), StatusCode::OK);

    let expected = vec![
        welcome_row("ada@example.com", "Welcome to Events"),
        welcome_row("ada@example.com", "Welcome to Rust weekly"),
    ];
    assert_eq!(welcomes(&app).await, expected, "one each, none for Quiet");

    // A second click of the link.
    assert_eq!(app.click(&link).await.status(), StatusCode::OK);
    assert_eq!(welcomes(&app).await, expected, "after a second click");

    // Leaving Rust weekly on the page of lists and joining it again.
    let reader = subscriber_id(&app, "ada@example.com").await;
    choose_lists(&app, reader, &[events.id, quiet.id]).await;
    choose_lists(&app, reader, &[rust.id, events.id, quiet.id]).await;
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[
            ("Events", "confirmed"),
            ("Quiet", "confirmed"),
            ("Rust weekly", "confirmed")
        ])
    );
    assert_eq!(
        welcomes(&app).await,
        expected,
        "after leaving and rejoining"
    );

    // The two welcomes and the confirmation reach the email API, and
    // nothing else does.
    let sent = app.wait_for_emails(3).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
}

#[tokio::test]
async fn a_reader_who_left_everything_and_signs_up_again_is_not_welcomed_twice() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    set_welcome(&app, rust.id, "Welcome to Rust weekly", "Crabs ahead.").await;
    let link = sign_up(&app, "ada@example.com", &[rust.id], 1).await;
    app.click(&link).await;
    let reader = subscriber_id(&app, "ada@example.com").await;
    // Leaving the last list is leaving everything.
    choose_lists(&app, reader, &[]).await;
    assert_eq!(app.subscriber_status().await, "unsubscribed");

    // The form, and the new link's button: a new consent.
    let again = sign_up(&app, "ada@example.com", &[rust.id], 3).await;
    assert_eq!(press_confirm(&app, &again).await.status(), StatusCode::OK);

    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Rust weekly", "confirmed")])
    );
    assert_eq!(
        welcomes(&app).await,
        vec![welcome_row("ada@example.com", "Welcome to Rust weekly")]
    );
}

#[tokio::test]
async fn a_confirmed_reader_joining_a_list_without_double_opt_in_gets_its_welcome() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let quick = add_list(&app, "Quick notes", false).await;
    let extra = add_list(&app, "Extra", true).await;
    set_welcome(&app, quick.id, "Welcome to Quick notes", "Short ones.").await;
    set_welcome(&app, extra.id, "Welcome to Extra", "More.").await;
    let link = sign_up(&app, "ada@example.com", &[], 1).await;
    app.click(&link).await;
    assert!(welcomes(&app).await.is_empty(), "the default list has none");

    // From the form: joined at once, welcomed at once.
    let response = app
        .post_subscriptions(
            serde_urlencoded::to_string([
                ("name", "Ada Lovelace"),
                ("email", "ada@example.com"),
                ("list", &quick.id.to_string()),
            ])
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        welcomes(&app).await,
        vec![welcome_row("ada@example.com", "Welcome to Quick notes")]
    );

    // From their page of lists: joining there is a confirmation too.
    let reader = subscriber_id(&app, "ada@example.com").await;
    let default: Uuid = sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    choose_lists(&app, reader, &[default, quick.id, extra.id]).await;
    assert_eq!(
        welcomes(&app).await,
        vec![
            welcome_row("ada@example.com", "Welcome to Extra"),
            welcome_row("ada@example.com", "Welcome to Quick notes"),
        ]
    );
}

#[tokio::test]
async fn hostile_markdown_is_sanitised_in_the_welcome_and_the_reader_gets_their_name_and_links() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    set_welcome(
        &app,
        rust.id,
        "Welcome to Rust weekly",
        "**Glad** you came.\n\n<script>alert('x')</script>\n\n\
         <img src=\"https://example.com/a.png\" onerror=\"alert(1)\">\n\n\
         [click](javascript:alert(1)) {{name}} <iframe src=\"https://evil.example\"></iframe>",
    )
    .await;
    let link = sign_up(&app, "ada@example.com", &[rust.id], 1).await;

    app.click(&link).await;

    let welcome = eventually("the welcome reaches the email API", || async {
        app.sent_emails()
            .await
            .into_iter()
            .find(|e| e["Subject"] == "Welcome to Rust weekly")
    })
    .await;
    assert_eq!(welcome["MessageStream"], TRANSACTIONAL);
    let html = welcome["HtmlBody"].as_str().unwrap();
    for hostile in ["<script", "onerror", "javascript:", "<iframe"] {
        assert!(!html.contains(hostile), "{hostile} survived: {html}");
    }
    assert!(html.contains("<strong>Glad</strong>"), "{html}");
    assert!(html.contains("Hello Ada Lovelace,"), "{html}");
    // Braces the author typed are text, not a placeholder filled in: an
    // entity in HTML, as typed in plain text.
    assert!(html.contains("&#123;&#123;name}}"), "{html}");
    let text = welcome["TextBody"].as_str().unwrap();
    assert!(text.contains("{{name}}"), "{text}");
    let reader = subscriber_id(&app, "ada@example.com").await;
    let token = Keys::derive(&app.settings.application.hmac_secret)
        .unwrap()
        .unsubscribe_token(reader);
    for body in [html, text] {
        assert!(
            body.contains(&format!("/unsubscribe/{}", token.as_ref())),
            "{body}"
        );
        assert!(
            body.contains(&format!("/preferences/{}", token.as_ref())),
            "{body}"
        );
    }
}

async fn signed_in(app: &TestApp) -> Browser {
    create_admin(app, "editor", PASSWORD).await;
    Browser::signed_in(app, "editor", PASSWORD).await
}

/// The list's welcome as stored: (subject, body), both `None` for none.
async fn stored_welcome(app: &TestApp, list: Uuid) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT welcome_subject, welcome_body FROM lists WHERE id = $1")
        .bind(list)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_previews_saves_and_removes_a_welcome_each_change_audited() {
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    let browser = signed_in(&app).await;
    let path = format!("/admin/lists/{}/welcome", rust.id);
    let fields = [
        ("welcome_subject", "Welcome aboard"),
        ("welcome_body", "# Hi\n\n*Crabs* <script>x()</script>"),
    ];

    let previewed = browser
        .submit(&path, &[fields[0], fields[1], ("action", "preview")])
        .await;
    assert_eq!(previewed.status(), StatusCode::OK);
    let page = previewed.text().await.unwrap();
    // The email, escaped into the frame's `srcdoc`.
    let frame = page
        .split("srcdoc=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no preview frame: {page}"));
    assert!(frame.contains("&#60;em&#62;Crabs&#60;/em&#62;"), "{frame}");
    assert!(frame.contains("Hello Ada Lovelace,"), "{frame}");
    assert!(!frame.contains("script"), "{frame}");
    assert_eq!(stored_welcome(&app, rust.id).await, (None, None));

    let saved = browser
        .submit(&path, &[fields[0], fields[1], ("action", "save")])
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&saved),
        format!("/admin/lists/{}?notice=welcome-saved", rust.id)
    );
    assert_eq!(
        stored_welcome(&app, rust.id).await,
        (Some(fields[0].1.to_owned()), Some(fields[1].1.to_owned()))
    );
    let page = browser
        .get(&format!("/admin/lists/{}", rust.id))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"Welcome aboard\""), "{page}");

    let removed = browser
        .submit(&path, &[("welcome_subject", " "), ("welcome_body", "")])
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(stored_welcome(&app, rust.id).await, (None, None));

    let detail: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'list-welcome-changed' ORDER BY id",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(detail.len(), 2, "{detail:?}");
    assert!(detail[0].contains(&rust.id.to_string()) && detail[0].ends_with("set"));
    assert!(detail[1].ends_with("removed"), "{detail:?}");
}

#[tokio::test]
async fn a_welcome_that_cannot_be_stored_is_refused_with_the_reason_and_nothing_changes() {
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    let browser = signed_in(&app).await;
    let path = format!("/admin/lists/{}/welcome", rust.id);
    let long_subject = "s".repeat(201);
    let long_body = "b".repeat(50_001);
    let before = audit_actions(&app).await.len();

    for (case, subject, body, reason) in [
        ("a body alone", "", "Hello", "needs a subject"),
        ("a subject alone", "Hi", "", "needs a body"),
        (
            "a long subject",
            long_subject.as_str(),
            "Hello",
            "at most 200",
        ),
        ("a long body", "Hi", long_body.as_str(), "at most 50000"),
        ("a NUL in the subject", "Hi\0", "Hello", "U+0000"),
        (
            "a line break in the subject",
            "Hi\nthere",
            "Hello",
            "U+000A",
        ),
        ("a bidi override", "Hi\u{202E}", "Hello", "U+202E"),
        ("a NUL in the body", "Hi", "Hel\0lo", "U+0000"),
    ] {
        let response = browser
            .submit(
                &path,
                &[
                    ("welcome_subject", subject),
                    ("welcome_body", body),
                    ("action", "save"),
                ],
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains(reason), "{case}: {page}");
    }
    let unknown_action = browser
        .submit(
            &path,
            &[
                ("welcome_subject", "Hi"),
                ("welcome_body", "Hello"),
                ("action", "delete"),
            ],
        )
        .await;
    assert_eq!(unknown_action.status(), StatusCode::BAD_REQUEST);
    let reason = unknown_action.text().await.unwrap();
    assert!(reason.contains("`delete` is not an action"), "{reason}");
    assert_eq!(stored_welcome(&app, rust.id).await, (None, None));
    assert_eq!(
        audit_actions(&app).await.len(),
        before,
        "a refusal was audited"
    );
}

#[tokio::test]
async fn two_transactions_racing_to_welcome_one_reader_send_one_email() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true).await;
    set_welcome(&app, rust.id, "Welcome to Rust weekly", "Crabs ahead.").await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    sqlx::query(
        "INSERT INTO memberships (list_id, subscriber_id, status, confirmed_at) \
         VALUES ($1, $2, 'confirmed', now())",
    )
    .bind(rust.id)
    .bind(reader)
    .execute(&app.db_pool)
    .await
    .unwrap();
    // What two replicas confirming the reader at the same moment run.
    let (outbox, _tasks) = Outbox::start(None, Notifier::silent(), CancellationToken::new());
    let welcomer = Welcomer {
        outbox,
        letterhead: Letterhead {
            newsletter: app.settings.newsletter.parse().unwrap(),
            base_url: app.settings.application.base_url.clone(),
            keys: Keys::derive(&app.settings.application.hmac_secret).unwrap(),
            message_stream: TRANSACTIONAL.to_owned(),
        },
    };
    let db = Db::connect_lazy(&app.settings.database, 2);
    let joined = [(reader, rust.id)];
    let (first_queued, go) = (Notify::new(), Notify::new());

    // The first records and queues, and holds its transaction open until
    // the second is waiting on the same row; then it commits.
    let first = async {
        db.transaction(async |tx| {
            let queued = welcomer.queue_for(tx, &joined).await?;
            first_queued.notify_one();
            go.notified().await;
            Ok(queued)
        })
        .await
        .unwrap()
    };
    let second = async {
        first_queued.notified().await;
        db.transaction(async |tx| welcomer.queue_for(tx, &joined).await)
            .await
            .unwrap()
    };
    let release = async {
        eventually(
            "the second transaction to wait on the row's lock",
            || async {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&app.db_pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            },
        )
        .await;
        go.notify_one();
    };
    let (first, second, ()) = tokio::join!(first, second, release);

    assert_eq!((first, second), (1, 0));
    assert_eq!(
        welcomes(&app).await,
        vec![welcome_row(
            &sqlx::query_scalar::<_, String>("SELECT email FROM subscriptions")
                .fetch_one(&app.db_pool)
                .await
                .unwrap(),
            "Welcome to Rust weekly"
        )]
    );
}
