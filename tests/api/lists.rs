//! Several lists: choosing them on the form, one confirmation for all of
//! them, and the readers who were here before lists.

use newsletter::subscribers::lists::{self, List, ListFields};
use uuid::Uuid;

use crate::campaigns::{add_subscribers, publish_to, wait_for_state};
use crate::helpers::{BROWSER_ACCEPT, TestApp, spawn_app};
use crate::newsroom::{Browser, create_admin};

async fn add_list(app: &TestApp, name: &str, public: bool, double_opt_in: bool) -> List {
    let mut connection = app.db_pool.acquire().await.unwrap();
    lists::create(
        &mut connection,
        &ListFields {
            name: name.into(),
            description: format!("All about {name}"),
            public,
            double_opt_in,
        },
    )
    .await
    .unwrap()
}

/// (list name, status) of every membership of the one address, by name.
pub(crate) async fn memberships_of(app: &TestApp, email: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT l.name, m.status FROM memberships m \
         JOIN lists l ON l.id = m.list_id JOIN subscriptions s ON s.id = m.subscriber_id \
         WHERE s.email = $1 ORDER BY l.name",
    )
    .bind(email)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

fn pairs(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

pub(crate) fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn a_sign_up_that_names_no_list_joins_the_default_list() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;

    let response = app
        .post_subscriptions("name=Ada&email=ada%40example.com")
        .await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Newsletter", "pending")])
    );
}

#[tokio::test]
async fn one_confirmation_confirms_every_list_chosen_on_the_form() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let events = add_list(&app, "Events", true, true).await;
    let (rust_id, events_id) = (rust.id.to_string(), events.id.to_string());

    let response = app
        .post_subscriptions(pairs(&[
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("list", &rust_id),
            ("list", &events_id),
            ("lists_offered", "1"),
        ]))
        .await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Events", "pending"), ("Rust weekly", "pending")])
    );

    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    assert_eq!(app.click(&link).await.status().as_u16(), 200);

    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Events", "confirmed"), ("Rust weekly", "confirmed")])
    );
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn a_confirmed_reader_joins_a_list_without_double_opt_in_at_once_and_is_told_so() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let quick = add_list(&app, "Quick notes", true, false).await;
    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.click(&link).await;

    let response = app
        .post_subscriptions(pairs(&[
            ("name", "Ada"),
            ("email", "ada@example.com"),
            ("list", &quick.id.to_string()),
        ]))
        .await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Newsletter", "confirmed"), ("Quick notes", "confirmed")])
    );
    let emails = app.wait_for_emails(2).await;
    let notice = emails[1]["TextBody"].as_str().unwrap();
    assert!(
        !notice.contains("subscription_token"),
        "a reader who needs no confirmation got a link: {notice}"
    );
}

#[tokio::test]
async fn a_confirmed_reader_joining_a_list_with_double_opt_in_confirms_it_by_a_new_link() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let careful = add_list(&app, "Careful", true, true).await;
    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    let first = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    app.click(&first).await;

    app.post_subscriptions(pairs(&[
        ("name", "Ada"),
        ("email", "ada@example.com"),
        ("list", &careful.id.to_string()),
    ]))
    .await;
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Careful", "pending"), ("Newsletter", "confirmed")])
    );
    let second = app
        .confirmation_links(&app.wait_for_emails(2).await[1])
        .html;
    // A confirmed address has a past here: its link asks for the button.
    let token = second
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .to_string();
    let pressed = app
        .api_client
        .post(format!("{}/subscriptions/confirm", app.address))
        .form(&[("subscription_token", token)])
        .send()
        .await
        .unwrap();

    assert_eq!(pressed.status().as_u16(), 200);
    assert_eq!(
        memberships_of(&app, "ada@example.com").await,
        owned(&[("Careful", "confirmed"), ("Newsletter", "confirmed")])
    );
}

