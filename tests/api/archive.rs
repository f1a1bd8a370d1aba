//! The public archive over HTTP: issues made public (at publishing or
//! later) and private again, their web versions with nothing personal in
//! them, the pages of the list, the validators and 304s, the Atom feed as a
//! real feed reader parses it, and the "Read on the web" link in emails.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED,
};
use serde_json::Value;
use uuid::Uuid;
use wiremock::Mock;
use wiremock::matchers::{method, path};

use crate::campaigns::publish as publish_directly;
use crate::helpers::{
    BASE_URL, EMAIL_API, TestApp, accept_every_message, eventually, eventually_within, spawn_app,
};
use crate::newsletters::{FAR_AHEAD, compose, issue_id, new_form, signed_in};
use crate::newsroom::{Browser, audit_actions, location};

/// Publishes an issue through the compose form, public or not, sent now
/// or at `send_at`; returns its admin page's path.
async fn publish_with_form(
    browser: &Browser,
    title: &str,
    content: &str,
    send_at: &str,
    public: bool,
) -> String {
    let form = new_form(browser).await;
    let mut fields = vec![("title", title), ("content", content), ("send_at", send_at)];
    if public {
        fields.push(("public", "yes"));
    }
    let response = compose(browser, &form, "publish", &fields).await;
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "publishing {title}"
    );
    location(&response).to_owned()
}

/// Publishes an issue through the ledger and makes it public, as the
/// compose form would in one transaction; returns its id and slug.
async fn public_issue(app: &TestApp, title: &str, content: &str) -> (Uuid, String) {
    let id = publish_directly(app, title, content).await;
    let slug = make_public_elsewhere(app, id).await;
    (id, slug)
}

/// Makes the issue public straight through the store, as another replica
/// would: this app's cache hears nothing of it.
async fn make_public_elsewhere(app: &TestApp, id: Uuid) -> String {
    let mut conn = app.db_pool.acquire().await.unwrap();
    match newsletter::campaigns::archive::make_public(&mut conn, id)
        .await
        .unwrap()
    {
        newsletter::campaigns::archive::Publicity::Changed(slug) => slug.to_string(),
        other => panic!("the issue was not made public: {other:?}"),
    }
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.api_client.get(format!("{}{path}", app.address));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn status_of(app: &TestApp, path: &str) -> StatusCode {
    app.get(path).await.status()
}

async fn text_of(app: &TestApp, path: &str) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.text().await.unwrap()
}

/// Adds a confirmed subscriber with this name; returns their address.
async fn a_reader_named(app: &TestApp, name: &str) -> String {
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         VALUES (gen_random_uuid(), $1, $2, now() - interval '1 hour', 'confirmed', \
                 now() - interval '1 minute')",
    )
    .bind(&email)
    .bind(name)
    .execute(&app.db_pool)
    .await
    .unwrap();
    email
}

async fn accept_emails(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path(EMAIL_API))
        .respond_with(accept_every_message)
        .mount(&app.email_server)
        .await;
}

fn email_titled<'a>(emails: &'a [Value], subject: &str) -> &'a Value {
    emails
        .iter()
        .find(|email| email["Subject"] == subject)
        .unwrap_or_else(|| panic!("no email titled {subject} in {emails:?}"))
}

