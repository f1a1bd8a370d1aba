//! The subscribers' custom attributes: defining them, setting a
//! subscriber's values from their page, the values in both exports, and
//! deleting a definition with every value for it. Whatever is typed, the
//! answer is a page with the reason, never a 500.

use newsletter::subscribers::attributes::{self, AttributeName, DefinitionError, Kind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::newsroom::{Browser, PASSWORD, create_admin, location};

async fn admin_browser(app: &TestApp) -> Browser {
    create_admin(app, "ada", PASSWORD).await;
    Browser::signed_in(app, "ada", PASSWORD).await
}

async fn insert_subscriber(app: &TestApp, email: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         VALUES (gen_random_uuid(), $1, 'Someone', now(), 'confirmed', now()) RETURNING id",
    )
    .bind(email)
    .fetch_one(&app.db_pool)
    .await
    .unwrap()
}

async fn define(browser: &Browser, name: &str, kind: &str) -> reqwest::Response {
    browser
        .submit("/admin/attributes", &[("name", name), ("kind", kind)])
        .await
}

/// `city` (text), `age` (number), `birthday` (date), `vip` (boolean).
async fn define_four(browser: &Browser) {
    for (name, kind) in [
        ("city", "text"),
        ("age", "number"),
        ("birthday", "date"),
        ("vip", "boolean"),
    ] {
        let response = define(browser, name, kind).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{name}");
    }
}

/// Posts the subscriber's attributes form: `(attribute, text)` pairs.
async fn set_values(browser: &Browser, id: Uuid, values: &[(&str, &str)]) -> reqwest::Response {
    let fields: Vec<(String, &str)> = values
        .iter()
        .map(|(name, text)| (format!("value.{name}"), *text))
        .collect();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    browser
        .submit(&format!("/admin/subscribers/{id}/attributes"), &fields)
        .await
}

