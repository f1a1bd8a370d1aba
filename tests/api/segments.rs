//! Segments: filters compiled to SQL and run against Postgres (AND/OR over
//! lists and attributes, audiences counted once per reader and without the
//! suppressed, hostile and stray values, generic plans, the count's time
//! limit), and the admin pages that save, count, change and delete them.

use newsletter::subscribers::segments::{
    self, Count, Filter, FilterSpec, Walk, push_audience, push_filter,
};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin, location};

/// Two lists beside the default one, and readers on them with attributes.
struct Readers {
    app: TestApp,
    rust: Uuid,
    events: Uuid,
}

async fn add_list(app: &TestApp, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO lists (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn define(app: &TestApp, name: &str, kind: &str) {
    sqlx::query("INSERT INTO attribute_definitions (name, kind) VALUES ($1, $2)")
        .bind(name)
        .bind(kind)
        .execute(&app.db_pool)
        .await
        .unwrap();
}

/// A subscriber with `status`, on `lists` (each with its membership's
/// status), with `attributes`; signed up and confirmed on `day`.
async fn add_reader(
    app: &TestApp,
    email: &str,
    status: &str,
    day: &str,
    lists: &[(Uuid, &str)],
    attributes: serde_json::Value,
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO subscriptions \
             (id, email, name, subscribed_at, status, confirmed_at, memberships_written, attributes) \
         VALUES ($1, $2, $2, ($3::date::timestamp AT TIME ZONE 'UTC'), $4, \
                 CASE WHEN $4 = 'confirmed' THEN ($3::date::timestamp AT TIME ZONE 'UTC') + interval '1 hour' END, \
                 true, $5::text::jsonb)",
    )
    .bind(id)
    .bind(email)
    .bind(day)
    .bind(status)
    .bind(attributes.to_string())
    .execute(&app.db_pool)
    .await
    .unwrap();
    for (list, membership) in lists {
        sqlx::query("INSERT INTO memberships (list_id, subscriber_id, status) VALUES ($1, $2, $3)")
            .bind(list)
            .bind(id)
            .bind(membership)
            .execute(&app.db_pool)
            .await
            .unwrap();
    }
    id
}

async fn readers() -> Readers {
    let app = spawn_app().await;
    let rust = add_list(&app, "Rust weekly").await;
    let events = add_list(&app, "Events").await;
    define(&app, "city", "text").await;
    define(&app, "age", "number").await;
    define(&app, "birthday", "date").await;
    define(&app, "vip", "boolean").await;
    let on = |list| (list, "confirmed");
    add_reader(
        &app,
        "ada@example.com",
        "confirmed",
        "2026-01-10",
        &[on(rust), on(events)],
        json!({"city": "Paris", "age": 36, "birthday": "1990-12-10", "vip": true}),
    )
    .await;
    add_reader(
        &app,
        "grace@example.com",
        "confirmed",
        "2026-02-10",
        &[on(rust)],
        json!({"city": "paris", "age": 17, "vip": false}),
    )
    .await;
    add_reader(
        &app,
        "linus@example.com",
        "confirmed",
        "2026-03-10",
        &[on(events), (rust, "pending")],
        json!({"city": "Helsinki", "age": 54.5}),
    )
    .await;
    add_reader(
        &app,
        "pending@example.com",
        "pending_confirmation",
        "2026-03-10",
        &[(rust, "pending")],
        json!({"city": "Paris"}),
    )
    .await;
    Readers { app, rust, events }
}

impl Readers {
    async fn filter(&self, json: serde_json::Value) -> Filter {
        let mut connection = self.app.db_pool.acquire().await.unwrap();
        let imports = newsletter::imports::store::known(&mut connection)
            .await
            .unwrap();
        let catalogue = segments::catalogue(&mut connection, imports).await.unwrap();
        let spec = FilterSpec::from_json(&json.to_string()).unwrap();
        Filter::parse(&spec, &catalogue).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    /// The addresses `filter` selects among every subscriber, by address:
    /// the same whichever way the statement reads the subscribers.
    async fn matching(&self, json: serde_json::Value) -> Vec<String> {
        let filter = self.filter(json.clone()).await;
        let mut selected = Vec::new();
        for walk in [Walk::ById, Walk::Whole] {
            let mut query =
                QueryBuilder::<Postgres>::new("SELECT s.email FROM subscriptions s WHERE ");
            push_filter(&mut query, &filter, walk);
            query.push(" ORDER BY s.email");
            let mut connection = self.app.db_pool.acquire().await.unwrap();
            let emails: Vec<String> = query
                .build_query_scalar()
                .fetch_all(&mut *connection)
                .await
                .unwrap();
            selected.push(emails);
        }
        assert_eq!(selected[0], selected[1], "{json}: by id, then whole");
        selected.remove(0)
    }

    /// The audience of `lists` narrowed by `filter`, as the ledger would
    /// record it.
    async fn audience(&self, json: serde_json::Value, lists: &[Uuid]) -> Vec<String> {
        let filter = self.filter(json).await;
        let mut query = QueryBuilder::<Postgres>::new("SELECT s.email FROM subscriptions s WHERE ");
        push_audience(&mut query, &filter, lists);
        query.push(" ORDER BY s.email");
        let mut connection = self.app.db_pool.acquire().await.unwrap();
        query
            .build_query_scalar()
            .fetch_all(&mut *connection)
            .await
            .unwrap()
    }

    /// The count of `filter` over both lists, planned for its values and
    /// then generic (`force_generic_plan`), which must agree; with the
    /// connection, left in the generic mode.
    async fn count_custom_then_generic(&self, filter: &Filter) -> (Count, PgConnection) {
        let lists = [self.rust, self.events];
        let mut connection = PgConnection::connect_with(&self.app.settings.database.with_db())
            .await
            .unwrap();
        let custom = segments::count(&mut connection, filter, &lists)
            .await
            .unwrap();
        sqlx::query("SET plan_cache_mode = force_generic_plan")
            .execute(&mut connection)
            .await
            .unwrap();
        // Twice: a prepared statement's first runs may be planned for their
        // values; with the mode forced, each is generic.
        for _ in 0..2 {
            let generic = segments::count(&mut connection, filter, &lists)
                .await
                .unwrap();
            assert_eq!(generic, custom);
        }
        (custom, connection)
    }

    async fn count(&self, json: serde_json::Value, lists: &[Uuid]) -> Count {
        let filter = self.filter(json).await;
        let mut connection = self.app.db_pool.acquire().await.unwrap();
        segments::count(&mut connection, &filter, lists)
            .await
            .unwrap()
    }
}

/// Imports `addresses` onto the list called `list_name` the way the import
/// page and command do, attested so that they are confirmed, and returns
/// the import's id.
pub async fn import_onto(app: &TestApp, list_name: &str, addresses: &[&str]) -> Uuid {
    use newsletter::domain::ConsentSource;
    use newsletter::imports::{ImportRequest, Importer, ListRef, Outcome};
    let path = std::env::temp_dir().join(format!("segment-import-{}.csv", Uuid::new_v4()));
    let mut contents = String::from("email\n");
    for address in addresses {
        contents.push_str(address);
        contents.push('\n');
    }
    std::fs::write(&path, contents).unwrap();
    let outcome = Importer::from_settings(&app.settings)
        .unwrap()
        .run(
            ImportRequest {
                path: path.clone(),
                file_name: "spring.csv".into(),
                list: ListRef::Name(list_name.into()),
                consent: Some(ConsentSource::parse("The spring fair's sign-up sheet").unwrap()),
                welcome: false,
                started_by: "test".into(),
            },
            |_| {},
        )
        .await;
    let _ = std::fs::remove_file(&path);
    match outcome.unwrap() {
        Outcome::Imported(record) => record.id,
        Outcome::AlreadyImported(record) => panic!("already imported: {record:?}"),
    }
}

fn attribute(name: &str, op: &str, value: serde_json::Value) -> serde_json::Value {
    json!({"attribute": {"name": name, "op": op, "value": value}})
}

fn emails(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("{n}@example.com")).collect()
}

#[tokio::test]
async fn all_needs_every_condition_and_any_needs_one() {
    let r = readers().await;
    let paris = attribute("city", "eq", json!("PARIS"));
    let adult = attribute("age", "ge", json!(18));

    assert_eq!(
        r.matching(json!({"all": [paris, adult]})).await,
        emails(&["ada"]),
        "all"
    );
    assert_eq!(
        r.matching(json!({"any": [paris, adult]})).await,
        emails(&["ada", "grace", "linus", "pending"]),
        "any"
    );
    assert_eq!(
        r.matching(json!({"all": [
            {"list": {"id": r.rust}},
            {"any": [attribute("vip", "is_true", json!(null)), attribute("age", "lt", json!(18))]},
        ]}))
        .await,
        emails(&["ada", "grace"]),
        "nested"
    );
    assert_eq!(
        r.matching(json!({"all": []})).await.len(),
        4,
        "an empty all"
    );
}

#[tokio::test]
async fn each_condition_selects_what_it_says() {
    let r = readers().await;
    let cases = [
        (
            json!({"list": {"id": r.rust, "status": "pending"}}),
            vec!["linus", "pending"],
        ),
        (json!({"list": {"id": r.events}}), vec!["ada", "linus"]),
        (json!({"signed_up": {"before": "2026-02-10"}}), vec!["ada"]),
        (
            json!({"signed_up": {"after": "2026-02-10"}}),
            vec!["linus", "pending"],
        ),
        (
            json!({"confirmed": {"after": "2026-01-31"}}),
            vec!["grace", "linus"],
        ),
        (attribute("city", "ne", json!("paris")), vec!["linus"]),
        (attribute("city", "contains", json!("ELS")), vec!["linus"]),
        (
            attribute("city", "starts_with", json!("par")),
            vec!["ada", "grace", "pending"],
        ),
        (attribute("age", "eq", json!("54.5")), vec!["linus"]),
        (
            attribute("age", "ne", json!(36)),
            vec!["grace", "linus", "pending"],
        ),
        (attribute("age", "lt", json!(36)), vec!["grace"]),
        (attribute("age", "le", json!(36)), vec!["ada", "grace"]),
        (attribute("age", "gt", json!(36)), vec!["linus"]),
        (
            attribute("birthday", "before", json!("1991-01-01")),
            vec!["ada"],
        ),
        (attribute("birthday", "after", json!("1990-12-10")), vec![]),
        (
            attribute("birthday", "on", json!("1990-12-10")),
            vec!["ada"],
        ),
        (attribute("vip", "is_false", json!(null)), vec!["grace"]),
        (
            attribute("vip", "has_value", json!(null)),
            vec!["ada", "grace"],
        ),
        (
            attribute("birthday", "has_no_value", json!(null)),
            vec!["grace", "linus", "pending"],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            r.matching(filter.clone()).await,
            emails(&expected),
            "{filter}"
        );
    }
}

#[tokio::test]
async fn an_audience_is_confirmed_readers_of_the_lists_each_counted_once() {
    let r = readers().await;
    let both = [r.rust, r.events];
    // Ada is on both lists: once. Linus is pending on Rust weekly and
    // confirmed on Events; the reader waiting for confirmation is nobody's
    // audience.
    assert_eq!(
        r.audience(json!({"all": []}), &both).await,
        emails(&["ada", "grace", "linus"])
    );
    assert_eq!(
        r.audience(json!({"all": []}), &[r.rust]).await,
        emails(&["ada", "grace"])
    );
    assert_eq!(r.count(json!({"all": []}), &both).await, Count::Counted(3));
    assert_eq!(
        r.count(attribute("city", "eq", json!("paris")), &both)
            .await,
        Count::Counted(2)
    );
    assert_eq!(r.count(json!({"all": []}), &[]).await, Count::Counted(0));
}

#[tokio::test]
async fn a_suppressed_reader_is_not_counted() {
    let r = readers().await;
    let both = [r.rust, r.events];
    sqlx::query(
        "INSERT INTO suppressions (address_hash, email, reason, changed_at) \
         VALUES ('\\x01', 'grace@example.com', 'hard_bounce', now())",
    )
    .execute(&r.app.db_pool)
    .await
    .unwrap();
    assert_eq!(r.count(json!({"all": []}), &both).await, Count::Counted(2));
}

#[tokio::test]
async fn stray_attribute_values_make_a_condition_false_never_the_statement_fail() {
    let r = readers().await;
    let rust = (r.rust, "confirmed");
    add_reader(
        &r.app,
        "stray@example.com",
        "confirmed",
        "2026-01-01",
        &[rust],
        json!({"city": 12, "age": "not a number", "birthday": "30/02/2026", "vip": "yes"}),
    )
    .await;
    add_reader(
        &r.app,
        "huge@example.com",
        "confirmed",
        "2026-01-01",
        &[rust],
        json!({"age": {"nested": [1, 2]}, "birthday": 19901210, "city": null}),
    )
    .await;
    // A number far past what a double holds, as a value may be stored.
    sqlx::query(
        "UPDATE subscriptions SET attributes = '{\"age\": 1e400, \"birthday\": \"9999-99-99\"}' \
         WHERE email = 'pending@example.com'",
    )
    .execute(&r.app.db_pool)
    .await
    .unwrap();
    for op in ["eq", "ne", "lt", "le", "gt", "ge"] {
        let matched = r.matching(attribute("age", op, json!(1))).await;
        assert!(
            !matched.contains(&"stray@example.com".to_owned()) || op == "ne",
            "{op}"
        );
    }
    assert_eq!(
        r.matching(attribute("age", "gt", json!(1e15))).await,
        emails(&["pending"]),
        "a huge stored number still compares"
    );
    for op in ["before", "after", "on"] {
        let matched = r
            .matching(attribute("birthday", op, json!("2026-02-28")))
            .await;
        assert!(!matched.contains(&"stray@example.com".to_owned()), "{op}");
    }
    for op in ["eq", "contains", "starts_with"] {
        let matched = r.matching(attribute("city", op, json!("12"))).await;
        assert!(matched.is_empty(), "{op} matched a number: {matched:?}");
    }
    assert_eq!(
        r.matching(attribute("vip", "is_true", json!(null))).await,
        emails(&["ada"])
    );
    assert!(
        !r.matching(attribute("city", "has_value", json!(null)))
            .await
            .contains(&"huge@example.com".to_owned()),
        "a JSON null is no value"
    );
}

#[tokio::test]
async fn hostile_values_are_only_values() {
    let r = readers().await;
    for hostile in [
        "'; DROP TABLE subscriptions; --",
        "\\' OR 1=1 --",
        "$1",
        "%",
        "_",
        "\"",
    ] {
        for op in ["eq", "contains", "starts_with"] {
            let matched = r.matching(attribute("city", op, json!(hostile))).await;
            assert!(matched.is_empty(), "{op} {hostile} matched {matched:?}");
        }
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
        .fetch_one(&r.app.db_pool)
        .await
        .unwrap();
    assert_eq!(left, 4);
}

#[tokio::test]
async fn an_import_condition_selects_the_readers_whose_memberships_that_import_made() {
    let r = readers().await;
    // Ada is on Events already: the import makes her no membership. Grace
    // joins Events by it; Hopper is new.
    let spring = import_onto(
        &r.app,
        "Events",
        &["ada@example.com", "grace@example.com", "hopper@example.com"],
    )
    .await;
    let autumn = import_onto(&r.app, "Rust weekly", &["turing@example.com"]).await;
    let from_spring = json!({"import": {"id": spring}});
    assert_eq!(
        r.matching(from_spring.clone()).await,
        emails(&["grace", "hopper"])
    );
    assert_eq!(
        r.matching(json!({"import": {"id": autumn}})).await,
        emails(&["turing"])
    );
    assert_eq!(
        r.matching(json!({"any": [from_spring.clone(), {"import": {"id": autumn}}]}))
            .await,
        emails(&["grace", "hopper", "turing"])
    );
    assert_eq!(
        r.matching(json!({"all": [from_spring.clone(), attribute("city", "eq", json!("Paris"))]}))
            .await,
        emails(&["grace"])
    );
    // Counted within the audience of the lists: Turing is on Rust weekly
    // only, and the spring import is about Events.
    assert_eq!(
        r.count(from_spring.clone(), &[r.rust, r.events]).await,
        Count::Counted(2)
    );
    assert_eq!(r.audience(from_spring, &[r.rust]).await, emails(&["grace"]));
}

#[tokio::test]
async fn an_import_condition_runs_under_a_generic_plan() {
    let r = readers().await;
    let spring = import_onto(
        &r.app,
        "Events",
        &["grace@example.com", "hopper@example.com"],
    )
    .await;
    let filter = r
        .filter(json!({"any": [
            {"import": {"id": spring}},
            {"all": [{"import": {"id": spring}}, attribute("age", "lt", json!(18))]},
        ]}))
        .await;
    let (custom, mut connection) = r.count_custom_then_generic(&filter).await;
    assert_eq!(custom, Count::Counted(2));
    // The per-id walk, as an issue's audience is recorded, generic too.
    let mut query = QueryBuilder::<Postgres>::new("SELECT s.email FROM subscriptions s WHERE ");
    push_filter(&mut query, &filter, Walk::ById);
    query.push(" ORDER BY s.email");
    let by_id: Vec<String> = query
        .build_query_scalar()
        .fetch_all(&mut connection)
        .await
        .unwrap();
    assert_eq!(by_id, emails(&["grace", "hopper"]));
}

#[tokio::test]
async fn every_condition_runs_under_a_generic_plan() {
    let r = readers().await;
    let filter = r
        .filter(json!({"any": [
            {"all": [
                {"list": {"id": r.rust, "status": "confirmed"}},
                {"signed_up": {"after": "2026-01-01"}},
                {"confirmed": {"before": "2026-12-31"}},
            ]},
            attribute("city", "ne", json!("Paris")),
            attribute("city", "contains", json!("a")),
            attribute("city", "starts_with", json!("P")),
            attribute("age", "le", json!(40.5)),
            attribute("birthday", "on", json!("1990-12-10")),
            attribute("vip", "is_true", json!(null)),
            attribute("birthday", "has_no_value", json!(null)),
        ]}))
        .await;
    let lists = [r.rust, r.events];
    let (custom, mut connection) = r.count_custom_then_generic(&filter).await;
    assert_eq!(custom, Count::Counted(3));
    let mut query = QueryBuilder::<Postgres>::new("EXPLAIN SELECT 1 FROM subscriptions s WHERE ");
    push_audience(&mut query, &filter, &lists);
    let plan: Vec<String> = query
        .build_query_scalar()
        .fetch_all(&mut connection)
        .await
        .unwrap();
    assert!(!plan.is_empty());
}

#[tokio::test]
async fn a_count_past_its_second_is_unavailable_and_leaves_the_transaction_usable() {
    let r = readers().await;
    let filter = r.filter(json!({"all": []})).await;
    let mut holder = r.app.db_pool.acquire().await.unwrap();
    let mut lock = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let mut connection = PgConnection::connect_with(&r.app.settings.database.with_db())
        .await
        .unwrap();
    let mut transaction = connection.begin().await.unwrap();
    let before: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut *transaction)
        .await
        .unwrap();
    let count = segments::count(&mut transaction, &filter, &[r.rust])
        .await
        .unwrap();
    assert_eq!(count, Count::Unavailable);
    let after: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut *transaction)
        .await
        .expect("the transaction is still usable");
    assert_eq!(after, before, "the count's limit stayed with the count");
    transaction.commit().await.unwrap();
    lock.rollback().await.unwrap();
}