#[tokio::test]
async fn a_list_that_is_not_open_to_sign_ups_is_refused_with_the_reason_and_nothing_is_stored() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let private = add_list(&app, "Staff", false, true).await;
    let archived = add_list(&app, "Old", true, true).await;
    {
        let mut connection = app.db_pool.acquire().await.unwrap();
        lists::set_archived(&mut connection, archived.id, true)
            .await
            .unwrap();
    }

    for list in [
        private.id.to_string(),
        archived.id.to_string(),
        Uuid::new_v4().to_string(),
        "not-a-list".to_owned(),
        "\0".to_owned(),
    ] {
        let response = app
            .post_subscriptions(pairs(&[
                ("name", "Ada"),
                ("email", "ada@example.com"),
                ("list", &list),
            ]))
            .await;

        assert_eq!(response.status().as_u16(), 400, "list {list:?}");
        let reason = response.text().await.unwrap();
        assert!(reason.contains("lists chosen does not exist"), "{reason}");
    }
    assert_eq!(app.subscriber_count().await, 0);
}

#[tokio::test]
async fn the_form_offers_the_public_lists_with_the_default_one_ticked_and_wants_at_least_one() {
    let app = spawn_app().await;
    let page = app.get("/").await.text().await.unwrap();
    assert!(
        !page.contains("type=\"checkbox\""),
        "one list needs no choosing"
    );

    let rust = add_list(&app, "Rust weekly", true, true).await;
    add_list(&app, "Staff only", false, true).await;
    let page = app.get("/").await.text().await.unwrap();

    assert!(page.contains("Rust weekly"), "{page}");
    assert!(!page.contains("Staff only"), "a private list was offered");
    assert!(page.contains(&format!("value=\"{}\">", rust.id)), "{page}");
    assert_eq!(page.matches(" checked>").count(), 1, "{page}");

    let refused = app
        .post_subscriptions_with(
            pairs(&[
                ("name", "Ada"),
                ("email", "ada@example.com"),
                ("lists_offered", "1"),
            ]),
            &[("Accept", BROWSER_ACCEPT)],
        )
        .await;
    assert_eq!(refused.status().as_u16(), 400);
    let again = refused.text().await.unwrap();
    assert!(again.contains("Choose at least one list."), "{again}");
    assert!(again.contains("value=\"ada@example.com\""), "{again}");
}

#[tokio::test]
async fn a_subscriber_written_without_lists_joins_the_default_list_and_follows_its_status() {
    // What the release before lists writes during a rolling update: a row
    // of `subscriptions`, nothing else.
    let app = spawn_app().await;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         VALUES ($1, 'old@example.com', 'Old', now(), 'pending_confirmation')",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        memberships_of(&app, "old@example.com").await,
        owned(&[("Newsletter", "pending")])
    );

    for (status, expected) in [
        ("confirmed", "confirmed"),
        ("unsubscribed", "unsubscribed"),
        ("confirmed", "confirmed"),
    ] {
        sqlx::query("UPDATE subscriptions SET status = $2, confirmed_at = now() WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(&app.db_pool)
            .await
            .unwrap();
        assert_eq!(
            memberships_of(&app, "old@example.com").await,
            owned(&[("Newsletter", expected)]),
            "after {status}"
        );
    }
}

/// Puts the subscriber on `list` with `status`.
async fn put_on(app: &TestApp, subscriber: Uuid, list: Uuid, status: &str) {
    sqlx::query(
        "INSERT INTO memberships (list_id, subscriber_id, status) VALUES ($1, $2, $3) \
         ON CONFLICT (list_id, subscriber_id) DO UPDATE SET status = EXCLUDED.status",
    )
    .bind(list)
    .bind(subscriber)
    .bind(status)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

async fn recipients_of(app: &TestApp, issue: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT subscriber_id FROM deliveries WHERE issue_id = $1 ORDER BY subscriber_id",
    )
    .bind(issue)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_issue_to_two_lists_reaches_their_confirmed_readers_once_and_no_one_else() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let events = add_list(&app, "Events", true, true).await;
    let other = add_list(&app, "Other", true, true).await;
    // Everyone starts on the default list, as add_subscribers writes them.
    let people = add_subscribers(&app, 5, "confirmed").await;
    let (both, only_rust, only_events, pending_on_rust, elsewhere) =
        (people[0], people[1], people[2], people[3], people[4]);
    put_on(&app, both, rust.id, "confirmed").await;
    put_on(&app, both, events.id, "confirmed").await;
    put_on(&app, only_rust, rust.id, "confirmed").await;
    put_on(&app, only_events, events.id, "confirmed").await;
    put_on(&app, pending_on_rust, rust.id, "pending").await;
    put_on(&app, elsewhere, other.id, "confirmed").await;

    let issue = publish_to(&app, "Two lists", "Hello.", Some(&[rust.id, events.id])).await;
    wait_for_state(&app, issue, "done").await;

    let mut expected = vec![both, only_rust, only_events];
    expected.sort();
    assert_eq!(recipients_of(&app, issue).await, expected);
    let sent = app.wait_for_emails(3).await;
    assert_eq!(sent.len(), 3, "{sent:?}");
}