#[tokio::test]
async fn an_issue_made_public_is_in_the_archive_and_once_made_private_answers_404() {
    let (app, browser) = signed_in(None).await;
    let public =
        publish_with_form(&browser, "Spring News!", "Blossoms *everywhere*.", "", true).await;
    publish_with_form(&browser, "Internal memo", "Not for the web.", "", false).await;

    let admin_page = browser.get(&public).await.text().await.unwrap();
    assert!(
        admin_page.contains(r#"<a href="/archive/spring-news" id="web-version">"#),
        "{admin_page}"
    );
    let list = text_of(&app, "/archive").await;
    assert!(
        list.contains(r#"<a href="/archive/spring-news">Spring News!</a>"#),
        "{list}"
    );
    assert!(!list.contains("Internal memo"), "{list}");
    let issue = text_of(&app, "/archive/spring-news").await;
    assert!(issue.contains("Blossoms <em>everywhere</em>."), "{issue}");
    assert_eq!(
        status_of(&app, "/archive/internal-memo").await,
        StatusCode::NOT_FOUND
    );

    let response = browser.submit(&format!("{public}/make-private"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // At once, on this replica: its cache was cleared by the change.
    let gone = app.get("/archive/spring-news").await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert!(
        gone.text()
            .await
            .unwrap()
            .contains("No public issue has this address")
    );
    assert!(!text_of(&app, "/archive").await.contains("Spring News!"));
    assert!(!text_of(&app, "/feed.xml").await.contains("Spring News!"));

    let again = browser.submit(&format!("{public}/make-private"), &[]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("This issue is not public")
    );

    // Public again, at the address it had.
    let response = browser.submit(&format!("{public}/make-public"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        status_of(&app, "/archive/spring-news").await,
        StatusCode::OK
    );

    let actions = audit_actions(&app).await;
    let publicity: Vec<&str> = actions
        .iter()
        .map(String::as_str)
        .filter(|action| action.starts_with("issue-made-"))
        .collect();
    assert_eq!(
        publicity,
        [
            "issue-made-public",
            "issue-made-private",
            "issue-made-public"
        ]
    );
    let detail: String =
        sqlx::query_scalar("SELECT detail FROM audit_log WHERE action = 'issue-made-private'")
            .fetch_one(&app.db_pool)
            .await
            .unwrap();
    assert_eq!(
        detail,
        format!("Spring News! ({}), /archive/spring-news", issue_id(&public))
    );
}

#[tokio::test]
async fn two_issues_of_one_title_get_two_addresses() {
    let app = spawn_app().await;
    let (_, first) = public_issue(&app, "Weekly notes", "One.").await;
    let (_, second) = public_issue(&app, "Weekly notes", "Two.").await;
    assert_eq!(first, "weekly-notes");
    assert_eq!(second, "weekly-notes-2");
    assert!(
        text_of(&app, "/archive/weekly-notes")
            .await
            .contains("One.")
    );
    assert!(
        text_of(&app, "/archive/weekly-notes-2")
            .await
            .contains("Two.")
    );
}

#[tokio::test]
async fn the_email_of_a_public_issue_links_to_its_web_version_and_a_private_ones_does_not() {
    let (app, browser) = signed_in(None).await;
    accept_emails(&app).await;
    a_reader_named(&app, "Zebedee Quillfeather").await;
    publish_with_form(&browser, "Out in the open", "Read me anywhere.", "", true).await;
    publish_with_form(&browser, "Just for you", "Read me here.", "", false).await;

    let emails = app.wait_for_emails(2).await;
    let public = email_titled(&emails, "Out in the open");
    let link = format!("{BASE_URL}/archive/out-in-the-open");
    let html = public["HtmlBody"].as_str().unwrap();
    assert!(
        html.contains(&format!(r#"<a href="{link}">Read on the web</a>"#)),
        "{html}"
    );
    let text = public["TextBody"].as_str().unwrap();
    assert!(
        text.contains(&format!("Read on the web: {link}\n")),
        "{text}"
    );
    let private = email_titled(&emails, "Just for you");
    for body in ["HtmlBody", "TextBody"] {
        let body = private[body].as_str().unwrap();
        assert!(!body.contains("Read on the web"), "{body}");
        assert!(!body.contains("{{"), "a placeholder left unfilled: {body}");
    }
}

#[tokio::test]
async fn the_web_version_and_the_feed_carry_nothing_of_the_reader_they_were_sent_to() {
    let (app, browser) = signed_in(None).await;
    accept_emails(&app).await;
    let address = a_reader_named(&app, "Zebedee Quillfeather").await;
    publish_with_form(&browser, "For everyone", "The same for all.", "", true).await;

    let emails = app.wait_for_emails(1).await;
    let text = emails[0]["TextBody"].as_str().unwrap();
    assert!(text.contains("Hello Zebedee Quillfeather,"), "{text}");
    let token = text
        .split("/unsubscribe/")
        .nth(1)
        .and_then(|rest| rest.split(['\n', '?']).next())
        .unwrap_or_else(|| panic!("no unsubscribe link in {text}"));
    assert!(token.len() > 10, "{token}");

    let page = text_of(&app, "/archive/for-everyone").await;
    assert!(page.contains("The same for all."), "{page}");
    let feed = text_of(&app, "/feed.xml").await;
    assert!(feed.contains("The same for all."), "{feed}");
    for (which, document) in [("web version", &page), ("feed", &feed)] {
        for personal in [
            "Zebedee",
            "Quillfeather",
            address.as_str(),
            token,
            "/unsubscribe",
            "/preferences",
            "Unsubscribe",
            "Hello",
            "{{",
        ] {
            assert!(
                !document.contains(personal),
                "the {which} holds {personal:?}:\n{document}"
            );
        }
    }
    // The page's share card, for links posted elsewhere.
    for tag in [
        r#"<meta property="og:title" content="For everyone">"#,
        r#"<meta property="og:description" content="The same for all.">"#,
        &format!(r#"<meta property="og:url" content="{BASE_URL}/archive/for-everyone">"#),
        r#"<meta property="og:type" content="article">"#,
    ] {
        assert!(page.contains(tag), "no {tag} in {page}");
    }
}

#[tokio::test]
async fn an_issue_made_public_after_publishing_carries_the_link_in_the_emails_sent_after() {
    let (app, browser) = signed_in(None).await;
    accept_emails(&app).await;
    a_reader_named(&app, "Ada").await;
    let issue = publish_with_form(&browser, "Later public", "Soon.", FAR_AHEAD, false).await;
    let response = browser.submit(&format!("{issue}/make-public"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // Scheduled: not in the archive before its emails go out.
    assert_eq!(
        status_of(&app, "/archive/later-public").await,
        StatusCode::NOT_FOUND
    );
    assert!(!text_of(&app, "/archive").await.contains("Later public"));

    sqlx::query("UPDATE newsletter_issues SET send_at = now() WHERE id = $1")
        .bind(issue_id(&issue))
        .execute(&app.db_pool)
        .await
        .unwrap();
    let emails = app.wait_for_emails(1).await;
    let text = emails[0]["TextBody"].as_str().unwrap();
    assert!(
        text.contains(&format!("Read on the web: {BASE_URL}/archive/later-public")),
        "{text}"
    );
    // Its send time has come: the archive shows it, once this replica's
    // few seconds of cache are up.
    eventually("the issue to show in the archive", || async {
        (status_of(&app, "/archive/later-public").await == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_change_made_by_another_replica_shows_here_within_seconds() {
    let app = spawn_app().await;
    let id = publish_directly(&app, "Elsewhere", "Made public by a peer.").await;
    assert_eq!(
        status_of(&app, "/archive/elsewhere").await,
        StatusCode::NOT_FOUND
    );
    let slug = make_public_elsewhere(&app, id).await;
    // This app's cache still holds the 404 for a few seconds, no more.
    eventually_within(
        Duration::from_secs(10),
        "the peer's change to show here",
        || async {
            (status_of(&app, &format!("/archive/{slug}")).await == StatusCode::OK).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn archive_answers_carry_validators_and_answer_304_while_they_match() {
    let app = spawn_app().await;
    let (id, slug) = public_issue(&app, "Cached", "Keep me.").await;
    // Long enough ago for its time to be a Last-Modified.
    an_hour_ago(&app, id).await;
    for path in ["/archive", &format!("/archive/{slug}"), "/feed.xml"] {
        let first = app.get(path).await;
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        let header = |name: reqwest::header::HeaderName| {
            first
                .headers()
                .get(&name)
                .unwrap_or_else(|| panic!("{path} has no {name}"))
                .to_str()
                .unwrap()
                .to_owned()
        };
        let etag = header(ETAG);
        let modified = header(LAST_MODIFIED);
        let cache = header(CACHE_CONTROL);
        assert!(cache.starts_with("public, max-age="), "{path}: {cache}");
        assert!(cache.contains("stale-while-revalidate"), "{path}: {cache}");
        let body = first.text().await.unwrap();

        for (headers, case) in [
            (vec![(IF_NONE_MATCH.as_str(), etag.as_str())], "its ETag"),
            (
                vec![(IF_MODIFIED_SINCE.as_str(), modified.as_str())],
                "its Last-Modified",
            ),
        ] {
            let again = get_with(&app, path, &headers).await;
            assert_eq!(
                again.status(),
                StatusCode::NOT_MODIFIED,
                "{path} with {case}"
            );
            assert_eq!(again.headers()[ETAG], etag.as_str(), "{path} with {case}");
            assert!(
                again.headers().contains_key(CACHE_CONTROL),
                "{path} with {case}"
            );
            assert!(again.text().await.unwrap().is_empty(), "{path} with {case}");
        }
        let other = get_with(&app, path, &[(IF_NONE_MATCH.as_str(), "\"another\"")]).await;
        assert_eq!(other.status(), StatusCode::OK, "{path} with another ETag");
        assert_eq!(other.text().await.unwrap(), body, "{path}");
        let older = get_with(
            &app,
            path,
            &[(IF_MODIFIED_SINCE.as_str(), "Thu, 01 Jan 2015 00:00:00 GMT")],
        )
        .await;
        assert_eq!(older.status(), StatusCode::OK, "{path} modified since 2015");
    }
    let feed = app.get("/feed.xml").await;
    assert_eq!(
        feed.headers()[CONTENT_TYPE],
        "application/atom+xml; charset=utf-8"
    );
    // The issue's images load from the web, as in the email; nothing else
    // is allowed beyond the site's own policy.
    let page = app.get(&format!("/archive/{slug}")).await;
    let policy = page.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(policy.contains("img-src http: https:"), "{policy}");
    assert!(!policy.contains("script-src"), "{policy}");
}

#[tokio::test]
async fn the_archive_pages_through_every_public_issue_newest_first() {
    let app = spawn_app().await;
    let mut slugs = Vec::new();
    for n in 0..45 {
        let (id, slug) = public_issue(&app, &format!("Issue {n}"), "Words.").await;
        // A minute apart, the newest last.
        sqlx::query("UPDATE newsletter_issues SET send_at = now() - make_interval(mins => 100 - $2) WHERE id = $1")
            .bind(id)
            .bind(n)
            .execute(&app.db_pool)
            .await
            .unwrap();
        slugs.push(slug);
    }
    // A private one is on no page.
    publish_directly(&app, "Issue private", "Hidden.").await;
    slugs.reverse();

    let mut seen = Vec::new();
    let mut page_sizes = Vec::new();
    let mut path = "/archive".to_owned();
    loop {
        let page = text_of(&app, &path).await;
        let on_page: Vec<String> = page
            .split(r#"<li><a href="/archive/"#)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect();
        page_sizes.push(on_page.len());
        seen.extend(on_page);
        let Some(older) = page.split(r#"id="older-issues" href=""#).nth(1) else {
            break;
        };
        path = older.split('"').next().unwrap().to_owned();
        assert!(page_sizes.len() < 10, "the pages never end");
    }
    assert_eq!(page_sizes, [20, 20, 5]);
    assert_eq!(seen, slugs);
}

#[tokio::test]
async fn hostile_addresses_and_cursors_are_refused_with_a_4xx_never_a_500() {
    let app = spawn_app().await;
    public_issue(&app, "Real", "Here.").await;
    let long = "a".repeat(5_000);
    for slug in [
        "%00",
        "real%00",
        "Real",
        "real%0d%0aSet-Cookie:%20x",
        "..%2f..%2fetc%2fpasswd",
        "%C3%A9t%C3%A9",
        "%E2%80%AEreal",
        "real-",
        "re--al",
        "%FF%FE",
        long.as_str(),
    ] {
        let status = status_of(&app, &format!("/archive/{slug}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "slug {slug:.40}");
    }
    for query in [
        "before=",
        "before=%00",
        "before=not%20a%20slug",
        "before=no-such-issue",
        "before=real&before=real",
        "before=%FF",
        &format!("before={long}"),
    ] {
        let response = app.get(&format!("/archive?{query}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "?{query:.40}");
        let reason = response.text().await.unwrap();
        assert!(!reason.is_empty(), "?{query:.40} says why");
    }
    assert_eq!(
        status_of(&app, "/archive?before=real").await,
        StatusCode::OK
    );
}

/// What Python's feedparser, the parser behind many feed readers, makes of
/// a feed: whether it had to bend the rules (`bozo`), the format it found,
/// and each entry's title, link and id.
fn parse_feed(xml: &str) -> Value {
    let python = std::env::var("FEED_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let script = r#"
import json, sys
import feedparser
parsed = feedparser.parse(sys.stdin.buffer.read())
print(json.dumps({
    "bozo": int(bool(parsed.bozo)),
    "problem": str(parsed.get("bozo_exception", "")),
    "version": parsed.version,
    "title": parsed.feed.get("title"),
    "entries": [
        {"title": e.get("title"), "link": e.get("link"), "id": e.get("id"),
         "content": (e.get("content") or [{}])[0].get("value", "")}
        for e in parsed.entries
    ],
}))
"#;
    let mut child = Command::new(&python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): install python3 and python3-feedparser (scripts/lib.sh ensure_feed_parser), or name another interpreter in FEED_TEST_PYTHON")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{python} could not parse the feed; is python3-feedparser installed (scripts/lib.sh ensure_feed_parser)?\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn the_feed_is_atom_that_a_feed_parser_reads_without_complaint() {
    let app = spawn_app().await;
    let (first, _) = public_issue(&app, "First & foremost", "Tom & <Jerry>.").await;
    let (second, _) = public_issue(&app, "Second <thoughts>", "**Bold** words.").await;
    sqlx::query("UPDATE newsletter_issues SET send_at = now() - interval '1 hour' WHERE id = $1")
        .bind(first)
        .execute(&app.db_pool)
        .await
        .unwrap();
    publish_directly(&app, "Not in the feed", "Private.").await;

    let response = app.get("/feed.xml").await;
    assert_eq!(response.status(), StatusCode::OK);
    let feed = parse_feed(&response.text().await.unwrap());
    assert_eq!(feed["bozo"], 0, "{feed}");
    assert_eq!(feed["version"], "atom10", "{feed}");
    let entries = feed["entries"].as_array().unwrap();
    let titles: Vec<&str> = entries
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Second <thoughts>", "First & foremost"], "{feed}");
    let links: Vec<&str> = entries
        .iter()
        .map(|e| e["link"].as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        [
            format!("{BASE_URL}/archive/second-thoughts"),
            format!("{BASE_URL}/archive/first-foremost"),
        ],
        "{feed}"
    );
    assert_eq!(entries[0]["id"], format!("urn:uuid:{second}"));
    let content = entries[0]["content"].as_str().unwrap();
    assert!(
        content.contains("<strong>Bold</strong> words."),
        "{content}"
    );
}

/// Moves the issue's times an hour back, as if it had been made public
/// and sent long ago: its Last-Modified is then settled.
async fn an_hour_ago(app: &TestApp, id: Uuid) {
    sqlx::query(
        "UPDATE newsletter_issues SET send_at = now() - interval '1 hour', \
                public_at = now() - interval '1 hour', \
                publicity_changed_at = now() - interval '1 hour' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_public_issue_cancelled_before_its_send_time_never_shows_in_the_archive() {
    let (app, browser) = signed_in(None).await;
    let (shown, shown_slug) = public_issue(&app, "Went out", "Sent.").await;
    an_hour_ago(&app, shown).await;
    let cancelled = publish_with_form(&browser, "Called off", "Never sent.", FAR_AHEAD, true).await;
    let response = browser.submit(&format!("{cancelled}/cancel"), &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // Its send time comes, though nothing was sent.
    sqlx::query("UPDATE newsletter_issues SET send_at = now() - interval '1 minute' WHERE id = $1")
        .bind(issue_id(&cancelled))
        .execute(&app.db_pool)
        .await
        .unwrap();

    assert_eq!(
        status_of(&app, "/archive/called-off").await,
        StatusCode::NOT_FOUND
    );
    let list = text_of(&app, "/archive").await;
    assert!(list.contains(&format!("/archive/{shown_slug}")), "{list}");
    assert!(!list.contains("called-off"), "{list}");
    let feed = text_of(&app, "/feed.xml").await;
    assert!(feed.contains(&format!("/archive/{shown_slug}")), "{feed}");
    assert!(!feed.contains("called-off"), "{feed}");
    assert!(!feed.contains("Called off"), "{feed}");
}

#[tokio::test]
async fn a_cursor_naming_an_embargoed_or_private_issue_is_refused_as_an_unknown_one() {
    let (app, browser) = signed_in(None).await;
    public_issue(&app, "Out there", "Sent.").await;
    publish_with_form(&browser, "Not yet", "Embargoed.", FAR_AHEAD, true).await;
    publish_with_form(&browser, "Kept inside", "Private.", "", false).await;
    // The private one has a slug from a public spell.
    let private: Uuid = sqlx::query_scalar("SELECT id FROM newsletter_issues WHERE title = $1")
        .bind("Kept inside")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let slug = make_public_elsewhere(&app, private).await;
    let mut conn = app.db_pool.acquire().await.unwrap();
    newsletter::campaigns::archive::make_private(&mut conn, private)
        .await
        .unwrap();

    let unknown = app.get("/archive?before=no-such-issue").await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let unknown = unknown.text().await.unwrap();
    for cursor in ["not-yet", slug.as_str()] {
        let response = app.get(&format!("/archive?before={cursor}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{cursor}");
        assert_eq!(response.text().await.unwrap(), unknown, "{cursor}");
    }
    assert_eq!(
        status_of(&app, "/archive?before=out-there").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn scheduling_an_embargoed_public_issue_leaves_the_feeds_last_modified_alone() {
    let (app, browser) = signed_in(None).await;
    let (id, _) = public_issue(&app, "Old news", "Sent long ago.").await;
    an_hour_ago(&app, id).await;
    let modified = |response: &reqwest::Response| {
        response
            .headers()
            .get(LAST_MODIFIED)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let before: Vec<_> = [
        modified(&app.get("/feed.xml").await),
        modified(&app.get("/archive").await),
    ]
    .into();
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // Publishing through this app clears its cache: the next answers are
    // read afresh.
    publish_with_form(&browser, "Embargoed", "Later.", FAR_AHEAD, true).await;
    let after: Vec<_> = [
        modified(&app.get("/feed.xml").await),
        modified(&app.get("/archive").await),
    ]
    .into();
    assert_eq!(before, after);
}

#[tokio::test]
async fn an_issue_holding_characters_xml_forbids_leaves_the_feed_well_formed() {
    let app = spawn_app().await;
    public_issue(
        &app,
        "Odd characters",
        "A bell &#1; a form feed &#12; a noncharacter &#xFFFE; &#xFFFF; and &#31;.",
    )
    .await;

    let feed = parse_feed(&text_of(&app, "/feed.xml").await);
    assert_eq!(feed["bozo"], 0, "{feed}");
    let content = feed["entries"][0]["content"].as_str().unwrap();
    assert!(content.contains("A bell"), "{content}");
    assert!(content.contains("and ."), "{content}");
}

#[tokio::test]
async fn a_client_holding_only_last_modified_sees_a_second_change_made_in_the_same_second() {
    let app = spawn_app().await;
    let (first, _) = public_issue(&app, "First of two", "One.").await;
    // The change as the read sees it, however slow the machine is to get
    // there: not yet two seconds old (here, a minute ahead of the clock).
    sqlx::query(
        "UPDATE newsletter_issues SET publicity_changed_at = now() + interval '1 minute' \
         WHERE id = $1",
    )
    .bind(first)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let read = app.get("/feed.xml").await;
    assert_eq!(read.status(), StatusCode::OK);
    let held = read
        .headers()
        .get(LAST_MODIFIED)
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(
        held, None,
        "a change whose second is not over has no Last-Modified"
    );
    // Another replica makes a second issue public in the same second.
    let (second, _) = public_issue(&app, "Second of two", "Two.").await;
    sqlx::query(
        "UPDATE newsletter_issues i \
         SET send_at = f.send_at, public_at = f.public_at, \
             publicity_changed_at = f.publicity_changed_at \
         FROM newsletter_issues f WHERE f.id = $1 AND i.id = $2",
    )
    .bind(first)
    .bind(second)
    .execute(&app.db_pool)
    .await
    .unwrap();
    eventually("the second issue to reach the feed", || async {
        text_of(&app, "/feed.xml")
            .await
            .contains("Second of two")
            .then_some(())
    })
    .await;

    // What a client that keeps only Last-Modified asks, if it was given one.
    let headers: Vec<(&str, &str)> = held
        .iter()
        .map(|held| (IF_MODIFIED_SINCE.as_str(), held.as_str()))
        .collect();
    let again = get_with(&app, "/feed.xml", &headers).await;
    assert_eq!(again.status(), StatusCode::OK, "with {headers:?}");
    assert!(again.text().await.unwrap().contains("Second of two"));
}