async fn stored(app: &TestApp, id: Uuid) -> Value {
    sqlx::query_scalar("SELECT attributes FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn definition_names(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM attribute_definitions ORDER BY name")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

/// The audit log's (action, detail), oldest first.
async fn audit_log(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, detail FROM audit_log ORDER BY id")
        .fetch_all(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_adds_attributes_and_the_page_lists_them_in_name_order_with_their_kinds() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;

    define_four(&browser).await;

    let response = browser.get("/admin/attributes").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    let at = |name: &str| {
        page.find(&format!(r#"<li id="definition-{name}">"#))
            .unwrap_or_else(|| panic!("{name} is not listed: {page}"))
    };
    assert!(at("age") < at("birthday") && at("birthday") < at("city") && at("city") < at("vip"));
    assert!(
        page.contains(r#"data-kind="boolean">Yes or no</span>"#),
        "{page}"
    );
    assert!(page.contains(r#"<a href="/admin/attributes">Attributes</a>"#));
    assert_eq!(
        definition_names(&app).await,
        ["age", "birthday", "city", "vip"]
    );
    let defined: Vec<String> = audit_log(&app)
        .await
        .into_iter()
        .filter(|(action, _)| action == "attribute-defined")
        .map(|(_, detail)| detail)
        .collect();
    assert_eq!(defined[0], "attribute city (text)");
    assert_eq!(defined.len(), 4);
    let added = browser.get("/admin/attributes?notice=added").await;
    assert!(
        added
            .text()
            .await
            .unwrap()
            .contains(r#"id="attributes-notice""#)
    );
}

#[tokio::test]
async fn hostile_or_taken_names_and_unknown_kinds_are_refused_with_a_reason_never_a_500() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    assert_eq!(
        define(&browser, "city", "text").await.status(),
        StatusCode::SEE_OTHER
    );
    let long = "a".repeat(64);
    let cases = [
        ("", "text", "name-error", "empty"),
        ("City", "text", "name-error", "upper case"),
        ("2nd_city", "text", "name-error", "a digit first"),
        ("first name", "text", "name-error", "a space"),
        ("a\0b", "text", "name-error", "NUL"),
        (
            "x'; DROP TABLE subscriptions; --",
            "text",
            "name-error",
            "quotes",
        ),
        ("<script>alert(1)</script>", "text", "name-error", "HTML"),
        (long.as_str(), "text", "name-error", "64 characters"),
        ("city", "number", "name-error", "taken"),
        ("shoe_size", "colour", "kind-error", "unknown kind"),
        ("shoe_size", "", "kind-error", "no kind"),
    ];
    for (name, kind, error, case) in cases {
        let response = define(&browser, name, kind).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = response.text().await.unwrap();
        assert!(page.contains(&format!(r#"id="{error}""#)), "{case}: {page}");
        assert!(!page.contains("<script>alert"), "{case}: not escaped");
    }
    assert_eq!(definition_names(&app).await, ["city"]);
    let taken = define(&browser, "city", "number")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        taken.contains("An attribute is already called that."),
        "{taken}"
    );
}

#[tokio::test]
async fn a_subscribers_values_are_saved_typed_shown_escaped_and_an_empty_field_removes_one() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let id = insert_subscriber(&app, "ursula@example.com").await;

    let response = set_values(
        &browser,
        id,
        &[
            ("city", "  <b>\"Oslo\"</b> & co\r\nline two "),
            ("age", "42"),
            ("birthday", "1990-05-17"),
            ("vip", "true"),
        ],
    )
    .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), format!("/admin/subscribers/{id}"));
    assert_eq!(
        stored(&app, id).await,
        json!({
            "city": "<b>\"Oslo\"</b> & co\nline two",
            "age": 42.0,
            "birthday": "1990-05-17",
            "vip": true,
        })
    );
    let page = browser
        .get(&format!("/admin/subscribers/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("&#60;b&#62;&#34;Oslo&#34;&#60;/b&#62; &#38; co\nline two</textarea>")
            || page.contains("&lt;b&gt;&quot;Oslo&quot;&lt;/b&gt; &amp; co\nline two</textarea>"),
        "{page}"
    );
    assert!(!page.contains("<b>\"Oslo"), "the value is not escaped");
    assert!(page.contains(r#"name="value.age" data-kind="number" type="text" value="42""#));
    assert!(page.contains(r#"value="1990-05-17""#));
    assert!(page.contains(r#"<option value="true" selected>Yes</option>"#));

    let response = set_values(&browser, id, &[("city", ""), ("vip", "false")]).await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        stored(&app, id).await,
        json!({ "age": 42.0, "birthday": "1990-05-17", "vip": false }),
        "the city is gone; what the form did not name stays"
    );
}

#[tokio::test]
async fn values_that_do_not_fit_their_kind_or_name_no_attribute_are_refused_and_nothing_is_saved() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let id = insert_subscriber(&app, "ursula@example.com").await;
    assert_eq!(
        set_values(&browser, id, &[("age", "7")]).await.status(),
        StatusCode::SEE_OTHER
    );
    let too_long = "é".repeat(1001);
    let cases = [
        ("age", "1e400", "a number too large for a double"),
        ("age", "-1e400", "a negative one"),
        ("age", "NaN", "NaN"),
        ("age", "inf", "infinity"),
        ("age", "1e16", "beyond 10^15"),
        ("age", "12abc", "not a number"),
        ("age", "0x1F", "hexadecimal"),
        ("birthday", "2024-02-30", "no such day"),
        ("birthday", "0000-01-01", "year zero"),
        ("birthday", "10000-01-01", "year 10000"),
        ("birthday", "17/05/1990", "another format"),
        ("city", "a\0b", "NUL"),
        ("city", "a\u{1B}[31mb", "an escape sequence"),
        ("city", "a\u{202E}b", "a bidi override"),
        ("city", too_long.as_str(), "1001 characters"),
        ("vip", "maybe", "neither yes nor no"),
    ];
    for (name, text, case) in cases {
        // A valid field beside it: nothing of the form is saved.
        let response = set_values(&browser, id, &[("age", "8"), (name, text)]).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        let page = response.text().await.unwrap();
        assert!(
            page.contains(&format!(r#"id="attribute-{name}-error""#)),
            "{case}: {page}"
        );
        assert_eq!(stored(&app, id).await, json!({ "age": 7.0 }), "{case}");
    }

    let response = set_values(&browser, id, &[("shoe_size", "44"), ("city", "Oslo")]).await;

    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"id="attributes-error""#), "{page}");
    assert!(
        page.contains("shoe_size: There is no such attribute"),
        "{page}"
    );
    assert!(
        page.contains(">Oslo</textarea>"),
        "what was typed is kept: {page}"
    );
    assert_eq!(stored(&app, id).await, json!({ "age": 7.0 }));
    let hostile_name = set_values(&browser, id, &[("<img src=x>\0", "1")]).await;
    assert_eq!(hostile_name.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!hostile_name.text().await.unwrap().contains("<img"));
}

#[tokio::test]
async fn a_subscribers_attributes_for_someone_who_is_not_there_answer_404() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;

    let nobody = set_values(&browser, Uuid::new_v4(), &[("age", "1")]).await;
    let malformed = browser
        .submit(
            "/admin/subscribers/not-an-id/attributes",
            &[("value.age", "1")],
        )
        .await;

    assert_eq!(nobody.status(), StatusCode::NOT_FOUND);
    assert_eq!(malformed.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn changes_are_audited_by_attribute_name_and_subscriber_id_never_by_value() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let id = insert_subscriber(&app, "ursula@example.com").await;

    set_values(&browser, id, &[("city", "Trondheim"), ("age", "")]).await;

    let (action, detail) = audit_log(&app).await.pop().unwrap();
    assert_eq!(action, "subscriber-attributes-changed");
    assert_eq!(detail, format!("subscriber {id}: set city; removed age"));
    assert!(
        audit_log(&app)
            .await
            .iter()
            .all(|(_, detail)| !detail.contains("Trondheim"))
    );
}

#[tokio::test]
async fn the_json_export_holds_the_values_and_the_csv_has_a_column_per_attribute_in_name_order() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let id = insert_subscriber(&app, "ursula@example.com").await;
    insert_subscriber(&app, "other@example.com").await;
    let response = set_values(
        &browser,
        id,
        &[
            ("city", "=HYPERLINK(\"http://x\")"),
            ("age", "-3.5"),
            ("birthday", "1990-05-17"),
            ("vip", "true"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let export: Value = browser
        .get(&format!("/admin/subscribers/{id}/export"))
        .await
        .json()
        .await
        .unwrap();
    let csv = browser
        .get("/admin/subscribers.csv")
        .await
        .text()
        .await
        .unwrap();

    assert_eq!(
        export["attributes"],
        json!({
            "age": -3.5,
            "birthday": "1990-05-17",
            "city": "=HYPERLINK(\"http://x\")",
            "vip": true,
        })
    );
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "email",
            "name",
            "status",
            "subscribed_at",
            "confirmed_at",
            "age",
            "birthday",
            "city",
            "vip"
        ]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    let ursula = rows.iter().find(|r| r[0] == "ursula@example.com").unwrap();
    assert_eq!(
        ursula[5..],
        ["'-3.5", "1990-05-17", "'=HYPERLINK(\"http://x\")", "true"],
        "formulas are made text, as in every other cell"
    );
    let other = rows.iter().find(|r| r[0] == "other@example.com").unwrap();
    assert_eq!(other[5..], ["", "", "", ""]);
}

#[tokio::test]
async fn deleting_an_attribute_needs_its_name_typed_and_removes_every_subscribers_value() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let first = insert_subscriber(&app, "ursula@example.com").await;
    let second = insert_subscriber(&app, "other@example.com").await;
    let third = insert_subscriber(&app, "third@example.com").await;
    set_values(&browser, first, &[("city", "Oslo"), ("age", "3")]).await;
    set_values(&browser, second, &[("city", "Bergen")]).await;
    set_values(&browser, third, &[("age", "5")]).await;

    let refused = browser
        .submit("/admin/attributes/city/delete", &[("confirm_name", "age")])
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = refused.text().await.unwrap();
    assert!(page.contains(r#"id="delete-error""#), "{page}");
    assert!(page.contains("<details open>"), "{page}");
    assert_eq!(definition_names(&app).await.len(), 4);
    assert_eq!(stored(&app, second).await, json!({ "city": "Bergen" }));

    let response = browser
        .submit(
            "/admin/attributes/city/delete",
            &[("confirm_name", " city ")],
        )
        .await;

    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/admin/attributes?notice=deleted");
    assert_eq!(definition_names(&app).await, ["age", "birthday", "vip"]);
    assert_eq!(stored(&app, first).await, json!({ "age": 3.0 }));
    assert_eq!(stored(&app, second).await, json!({}));
    assert_eq!(stored(&app, third).await, json!({ "age": 5.0 }));
    let (action, detail) = audit_log(&app).await.pop().unwrap();
    assert_eq!(action, "attribute-deleted");
    assert_eq!(
        detail,
        "attribute city; its values removed from 2 subscribers"
    );
    let page = browser
        .get(&format!("/admin/subscribers/{first}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("value.city"), "{page}");

    for path in [
        "/admin/attributes/city/delete",
        "/admin/attributes/City/delete",
        "/admin/attributes/%20age/delete",
    ] {
        let gone = browser.submit(path, &[("confirm_name", "city")]).await;
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(definition_names(&app).await, ["age", "birthday", "vip"]);
}

#[tokio::test]
async fn an_attributes_kind_changes_only_while_no_subscriber_holds_a_value() {
    let app = spawn_app().await;
    let browser = admin_browser(&app).await;
    define_four(&browser).await;
    let id = insert_subscriber(&app, "ursula@example.com").await;
    set_values(&browser, id, &[("age", "42")]).await;
    let age = AttributeName::parse("age").unwrap();
    let mut connection = app.db_pool.acquire().await.unwrap();

    let held = attributes::change_kind(&mut connection, &age, Kind::Text).await;

    assert!(
        matches!(held, Err(DefinitionError::ValuesHeld(1))),
        "{held:?}"
    );
    set_values(&browser, id, &[("age", "")]).await;
    let changed = attributes::change_kind(&mut connection, &age, Kind::Text)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.kind, Kind::Text);
    let kinds: Vec<(String, Kind)> = attributes::definitions(&mut connection)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.name, d.kind))
        .collect();
    assert!(kinds.contains(&("age".to_owned(), Kind::Text)), "{kinds:?}");
    let shoe = AttributeName::parse("shoe").unwrap();
    assert!(
        attributes::change_kind(&mut connection, &shoe, Kind::Number)
            .await
            .unwrap()
            .is_none()
    );
}
