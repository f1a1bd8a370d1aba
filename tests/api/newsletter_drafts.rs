//! Drafts in the newsroom over HTTP: Save draft on the compose form keeps
//! it, the list shows it above the issues, its page is the form filled in
//! again, where it is saved, published (once, however often the form is
//! sent, as an issue with the draft's id) and deleted.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::newsletters::{FAR_AHEAD, Form, form_at, hidden_field, new_form, signed_in};
use crate::newsroom::{Browser, audit_actions, location};

/// Posts a compose form to `path` with `action` and these fields, on top
/// of the form's hidden ones; a publish goes as the dialog sends it once
/// answered yes.
async fn send(
    browser: &Browser,
    path: &str,
    form: &Form,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let confirmed = if action == "publish" { "yes" } else { "" };
    let mut all = vec![
        ("csrf_token", form.csrf_token.as_str()),
        ("idempotency_key", form.idempotency_key.as_str()),
        ("action", action),
        ("confirmed", confirmed),
    ];
    all.extend_from_slice(fields);
    browser.post(path, &all).await
}

/// Saves a draft from a fresh compose form and returns its page's path.
async fn save_new(browser: &Browser, fields: &[(&str, &str)]) -> String {
    let form = new_form(browser).await;
    let saved = send(browser, "/admin/newsletters", &form, "save", fields).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let path = location(&saved).to_owned();
    assert!(path.starts_with("/admin/newsletters/drafts/"), "{path}");
    path
}

fn id_of(path: &str) -> Uuid {
    path.rsplit('/').next().unwrap().parse().unwrap()
}

async fn draft_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM issue_drafts")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn issue_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