#[tokio::test]
async fn the_compose_form_counts_the_audience_of_the_lists_ticked() {
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let people = add_subscribers(&app, 3, "confirmed").await;
    put_on(&app, people[0], rust.id, "confirmed").await;
    create_admin(&app, "ada", "a long enough password").await;
    let admin = Browser::signed_in(&app, "ada", "a long enough password").await;

    let form = admin
        .get("/admin/newsletters/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(form.contains("Rust weekly"), "{form}");
    assert!(form.contains("Send to 3 subscribers?"), "{form}");

    let counted = admin
        .submit(
            "/admin/newsletters",
            &[
                ("title", "Counted"),
                ("content", "Hello."),
                ("action", "count"),
                ("lists_offered", "1"),
                ("list", &rust.id.to_string()),
            ],
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(counted.contains("Send to 1 subscriber?"), "{counted}");

    let none = admin
        .submit(
            "/admin/newsletters",
            &[
                ("title", "Counted"),
                ("content", "Hello."),
                ("action", "count"),
                ("lists_offered", "1"),
            ],
        )
        .await;
    assert_eq!(none.status().as_u16(), 422);
    let none = none.text().await.unwrap();
    assert!(none.contains("Choose at least one list"), "{none}");
}

#[tokio::test]
async fn the_one_click_link_of_an_issue_to_a_list_leaves_only_that_list() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    put_on(&app, reader, rust.id, "confirmed").await;
    let issue = publish_to(&app, "Rust only", "Hello.", Some(&[rust.id])).await;
    wait_for_state(&app, issue, "done").await;
    let sent = app.wait_for_emails(1).await;
    let headers = sent[0]["Headers"].as_array().unwrap();
    let list_unsubscribe = headers
        .iter()
        .find(|h| h["Name"] == "List-Unsubscribe")
        .unwrap()["Value"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    assert!(
        list_unsubscribe.ends_with(&format!("?issue={issue}")),
        "{list_unsubscribe}"
    );
    let link = app.local(&reqwest::Url::parse(&list_unsubscribe).unwrap());

    let page = app.api_client.get(link.clone()).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Rust weekly"), "{page}");
    assert!(page.contains(&format!("?issue={issue}\"")), "{page}");
    let one_click = app
        .api_client
        .post(link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();

    assert_eq!(one_click.status().as_u16(), 200);
    let memberships: Vec<(String, String)> = sqlx::query_as(
        "SELECT l.name, m.status FROM memberships m JOIN lists l ON l.id = m.list_id \
         WHERE m.subscriber_id = $1 ORDER BY l.name",
    )
    .bind(reader)
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(
        memberships,
        owned(&[("Newsletter", "confirmed"), ("Rust weekly", "unsubscribed")])
    );
    assert_eq!(app.subscriber_status().await, "confirmed");
}

#[tokio::test]
async fn leaving_an_issues_list_that_was_the_readers_last_unsubscribes_them_from_everything() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    let default: Uuid = sqlx::query_scalar("SELECT id FROM lists WHERE is_default")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let issue = publish_to(&app, "Default only", "Hello.", Some(&[default])).await;
    wait_for_state(&app, issue, "done").await;
    let keys = newsletter::keys::Keys::derive(&app.settings.application.hmac_secret).unwrap();
    let token = keys.unsubscribe_token(reader);

    let one_click = app
        .api_client
        .post(format!("{}/unsubscribe/{token}?issue={issue}", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(one_click.status().as_u16(), 200);
    assert_eq!(app.subscriber_status().await, "unsubscribed");
    // A query that cannot be read leaves everything too, never refused.
    let garbled = app
        .api_client
        .post(format!("{}/unsubscribe/{token}?issue=%ZZ&&=", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status().as_u16(), 200);
}

#[tokio::test]
async fn a_reader_who_left_a_list_is_put_back_on_it_only_by_a_new_confirmation() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let quick = add_list(&app, "Quick notes", true, false).await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    put_on(&app, reader, quick.id, "unsubscribed").await;
    let email: String = sqlx::query_scalar("SELECT email FROM subscriptions WHERE id = $1")
        .bind(reader)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();

    // Anyone can type the address into the form.
    app.post_subscriptions(pairs(&[
        ("name", "Someone"),
        ("email", &email),
        ("list", &quick.id.to_string()),
    ]))
    .await;

    let status: String = sqlx::query_scalar(
        "SELECT status FROM memberships WHERE subscriber_id = $1 AND list_id = $2",
    )
    .bind(reader)
    .bind(quick.id)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(status, "pending");
    let sent = app.wait_for_emails(1).await;
    assert!(
        sent[0]["TextBody"]
            .as_str()
            .unwrap()
            .contains("subscription_token"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn unsubscribing_leaves_every_list_without_the_triggers_of_the_release_before_lists() {
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let reader = add_subscribers(&app, 1, "confirmed").await[0];
    put_on(&app, reader, rust.id, "confirmed").await;
    sqlx::query("DROP TRIGGER subscriptions_memberships_follow ON subscriptions")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let keys = newsletter::keys::Keys::derive(&app.settings.application.hmac_secret).unwrap();

    let response = app
        .api_client
        .post(format!(
            "{}/unsubscribe/{}",
            app.address,
            keys.unsubscribe_token(reader)
        ))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 200);
    let on: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM memberships WHERE subscriber_id = $1 AND status <> 'unsubscribed'",
    )
    .bind(reader)
    .fetch_one(&app.db_pool)
    .await
    .unwrap();
    assert_eq!(on, 0);
}

/// Saves a segment with this filter (as JSON) and returns its id.
async fn add_segment(app: &TestApp, name: &str, filter: &str) -> Uuid {
    use newsletter::subscribers::segments::{self, Filter, FilterSpec, SegmentName};
    let mut connection = app.db_pool.acquire().await.unwrap();
    let imports = newsletter::imports::store::known(&mut connection)
        .await
        .unwrap();
    let catalogue = segments::catalogue(&mut connection, imports).await.unwrap();
    let filter = Filter::parse(&FilterSpec::from_json(filter).unwrap(), &catalogue).unwrap();
    segments::store::create(&mut connection, &SegmentName::parse(name).unwrap(), &filter)
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn an_issue_narrowed_by_a_segment_is_counted_and_sent_to_the_readers_it_matches_only() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let people = add_subscribers(&app, 4, "confirmed").await;
    for person in &people {
        put_on(&app, *person, rust.id, "confirmed").await;
    }
    // Two of them signed up long ago.
    sqlx::query("UPDATE subscriptions SET subscribed_at = '2020-01-01' WHERE id = ANY($1)")
        .bind(&people[..2])
        .execute(&app.db_pool)
        .await
        .unwrap();
    let segment = add_segment(
        &app,
        "Early readers",
        r#"{"all": [{"signed_up": {"before": "2021-01-01"}}]}"#,
    )
    .await;
    create_admin(&app, "ada", "a long enough password").await;
    let admin = Browser::signed_in(&app, "ada", "a long enough password").await;
    let (rust_id, segment_id) = (rust.id.to_string(), segment.to_string());
    let form = |action: &'static str| {
        vec![
            ("title", "Early news"),
            ("content", "Hello."),
            ("action", action),
            ("lists_offered", "1"),
            ("list", ""),
            ("segment", ""),
        ]
    };

    let mut count = form("count");
    count[4].1 = &rust_id;
    count[5].1 = &segment_id;
    let counted = admin.submit("/admin/newsletters", &count).await;
    let counted = counted.text().await.unwrap();
    assert!(counted.contains("Send to 2 subscribers?"), "{counted}");

    let mut publish = form("publish");
    publish[4].1 = &rust_id;
    publish[5].1 = &segment_id;
    publish.push(("confirmed", "yes"));
    let key = Uuid::new_v4().to_string();
    publish.push(("idempotency_key", &key));
    let published = admin.submit("/admin/newsletters", &publish).await;
    assert_eq!(published.status().as_u16(), 303);
    let issue: Uuid = sqlx::query_scalar("SELECT id FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    wait_for_state(&app, issue, "done").await;

    let mut expected = people[..2].to_vec();
    expected.sort();
    assert_eq!(recipients_of(&app, issue).await, expected);
}

#[tokio::test]
async fn an_issue_narrowed_to_an_import_goes_to_the_readers_that_import_brought() {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let earlier = add_subscribers(&app, 2, "confirmed").await;
    for person in &earlier {
        put_on(&app, *person, rust.id, "confirmed").await;
    }
    let spring = crate::segments::import_onto(
        &app,
        "Rust weekly",
        &["fair1@example.com", "fair2@example.com"],
    )
    .await;
    let segment = add_segment(
        &app,
        "Spring fair",
        &format!(r#"{{"import": {{"id": "{spring}"}}}}"#),
    )
    .await;
    create_admin(&app, "ada", "a long enough password").await;
    let admin = Browser::signed_in(&app, "ada", "a long enough password").await;
    let (rust_id, segment_id) = (rust.id.to_string(), segment.to_string());
    let key = Uuid::new_v4().to_string();
    let published = admin
        .submit(
            "/admin/newsletters",
            &[
                ("title", "Thanks for visiting"),
                ("content", "Hello."),
                ("action", "publish"),
                ("lists_offered", "1"),
                ("list", &rust_id),
                ("segment", &segment_id),
                ("confirmed", "yes"),
                ("idempotency_key", &key),
            ],
        )
        .await;
    assert_eq!(published.status().as_u16(), 303);
    let issue: Uuid = sqlx::query_scalar("SELECT id FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    wait_for_state(&app, issue, "done").await;

    let mut expected: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM subscriptions WHERE email IN ('fair1@example.com', 'fair2@example.com')",
    )
    .fetch_all(&app.db_pool)
    .await
    .unwrap();
    expected.sort();
    assert_eq!(expected.len(), 2);
    assert_eq!(recipients_of(&app, issue).await, expected);
}

#[tokio::test]
async fn a_segment_that_names_no_saved_segment_is_refused_with_the_reason() {
    let app = spawn_app().await;
    add_list(&app, "Rust weekly", true, true).await;
    create_admin(&app, "ada", "a long enough password").await;
    let admin = Browser::signed_in(&app, "ada", "a long enough password").await;
    let missing = Uuid::new_v4().to_string();

    for (segment, status) in [(missing.as_str(), 422), ("not-a-segment", 400), ("\0", 400)] {
        let answer = admin
            .submit(
                "/admin/newsletters",
                &[
                    ("title", "T"),
                    ("content", "C"),
                    ("action", "count"),
                    ("segment", segment),
                ],
            )
            .await;
        assert_eq!(answer.status().as_u16(), status, "{segment:?}");
    }
}

#[tokio::test]
async fn the_lists_counts_stay_what_a_count_of_the_memberships_says_through_every_kind_of_change() {
    use newsletter::subscribers::memberships;
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly", true, true).await;
    let people = add_subscribers(&app, 150, "confirmed").await;
    for (i, person) in people.iter().enumerate() {
        let status = ["confirmed", "pending", "unsubscribed"][i % 3];
        put_on(&app, *person, rust.id, status).await;
    }
    // Moves between statuses, a bulk update, and erasures (the foreign
    // key's cascade deletes their memberships).
    sqlx::query(
        "UPDATE memberships SET status = 'confirmed' WHERE status = 'pending' AND list_id = $1",
    )
    .bind(rust.id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM subscriptions WHERE id = ANY($1)")
        .bind(&people[..20])
        .execute(&app.db_pool)
        .await
        .unwrap();

    let mut connection = app.db_pool.acquire().await.unwrap();
    let kept = memberships::counts_by_list(&mut connection).await.unwrap();
    let counted: Vec<(Uuid, String, i64)> =
        sqlx::query_as("SELECT list_id, status, count(*) FROM memberships GROUP BY 1, 2")
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    let mut expected: std::collections::HashMap<Uuid, memberships::ListCounts> = Default::default();
    for (list, status, n) in counted {
        let entry = expected.entry(list).or_default();
        match status.as_str() {
            "confirmed" => entry.confirmed = n,
            "pending" => entry.pending = n,
            _ => entry.unsubscribed = n,
        }
    }
    assert_eq!(kept, expected);
    assert_eq!(kept[&rust.id].pending, 0);
}
