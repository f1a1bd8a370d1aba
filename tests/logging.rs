//! What the service writes to stdout, checked on the real output: JSON lines
//! or, in local runs, plain lines, that carry the request id and never a
//! token, a secret or an email; a local run keeps each email in its inbox
//! instead, where an admin reads it and follows its link. Only one test
//! installs the process-wide log subscriber; the others run the
//! `newsletter` binary.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/newsroom.rs"]
mod newsroom;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use newsletter::configuration::{LogFormat, get_configuration};
use newsletter::telemetry::{get_subscriber, init_subscriber};
use wiremock::Mock;
use wiremock::matchers::path;

#[tokio::test]
async fn logs_are_json_lines_with_request_ids_and_without_tokens_or_secrets() {
    let captured = helpers::CapturedLogs::default();
    init_subscriber(get_subscriber("info", captured.clone()));
    let app = helpers::spawn_app().await;
    Mock::given(path(helpers::EMAIL_API))
        .respond_with(helpers::accept_every_message)
        .mount(&app.email_server)
        .await;

    app.post_subscriptions("name=Ursula&email=ursula%40example.com")
        .await;
    let link = app
        .confirmation_links(&app.wait_for_emails(1).await[0])
        .html;
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "subscription_token")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(app.click(&link).await.status().as_u16(), 200);
    app.wait_for_outbox_to_settle().await;

    let output = captured.text();
    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let request_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["spans"][0]["name"] == "HTTP request")
        .collect();
    assert!(
        !request_lines.is_empty(),
        "no line was logged inside a request"
    );
    for line in request_lines {
        let root = &line["spans"][0];
        assert!(
            root["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "a line without a request id: {line}"
        );
    }
    assert!(
        !output.contains(&token),
        "the confirmation token was logged"
    );
    assert!(
        !output.contains("test-token"),
        "the email API token was logged"
    );
    assert!(
        !output.contains("password"),
        "the database password was logged"
    );
}