async fn add_list(app: &TestApp, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO lists (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn save_draft_keeps_the_form_on_record_and_the_list_shows_it_above_the_issues() {
    let (app, browser) = signed_in(None).await;

    let path = save_new(
        &browser,
        &[
            ("title", "Winter <draft>"),
            ("content", "Still *writing*."),
            ("send_at", FAR_AHEAD),
            ("public", "yes"),
        ],
    )
    .await;

    let stored: (String, String, bool, Option<Uuid>) =
        sqlx::query_as("SELECT title, content, public, created_by FROM issue_drafts WHERE id = $1")
            .bind(id_of(&path))
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(stored.0, "Winter <draft>");
    assert_eq!(stored.1, "Still *writing*.");
    assert!(stored.2, "public was not kept");
    assert!(stored.3.is_some(), "the author was not kept");
    assert_eq!(issue_count(&app).await, 0, "saving published something");
    assert_eq!(audit_actions(&app).await, ["sign-in", "draft-saved"]);

    let list = browser
        .get("/admin/newsletters")
        .await
        .text()
        .await
        .unwrap();
    let link = format!(r#"<a href="{path}">Winter &#60;draft&#62;</a>"#);
    let drafts_at = list.find(&link).unwrap_or_else(|| panic!("{list}"));
    assert!(drafts_at < list.find(r#"<table id="issues">"#).unwrap());

    let page = browser.get(&path).await;
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    assert!(page.contains("<h1>Edit draft</h1>"), "{page}");
    assert!(
        page.contains(&format!(
            r#"<form method="post" action="{path}" class="compose">"#
        )),
        "{page}"
    );
    assert!(page.contains(r#"value="Winter &#60;draft&#62;""#), "{page}");
    assert!(page.contains(">Still *writing*.</textarea>"), "{page}");
    assert!(page.contains(&format!(r#"value="{FAR_AHEAD}""#)), "{page}");
    assert!(page.contains(r#"id="public" checked"#), "{page}");
    assert!(
        page.contains(&format!(r#"action="{path}/delete" id="delete-draft""#)),
        "{page}"
    );
}

/// A form's fields, as name and value.
type Fields<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn a_draft_needs_no_list_chosen_yet_and_refuses_what_cannot_be_used_beside_the_field() {
    let (app, browser) = signed_in(None).await;
    let second = add_list(&app, "Second").await;
    let archived = add_list(&app, "Archived").await;
    sqlx::query("UPDATE lists SET archived_at = now() WHERE id = $1")
        .bind(archived)
        .execute(&app.db_pool)
        .await
        .unwrap();
    let archived = archived.to_string();
    let unknown_segment = Uuid::new_v4().to_string();
    let text = [("title", "Hi"), ("content", "Hello.")];
    let cases: [(&str, Fields, &str); 4] = [
        (
            "an empty title",
            vec![
                ("title", " "),
                ("content", "Hello."),
                ("lists_offered", "1"),
            ],
            r#"<p class="error" id="title-error">The title must not be empty.</p>"#,
        ),
        (
            "an empty content",
            vec![("title", "Hi"), ("content", ""), ("lists_offered", "1")],
            r#"id="content-error""#,
        ),
        (
            "an archived list",
            vec![
                text[0],
                text[1],
                ("lists_offered", "1"),
                ("list", &archived),
            ],
            r#"<p class="error" id="lists-error">One of the lists chosen does not exist or is archived.</p>"#,
        ),
        (
            "a segment that does not exist",
            vec![
                text[0],
                text[1],
                ("lists_offered", "1"),
                ("segment", &unknown_segment),
            ],
            "No segment has that id",
        ),
    ];

    for (case, fields, reason) in cases {
        let form = new_form(&browser).await;
        let refused = send(&browser, "/admin/newsletters", &form, "save", &fields).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        let page = refused.text().await.unwrap();
        assert!(page.contains(reason), "{case}: {page}");
    }
    for (case, fields) in [
        (
            "a NUL in the title",
            [("title", "Hi\0"), ("content", "Hello.")],
        ),
        (
            "a NUL in the content",
            [("title", "Hi"), ("content", "He\0llo.")],
        ),
    ] {
        let form = new_form(&browser).await;
        let refused = send(&browser, "/admin/newsletters", &form, "save", &fields).await;
        assert!(refused.status().is_client_error(), "{case}");
    }
    assert_eq!(draft_count(&app).await, 0, "a refused draft was stored");

    // Two live lists, none ticked: publishing would refuse it, saving not.
    let form = new_form(&browser).await;
    let fields = [text[0], text[1], ("lists_offered", "1")];
    let saved = send(&browser, "/admin/newsletters", &form, "save", &fields).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let page = browser.get(location(&saved)).await.text().await.unwrap();
    assert!(
        page.contains(&format!(r#"value="{second}" data-audience>"#)),
        "the second list is not offered unticked: {page}"
    );
    assert_eq!(draft_count(&app).await, 1);
}

#[tokio::test]
async fn saving_a_draft_again_changes_it_on_record_at_the_same_address() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Draft"), ("content", "First.")]).await;
    let form = form_at(&browser, &path).await;

    let fields = [("title", "Draft"), ("content", "Second.")];
    let changed = send(&browser, &path, &form, "save", &fields).await;
    let unchanged = send(&browser, &path, &form, "save", &fields).await;

    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&changed), path);
    assert_eq!(location(&unchanged), path);
    let content: String = sqlx::query_scalar("SELECT content FROM issue_drafts WHERE id = $1")
        .bind(id_of(&path))
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(content, "Second.");
    assert_eq!(draft_count(&app).await, 1);
    // A save that changes nothing puts nothing on record.
    assert_eq!(
        audit_actions(&app).await,
        ["sign-in", "draft-saved", "draft-changed"]
    );
}

#[tokio::test]
async fn publishing_a_draft_publishes_the_form_as_shown_as_an_issue_with_the_drafts_id() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Draft"), ("content", "Old text.")]).await;
    let id = id_of(&path);
    let form = form_at(&browser, &path).await;
    let fields = [
        ("title", "Final"),
        ("content", "New text."),
        ("send_at", FAR_AHEAD),
    ];

    // Without an answer, the question, whose button comes back here.
    let asked = browser
        .post(
            &path,
            &[
                ("csrf_token", form.csrf_token.as_str()),
                ("idempotency_key", form.idempotency_key.as_str()),
                ("action", "publish"),
                ("title", "Final"),
                ("content", "New text."),
            ],
        )
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let asked = asked.text().await.unwrap();
    assert!(asked.contains(r#"id="publish-question""#), "{asked}");
    assert!(
        asked.contains(&format!(r#"<form method="post" action="{path}">"#)),
        "{asked}"
    );
    assert_eq!(issue_count(&app).await, 0, "asking published");

    let published = send(&browser, &path, &form, "publish", &fields).await;

    assert_eq!(published.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&published), format!("/admin/newsletters/{id}"));
    let issue: (String, String) =
        sqlx::query_as("SELECT title, content FROM newsletter_issues WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(issue, ("Final".to_owned(), "New text.".to_owned()));
    assert_eq!(draft_count(&app).await, 0, "the draft is still there");
    assert_eq!(
        audit_actions(&app).await,
        ["sign-in", "draft-saved", "draft-changed", "issue-published"]
    );
    // The draft's old address leads to the issue.
    let old = browser.get(&path).await;
    assert_eq!(old.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&old), format!("/admin/newsletters/{id}"));
    let list = browser
        .get("/admin/newsletters")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(&path),
        "the list still shows the draft: {list}"
    );
}

#[tokio::test]
async fn publishing_a_drafts_form_twice_at_once_and_again_publishes_once() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Once"), ("content", "Only once.")]).await;
    let form = form_at(&browser, &path).await;
    let fields = [("title", "Once"), ("content", "Only once.")];

    let (first, second) = tokio::join!(
        send(&browser, &path, &form, "publish", &fields),
        send(&browser, &path, &form, "publish", &fields),
    );
    let third = send(&browser, &path, &form, "publish", &fields).await;

    for (which, response) in [("first", &first), ("second", &second), ("third", &third)] {
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{which}");
        assert_eq!(
            location(response),
            format!("/admin/newsletters/{}", id_of(&path)),
            "{which}"
        );
    }
    assert_eq!(issue_count(&app).await, 1);
    assert_eq!(
        audit_actions(&app).await,
        ["sign-in", "draft-saved", "issue-published"]
    );
}

#[tokio::test]
async fn publishing_a_draft_published_from_another_tab_says_so_with_a_link_and_keeps_the_text() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Twice"), ("content", "Two tabs.")]).await;
    let first_tab = form_at(&browser, &path).await;
    let second_tab = form_at(&browser, &path).await;
    let fields = [("title", "Twice"), ("content", "Two tabs.")];
    let published = send(&browser, &path, &first_tab, "publish", &fields).await;
    assert_eq!(published.status(), StatusCode::SEE_OTHER);

    let again = [("title", "Twice"), ("content", "Typed in the second tab.")];
    let late = send(&browser, &path, &second_tab, "publish", &again).await;

    assert_eq!(late.status(), StatusCode::CONFLICT);
    let page = late.text().await.unwrap();
    let issue = format!("/admin/newsletters/{}", id_of(&path));
    assert!(
        page.contains(&format!(
            r#"This draft was published already: <a href="{issue}">see the issue</a>."#
        )),
        "{page}"
    );
    assert!(
        page.contains(">Typed in the second tab.</textarea>"),
        "{page}"
    );
    // What is kept goes on as a new issue's form, with a key of its own.
    assert!(
        page.contains(r#"<form method="post" action="/admin/newsletters" class="compose">"#),
        "{page}"
    );
    assert_ne!(
        hidden_field(&page, "idempotency_key"),
        second_tab.idempotency_key
    );
    assert_eq!(issue_count(&app).await, 1);
}

#[tokio::test]
async fn deleting_a_draft_removes_it_on_record_and_only_with_the_sessions_csrf_token() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Doomed"), ("content", "Gone soon.")]).await;
    let delete = format!("{path}/delete");

    let forged = browser.post(&delete, &[("csrf_token", "forged")]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(draft_count(&app).await, 1);

    let deleted = browser.submit(&delete, &[]).await;

    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&deleted), "/admin/newsletters");
    assert_eq!(draft_count(&app).await, 0);
    assert_eq!(
        audit_actions(&app).await,
        ["sign-in", "draft-saved", "draft-deleted"]
    );
    let list = browser
        .get("/admin/newsletters")
        .await
        .text()
        .await
        .unwrap();
    assert!(!list.contains("Doomed"), "{list}");
    assert_eq!(browser.get(&path).await.status(), StatusCode::NOT_FOUND);
    let again = browser.submit(&delete, &[]).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn saving_a_draft_deleted_meanwhile_answers_404_and_keeps_what_was_typed() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(&browser, &[("title", "Kept"), ("content", "Typed.")]).await;
    let form = form_at(&browser, &path).await;
    let deleted = browser.submit(&format!("{path}/delete"), &[]).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);

    let fields = [("title", "Kept"), ("content", "Typed on.")];
    let saved = send(&browser, &path, &form, "save", &fields).await;

    assert_eq!(saved.status(), StatusCode::NOT_FOUND);
    let page = saved.text().await.unwrap();
    assert!(page.contains("This draft was deleted meanwhile"), "{page}");
    assert!(page.contains(">Typed on.</textarea>"), "{page}");
    assert_eq!(draft_count(&app).await, 0, "a deleted draft came back");
}

#[tokio::test]
async fn an_address_that_names_no_draft_answers_404() {
    let (_app, browser) = signed_in(None).await;
    let unknown = Uuid::new_v4();

    for id in ["not-a-draft".to_owned(), unknown.to_string()] {
        let path = format!("/admin/newsletters/drafts/{id}");
        let page = browser.get(&path).await;
        assert_eq!(page.status(), StatusCode::NOT_FOUND, "GET {path}");
        assert!(page.text().await.unwrap().contains("No such draft"));
        let delete = browser.submit(&format!("{path}/delete"), &[]).await;
        assert_eq!(delete.status(), StatusCode::NOT_FOUND, "POST {path}/delete");
    }
}

#[tokio::test]
async fn a_drafts_form_sent_again_with_other_text_is_refused_not_replayed() {
    let (app, browser) = signed_in(None).await;
    let path = save_new(
        &browser,
        &[("title", "Once"), ("content", "As first sent.")],
    )
    .await;
    let form = form_at(&browser, &path).await;
    let sent = send(
        &browser,
        &path,
        &form,
        "publish",
        &[("title", "Once"), ("content", "As first sent.")],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);

    // Back, an edit, and the same form (the same key) again: the edit did
    // not go out, and the page says so rather than showing the issue.
    let edited = send(
        &browser,
        &path,
        &form,
        "publish",
        &[("title", "Once"), ("content", "Edited after it was sent.")],
    )
    .await;
    assert_eq!(edited.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = edited.text().await.unwrap();
    assert!(
        page.contains("Edited after it was sent."),
        "the text is kept"
    );
    assert_eq!(issue_count(&app).await, 1);
    let content: String = sqlx::query_scalar("SELECT content FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(content, "As first sent.");
}
