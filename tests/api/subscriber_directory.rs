//! The admin's list and dashboard against a real Postgres: a search finds
//! subscribers by any part of their address or name, whichever way the
//! directory reads it; every statement the list and the export run keeps
//! its index under the generic plan a pooled connection may switch to; and
//! the dashboard's counts, kept by triggers, are exact right after each
//! kind of change.

use newsletter::keys::Keys;
use newsletter::subscribers::directory::{self, Selection};
use reqwest::StatusCode;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin};

/// The rows a page of the list shows, by address.
fn addresses_on(page: &str) -> Vec<String> {
    page.split("<tr><td>")
        .skip(1)
        .map(|row| row[..row.find('<').unwrap()].to_owned())
        .collect()
}

/// The link to the next page, if the page has one.
fn next_page(page: &str) -> Option<String> {
    page.find(r#"" rel="next""#).map(|end| {
        let start = page[..end].rfind(r#"<a href=""#).unwrap() + r#"<a href=""#.len();
        page[start..end].replace("&#38;", "&")
    })
}

/// Every address a search lists, following its pages.
async fn search_everything(browser: &Browser, query: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut next = Some(format!("/admin/subscribers?q={}", urlencoding(query)));
    while let Some(path) = next {
        let response = browser.get(&path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let page = response.text().await.unwrap();
        seen.extend(addresses_on(&page));
        next = next_page(&page);
        assert!(seen.len() < 1000, "the pages of {query} never end");
    }
    seen
}

fn urlencoding(text: &str) -> String {
    serde_urlencoded::to_string([("q", text)]).unwrap()["q=".len()..].to_owned()
}

async fn insert(app: &TestApp, email: &str, name: &str, minutes_ago: i32) {
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         VALUES (gen_random_uuid(), $1, $2, now() - make_interval(mins => $3), \
                 'pending_confirmation')",
    )
    .bind(email)
    .bind(name)
    .bind(minutes_ago)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_search_finds_subscribers_by_any_part_of_their_address_or_name_on_every_page() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    // More matches than two pages hold: the first pages come from the
    // newest rows, the last one, short of a page, from the trigram indexes.
    for i in 0..130 {
        insert(
            &app,
            &format!("reader{i}@letters.example"),
            &format!("Reader {i}"),
            i,
        )
        .await;
    }
    insert(&app, "grace@example.org", "Grace Under_Score", 500).await;
    insert(&app, "alan@example.org", "Alan UnderXScore", 501).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let mut by_domain = search_everything(&browser, "LETTERS.exam").await;
    let by_local_part = search_everything(&browser, "er7@lett").await;
    let by_name = search_everything(&browser, "ader 12").await;
    let underscore = search_everything(&browser, "r_s").await;
    let nobody = search_everything(&browser, "zebulon").await;

    assert_eq!(by_domain.len(), 130);
    by_domain.sort();
    by_domain.dedup();
    assert_eq!(by_domain.len(), 130, "a subscriber was listed twice");
    assert_eq!(by_local_part, ["reader7@letters.example"]);
    // Reader 12 and Reader 120 to 129, newest first.
    assert_eq!(by_name.len(), 11, "{by_name:?}");
    assert_eq!(by_name[0], "reader12@letters.example");
    assert_eq!(
        underscore,
        ["grace@example.org"],
        "`_` is matched literally"
    );
    assert!(nobody.is_empty());
}

#[tokio::test]
async fn a_search_shorter_than_three_characters_is_refused_with_a_reason() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    for path in [
        "/admin/subscribers?q=ab",
        "/admin/subscribers?q=%20%C3%A9%20",
        "/admin/subscribers.csv?q=ab",
    ] {
        let response = browser.get(path).await;

        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains("at least 3 characters"), "{path}: {body}");
    }
    let three = browser.get("/admin/subscribers?q=abc").await;
    assert_eq!(three.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_export_of_a_search_holds_every_match_across_its_windows() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    // 25,000 rows: the export reads them in windows of 10,000, and the
    // matches sit in the first, the last and between.
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         SELECT gen_random_uuid(), \
                CASE WHEN i % 1000 = 7 THEN 'needle' ELSE 'hay' END || i || '@example.com', \
                'Reader ' || i, now() - make_interval(secs => i), 'confirmed' \
         FROM generate_series(1, 25000) AS i",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    let response = browser.get("/admin/subscribers.csv?q=needle").await;

    assert_eq!(response.status(), StatusCode::OK);
    let csv = response.text().await.unwrap();
    let addresses: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap())
        .collect();
    let expected: Vec<String> = (0..25)
        .map(|k| format!("needle{}@example.com", k * 1000 + 7))
        .collect();
    assert_eq!(addresses, expected);
}