/// A `newsletter` process whose stdout is collected line by line, killed
/// when dropped.
struct Newsletter {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Newsletter {
    fn start(command: &mut Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Newsletter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `newsletter` as a developer runs it: the local environment, with no
/// `APP_*` variable but the ones `configure` sets, and where the tests'
/// Postgres is (the test command runs one of its own).
fn newsletter<V: AsRef<std::ffi::OsStr>>(configure: &[(&str, V)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_newsletter"));
    for (name, _) in std::env::vars() {
        let postgres = name == "APP_DATABASE__HOST" || name == "APP_DATABASE__PORT";
        if name.starts_with("APP_") && !postgres {
            command.env_remove(name);
        }
    }
    command.envs(configure.iter().map(|(name, value)| (name, value)));
    command
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).is_ok()
}

/// The address of the newest email the inbox lists, once there is one.
async fn newest_email(browser: &newsroom::Browser) -> String {
    helpers::eventually("the email to reach the inbox", || async {
        let page = browser.get("/admin/inbox").await.text().await.unwrap();
        let id = page.split(r#"href="/admin/inbox/"#).nth(1)?;
        Some(format!("/admin/inbox/{}", &id[..id.find('"')?]))
    })
    .await
}

#[tokio::test]
async fn a_local_run_logs_plain_lines_with_request_ids_and_keeps_each_email_in_the_inbox_it_serves()
{
    let settings = get_configuration().unwrap();
    let db = helpers::TestDatabase::create(&settings.database).await;
    db.migrate().await;
    let redis_keys = helpers::RedisKeys {
        uri: settings.redis_uri.clone(),
        prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let base = format!("http://127.0.0.1:{port}");
    let server = Newsletter::start(&mut newsletter(&[
        ("APP_APPLICATION__PORT", port.as_str()),
        ("APP_METRICS__PORT", "0"),
        ("APP_APPLICATION__BASE_URL", &base),
        ("APP_DATABASE__DATABASE_NAME", &db.settings.database_name),
        ("APP_RATE_LIMIT__KEY_PREFIX", &redis_keys.prefix),
    ]));
    let client = reqwest::Client::new();
    helpers::eventually("the server to answer", || async {
        let response = client.get(format!("{base}/health_check")).send().await;
        response.ok().filter(|r| r.status().is_success())
    })
    .await;

    let subscribed = client
        .post(format!("{base}/subscriptions"))
        .form(&[("name", "Ursula"), ("email", "ursula@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status().as_u16(), 200);
    newsroom::create_admin_in(&db.pool, "desk", newsroom::PASSWORD).await;
    let browser = newsroom::Browser::signed_in_at(&base, "desk", newsroom::PASSWORD).await;
    let email = newest_email(&browser).await;
    let page = browser.get(&email).await.text().await.unwrap();
    assert!(
        page.contains(r#"<dd id="email-to">ursula@example.com</dd>"#),
        "{page}"
    );
    let html = browser
        .get(&format!("{email}/body"))
        .await
        .text()
        .await
        .unwrap();
    let confirm = format!("{base}/subscriptions/confirm?");
    let links: Vec<String> = linkify::LinkFinder::new()
        .links(&html)
        .map(|link| link.as_str().to_owned())
        .filter(|link| link.starts_with(&confirm))
        .collect();
    let [link] = &links[..] else {
        panic!("not one confirmation link in the email: {html}");
    };
    assert!(
        page.contains(link.as_str()),
        "the text version lacks the link: {page}"
    );
    let confirmed = client.get(link).send().await.unwrap();
    assert_eq!(confirmed.status().as_u16(), 200, "the inbox's link failed");
    helpers::eventually("the confirmation to be logged", || async {
        server
            .lines()
            .iter()
            .any(|l| l.contains("http.route=/subscriptions/confirm") && l.contains("Finished"))
            .then_some(())
    })
    .await;

    let logged = server.lines();
    let token = link.rsplit('=').next().unwrap();
    for line in &logged {
        assert!(!is_json(line), "a JSON line in a local run: {line}");
        assert!(!line.contains(token), "the token was logged: {line}");
        assert!(
            !line.contains("Hello Ursula"),
            "an email was logged: {line}"
        );
        if line.contains("HTTP request{") {
            let id = line.split("request_id=").nth(1).unwrap_or_default();
            assert!(
                id.starts_with(|c: char| c.is_ascii_hexdigit()),
                "no request id: {line}"
            );
        }
    }
    assert!(
        logged
            .iter()
            .any(|l| l.contains("HTTP request{") && l.contains("Finished the request")),
        "no request was logged: {logged:#?}"
    );
}

#[tokio::test]
async fn logs_are_plain_locally_json_in_production_and_app_log_format_picks_either() {
    let settings = get_configuration().unwrap();
    let db = helpers::TestDatabase::create(&settings.database).await;
    let name = db.settings.database_name.as_str();
    let local = vec![("APP_DATABASE__DATABASE_NAME", name.to_owned())];
    let local_json = [local.clone(), vec![("APP_LOG_FORMAT", "json".to_owned())]].concat();
    // The local Postgres has no TLS, which production requires; production
    // takes its secrets from the platform.
    let production = helpers::production_variables(name);
    let production_text = [
        production.clone(),
        vec![("APP_LOG_FORMAT", "text".to_owned())],
    ]
    .concat();
    let cases = [
        ("local", &local[..], LogFormat::Text),
        (
            "local, APP_LOG_FORMAT=json",
            &local_json[..],
            LogFormat::Json,
        ),
        ("production", &production[..], LogFormat::Json),
        (
            "production, APP_LOG_FORMAT=text",
            &production_text[..],
            LogFormat::Text,
        ),
    ];

    for (case, variables, format) in cases {
        let run = newsletter(variables).arg("migrate").output().unwrap();

        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(
            run.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            stdout.contains("The schema is up to date"),
            "{case}: {stdout}"
        );
        for line in stdout.lines() {
            assert_eq!(is_json(line), format == LogFormat::Json, "{case}: {line}");
        }
        if format == LogFormat::Text {
            assert!(
                stdout
                    .lines()
                    .all(|l| l.contains(" INFO ") || l.contains(" WARN ")),
                "{case}: a line without its level: {stdout}"
            );
        }
    }
}