// The admin pages.

async fn signed_in(app: &TestApp) -> Browser {
    create_admin(app, "grace", PASSWORD).await;
    Browser::signed_in(app, "grace", PASSWORD).await
}

#[tokio::test]
async fn an_admin_picks_an_import_by_its_file_and_saves_a_segment_of_its_readers() {
    let r = readers().await;
    let spring = import_onto(
        &r.app,
        "Events",
        &["grace@example.com", "hopper@example.com"],
    )
    .await;
    let browser = signed_in(&r.app).await;
    let field = format!("import:{spring}");

    let form = browser.get("/admin/segments").await.text().await.unwrap();
    assert!(
        form.contains(&format!(
            r#"<option value="{field}">From spring.csv onto Events, "#
        )),
        "{form}"
    );
    let saved = browser
        .submit(
            "/admin/segments",
            &[
                ("name", "Spring fair"),
                ("field_1", &field),
                ("op_1", "eq"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let page = browser.get(location(&saved)).await.text().await.unwrap();
    assert!(page.contains("2 confirmed readers match."), "{page}");
    assert!(
        page.contains(&format!(r#"<option value="{field}" selected>"#)),
        "the saved row shows its import: {page}"
    );
    let stored: serde_json::Value = sqlx::query_scalar("SELECT filter FROM segments")
        .fetch_one(&r.app.db_pool)
        .await
        .unwrap();
    assert_eq!(stored, json!({"all": [{"import": {"id": spring}}]}));
}

#[tokio::test]
async fn an_admin_saves_counts_changes_and_deletes_a_segment() {
    let r = readers().await;
    let browser = signed_in(&r.app).await;
    let rust = format!("list:{}", r.rust);

    let counted = browser
        .submit(
            "/admin/segments",
            &[
                ("name", "Parisians"),
                ("match", "all"),
                ("field_1", &rust),
                ("op_1", "eq"),
                ("field_2", "attribute:city"),
                ("op_2", "eq"),
                ("value_2", "paris"),
                ("action", "count"),
            ],
        )
        .await;
    assert_eq!(counted.status(), StatusCode::OK);
    assert!(
        counted
            .text()
            .await
            .unwrap()
            .contains("2 confirmed readers match.")
    );
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(&r.app.db_pool)
        .await
        .unwrap();
    assert_eq!(none, 0, "counting saves nothing");

    let saved = browser
        .submit(
            "/admin/segments",
            &[
                ("name", "Parisians"),
                ("match", "any"),
                ("field_1", "attribute:city"),
                ("op_1", "eq"),
                ("value_1", "paris"),
                ("field_4", "attribute:vip"),
                ("op_4", "is_true"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let path = location(&saved).to_owned();
    let page = browser.get(&path).await.text().await.unwrap();
    assert!(page.contains("2 confirmed readers match."), "{page}");
    assert!(page.contains(r#"value="any" checked"#), "{page}");

    let taken = browser
        .submit(
            "/admin/segments",
            &[("name", "PARISIANS"), ("action", "save")],
        )
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert!(taken.text().await.unwrap().contains("already called that"));

    let changed = browser
        .submit(
            &path,
            &[
                ("name", "Grown-ups"),
                (
                    "filter_json",
                    &json!({"all": [attribute("age", "ge", json!(18))]}).to_string(),
                ),
            ],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let page = browser.get(&path).await.text().await.unwrap();
    assert!(
        page.contains("Grown-ups") && page.contains("2 confirmed readers match."),
        "{page}"
    );
    let listed = browser.get("/admin/segments").await.text().await.unwrap();
    assert!(listed.contains("Grown-ups") && !listed.contains("Parisians"));

    let deleted = browser.submit(&format!("{path}/delete"), &[]).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(browser.get(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        crate::newsroom::audit_actions(&r.app)
            .await
            .into_iter()
            .filter(|a| a.starts_with("segment-"))
            .collect::<Vec<_>>(),
        ["segment-created", "segment-updated", "segment-deleted"]
    );
}

#[tokio::test]
async fn hostile_and_unknown_filters_are_refused_with_a_reason_never_a_500() {
    let r = readers().await;
    let browser = signed_in(&r.app).await;
    let unknown_list = format!("list:{}", Uuid::new_v4());
    let row = |field: &str, op: &str, value: &str| {
        vec![
            ("field_1".to_owned(), field.to_owned()),
            ("op_1".to_owned(), op.to_owned()),
            ("value_1".to_owned(), value.to_owned()),
        ]
    };
    let json_box = |json: &str| vec![("filter_json".to_owned(), json.to_owned())];
    let cases = [
        (
            "a NUL in a value",
            row("attribute:city", "eq", "par\0is"),
            "U+0000",
        ),
        (
            "a NUL in the JSON",
            json_box(r#"{"attribute": {"name": "city", "op": "eq", "value": "a\u0000b"}}"#),
            "U+0000",
        ),
        ("a huge number", row("attribute:age", "gt", "1e400"), "1e15"),
        (
            "a number past the limit",
            row("attribute:age", "gt", "10000000000000000"),
            "1e15",
        ),
        (
            "1e400 in the JSON",
            json_box(r#"{"attribute": {"name": "age", "op": "gt", "value": 1e400}}"#),
            "number out of range",
        ),
        (
            "an unknown attribute",
            row("attribute:shoe_size", "eq", "42"),
            "No attribute is called `shoe_size`",
        ),
        (
            "SQL as an attribute",
            row("attribute:city'; DROP TABLE subscriptions; --", "eq", "x"),
            "lower-case letters",
        ),
        (
            "an unknown list",
            row(&unknown_list, "eq", ""),
            "No list has the id",
        ),
        (
            "an unknown import",
            row(&format!("import:{}", Uuid::new_v4()), "eq", ""),
            "No import has the id",
        ),
        (
            "an unknown import in the JSON",
            json_box(&format!(r#"{{"import": {{"id": "{}"}}}}"#, Uuid::new_v4())),
            "No import has the id",
        ),
        (
            "an import id that is no uuid",
            row("import:'; DROP TABLE imports; --", "eq", ""),
            "That import",
        ),
        (
            "a NUL in an import id",
            row("import:\0", "eq", ""),
            "That import",
        ),
        (
            "a NUL in an import id in the JSON",
            json_box(r#"{"import": {"id": "a\u0000b"}}"#),
            "could not be read as JSON",
        ),
        (
            "a value for an import",
            row(&format!("import:{}", Uuid::new_v4()), "eq", "confirmed"),
            "An import takes no value",
        ),
        (
            "a malformed list id",
            row("list:'; DROP TABLE lists; --", "eq", ""),
            "malformed",
        ),
        (
            "a wrong operator",
            row("attribute:city", "gt", "a"),
            "its operators are",
        ),
        (
            "no such day",
            row("attribute:birthday", "on", "2026-02-30"),
            "YYYY-MM-DD",
        ),
        (
            "a word for a number",
            row("attribute:age", "eq", "'; DROP TABLE subscriptions; --"),
            "is a number",
        ),
        (
            "broken JSON",
            json_box(r#"{"all": ["#),
            "could not be read as JSON",
        ),
        (
            "an empty any",
            json_box(r#"{"any": []}"#),
            "at least one condition",
        ),
        (
            "too deep",
            json_box(&format!("{}{}", r#"{"all": ["#.repeat(6), "]}".repeat(6))),
            "5 deep",
        ),
    ];
    for (case, fields, reason) in cases {
        let mut form: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        form.push(("name", "Hostile"));
        for action in ["count", "save"] {
            let mut form = form.clone();
            form.push(("action", action));
            let answer = browser.submit("/admin/segments", &form).await;
            assert_eq!(
                answer.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{case} ({action})"
            );
            let page = answer.text().await.unwrap();
            assert!(
                page.contains(reason),
                "{case} ({action}): no `{reason}` in {page}"
            );
        }
    }
    let name_with_nul = browser
        .submit(
            "/admin/segments",
            &[("name", "bad\0name"), ("action", "save")],
        )
        .await;
    assert_eq!(name_with_nul.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_action = browser
        .submit("/admin/segments", &[("action", "drop")])
        .await;
    assert_eq!(unknown_action.status(), StatusCode::BAD_REQUEST);
    let malformed_id = browser.get("/admin/segments/'%3B%20DROP").await;
    assert_eq!(malformed_id.status(), StatusCode::NOT_FOUND);

    let still_there: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
        .fetch_one(&r.app.db_pool)
        .await
        .unwrap();
    assert_eq!(still_there, 4);
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(&r.app.db_pool)
        .await
        .unwrap();
    assert_eq!(saved, 0);
}

#[tokio::test]
async fn a_segment_whose_attribute_was_removed_says_so_and_is_not_counted() {
    let r = readers().await;
    let browser = signed_in(&r.app).await;
    let saved = browser
        .submit(
            "/admin/segments",
            &[
                ("name", "VIPs"),
                ("field_1", "attribute:vip"),
                ("op_1", "is_true"),
            ],
        )
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    sqlx::query("DELETE FROM attribute_definitions WHERE name = 'vip'")
        .execute(&r.app.db_pool)
        .await
        .unwrap();

    let page = browser.get(location(&saved)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("no longer applies"), "{page}");
    assert!(page.contains("No attribute is called `vip`"), "{page}");
    assert!(!page.contains("readers match"), "{page}");
    assert!(
        page.contains("vip (unknown)"),
        "the form keeps the saved row: {page}"
    );
}