/// The plan Postgres makes of `statement` when it may not look at the
/// values: the generic plan a prepared statement switches to.
async fn generic_plan(connection: &mut PgConnection, statement: &str, arguments: &str) -> String {
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("PREPARE shape AS {statement}")))
        .execute(&mut *connection)
        .await
        .unwrap();
    // EXECUTE takes no parentheses when there is nothing in them.
    let execute = if arguments.is_empty() {
        "EXECUTE shape".to_owned()
    } else {
        format!("EXECUTE shape({arguments})")
    };
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {execute}")))
        .fetch_all(&mut *connection)
        .await
        .unwrap();
    sqlx::query("DEALLOCATE shape")
        .execute(&mut *connection)
        .await
        .unwrap();
    lines.join("\n")
}

#[tokio::test]
async fn every_statement_of_the_list_and_the_export_keeps_its_index_under_a_generic_plan() {
    let app = spawn_app().await;
    // Enough rows that reading them all, or sorting them, costs the planner
    // more than an index does; statistics, and trigram indexes with their
    // pending entries merged, as autovacuum leaves a live database.
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status) \
         SELECT gen_random_uuid(), 'reader' || i || '@example.com', 'Reader ' || i, \
                now() - make_interval(secs => i), \
                (ARRAY['confirmed', 'pending_confirmation', 'unsubscribed'])[1 + i % 3] \
         FROM generate_series(1, 200000) AS i",
    )
    .execute(&app.db_pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE subscriptions")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let mut connection = PgConnection::connect_with(&app.settings.database.with_db())
        .await
        .unwrap();

    for search in ["", "lovelace"] {
        for status in ["", "confirmed"] {
            for cursor in [false, true] {
                let selection = Selection::parse(search, status, "").unwrap();
                let mut arguments = Vec::new();
                if !search.is_empty() {
                    arguments.push(format!("'%{search}%'"));
                }
                if !status.is_empty() {
                    arguments.push(format!("'{status}'"));
                }
                if cursor {
                    arguments.push("now() - interval '1 hour'".to_owned());
                    arguments.push(format!("'{}'", Uuid::nil()));
                }
                for (name, statement) in directory::statements(&selection, cursor, 51, 1000) {
                    let shape =
                        format!("{name} (search {search:?}, status {status:?}, cursor {cursor})");
                    let plan =
                        generic_plan(&mut connection, &statement, &arguments.join(", ")).await;

                    assert!(
                        !plan.contains("Seq Scan"),
                        "{shape} reads the table:\n{plan}"
                    );
                    if name.contains("trigram") {
                        assert!(
                            plan.contains("Bitmap Index Scan on subscriptions_email_trgm_idx")
                                && plan
                                    .contains("Bitmap Index Scan on subscriptions_name_trgm_idx"),
                            "{shape} does not use the trigram indexes:\n{plan}"
                        );
                    } else {
                        // Either index on the time serves: the one with
                        // the status first, or the other with the status
                        // tested on the way.
                        assert!(
                            plan.contains("Index Scan Backward using subscriptions_")
                                && plan.contains("subscribed_at_id_idx"),
                            "{shape} does not walk a time index:\n{plan}"
                        );
                        assert!(!plan.contains("Sort"), "{shape} sorts:\n{plan}");
                        if cursor {
                            assert!(
                                plan.lines().any(|line| line.contains("Index Cond: ")
                                    && line.contains("ROW(subscribed_at, id) < ROW(")),
                                "{shape} does not start its walk at the cursor:\n{plan}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The counts the dashboard shows, by status, and today's sign-ups and
/// confirmations; and the same counted over the table.
async fn dashboard_counts(browser: &Browser) -> String {
    let page = browser.get("/admin/dashboard").await.text().await.unwrap();
    let figure = |marker: &str| {
        page.find(marker)
            .map(|at| {
                let rest = &page[at + marker.len()..];
                rest[..rest.find('<').unwrap()].to_owned()
            })
            .unwrap_or_else(|| "0".to_owned())
    };
    format!(
        "total {}, confirmed {}, pending {}, unsubscribed {}, signed up in 30 days {}",
        figure(r#"<dd id="total">"#),
        figure(r#"<dd data-status="confirmed">"#),
        figure(r#"<dd data-status="pending_confirmation">"#),
        figure(r#"<dd data-status="unsubscribed">"#),
        figure(r#"<dd id="sign-ups">"#),
    )
}

async fn counted(app: &TestApp) -> String {
    let (total, confirmed, pending, unsubscribed, recent): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status = 'confirmed'), \
                    count(*) FILTER (WHERE status = 'pending_confirmation'), \
                    count(*) FILTER (WHERE status = 'unsubscribed'), \
                    count(*) FILTER (WHERE subscribed_at >= \
                        ((now() AT TIME ZONE 'UTC')::date - 29)::timestamp AT TIME ZONE 'UTC') \
             FROM subscriptions",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    format!(
        "total {total}, confirmed {confirmed}, pending {pending}, unsubscribed {unsubscribed}, \
         signed up in 30 days {recent}"
    )
}

async fn id_of(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM subscriptions WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dashboard_counts_are_exact_right_after_sign_ups_confirmations_unsubscribes_and_erasures()
 {
    let app = spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin(&app, "ada", PASSWORD).await;
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;
    let people = ["ada@example.com", "bob@example.com", "cy@example.com"];
    let mut steps = Vec::new();

    for (n, email) in people.iter().enumerate() {
        let response = app
            .post_subscriptions(format!(
                "name=Person%20{n}&email={}",
                email.replace('@', "%40")
            ))
            .await;
        assert!(
            response.status().is_success(),
            "{email}: {}",
            response.status()
        );
    }
    steps.push(("after three sign-ups", dashboard_counts(&browser).await));

    let emails = app.wait_for_emails(3).await;
    let to_ada = emails
        .iter()
        .find(|email| email["To"].as_str().unwrap().contains("ada@example.com"))
        .unwrap();
    let confirmed = app.click(&app.confirmation_links(to_ada).html).await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    steps.push(("after a confirmation", dashboard_counts(&browser).await));

    let ada = id_of(&app, "ada@example.com").await;
    let token = Keys::derive(&app.settings.application.hmac_secret)
        .unwrap()
        .unsubscribe_token(ada)
        .to_string();
    let unsubscribed = app
        .api_client
        .post(format!("{}/unsubscribe/{token}", app.address))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(unsubscribed.status().is_success());
    steps.push(("after an unsubscribe", dashboard_counts(&browser).await));

    let bob = id_of(&app, "bob@example.com").await;
    let erased = browser.erase_subscriber(bob, "bob@example.com").await;
    assert_eq!(erased.status(), StatusCode::SEE_OTHER);
    steps.push(("after an erasure", dashboard_counts(&browser).await));

    assert_eq!(
        steps,
        [
            (
                "after three sign-ups",
                "total 3, confirmed 0, pending 3, unsubscribed 0, signed up in 30 days 3"
                    .to_owned()
            ),
            (
                "after a confirmation",
                "total 3, confirmed 1, pending 2, unsubscribed 0, signed up in 30 days 3"
                    .to_owned()
            ),
            (
                "after an unsubscribe",
                "total 3, confirmed 0, pending 2, unsubscribed 1, signed up in 30 days 3"
                    .to_owned()
            ),
            (
                "after an erasure",
                "total 2, confirmed 0, pending 1, unsubscribed 1, signed up in 30 days 2"
                    .to_owned()
            ),
        ]
    );
    assert_eq!(steps.last().unwrap().1, counted(&app).await);
}

#[tokio::test]
async fn the_dashboard_counts_stay_exact_through_many_small_changes_and_their_folding() {
    let app = spawn_app().await;
    create_admin(&app, "ada", PASSWORD).await;
    // One statement per change, as confirmations and unsubscribes come:
    // hundreds of ledger rows, folded every 64th along the way.
    for i in 0..200 {
        insert(&app, &format!("p{i}@example.com"), "P", i * 60).await;
    }
    for i in (0..200).step_by(2) {
        sqlx::query(
            "UPDATE subscriptions SET status = 'confirmed', confirmed_at = now() WHERE email = $1",
        )
        .bind(format!("p{i}@example.com"))
        .execute(&app.db_pool)
        .await
        .unwrap();
    }
    for i in (0..200).step_by(6) {
        sqlx::query("UPDATE subscriptions SET status = 'unsubscribed' WHERE email = $1")
            .bind(format!("p{i}@example.com"))
            .execute(&app.db_pool)
            .await
            .unwrap();
    }
    sqlx::query("DELETE FROM subscriptions WHERE email LIKE 'p1%'")
        .execute(&app.db_pool)
        .await
        .unwrap();
    let ledger_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriber_counts")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let browser = Browser::signed_in(&app, "ada", PASSWORD).await;

    assert_eq!(dashboard_counts(&browser).await, counted(&app).await);
    // 200 sign-ups over 9 days and 3 statuses: at most 27 keys, where
    // without folding there would be a row per statement (over 400).
    assert!(
        ledger_rows < 150,
        "{ledger_rows} ledger rows were never folded"
    );
}
