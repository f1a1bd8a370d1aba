//! What the service writes to its log, checked on the real output: JSON lines
//! or, in local runs, plain lines, that carry the request id and never a
//! token or a secret. Only one test installs the process-wide log
//! subscriber; the others run the `newsletter` binary.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};

use newsletter::configuration::{LogFormat, get_configuration};
use newsletter::telemetry::{get_subscriber, init_subscriber};
use tracing_subscriber::fmt::MakeWriter;
use wiremock::Mock;
use wiremock::matchers::path;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_are_json_lines_with_request_ids_and_without_tokens_or_secrets() {
    let captured = Captured::default();
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

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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

/// `newsletter` as a developer runs it: the local environment, with no
/// `APP_*` variable but the ones `configure` sets.
fn newsletter(configure: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_newsletter"));
    for (name, _) in std::env::vars() {
        if name.starts_with("APP_") {
            command.env_remove(name);
        }
    }
    command.envs(configure.iter().copied());
    command
}

fn is_json(line: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).is_ok()
}

#[tokio::test]
async fn logs_are_plain_locally_json_in_production_and_app_log_format_picks_either() {
    let settings = get_configuration().unwrap();
    let db = helpers::TestDatabase::create(&settings.database).await;
    let name = db.settings.database_name.as_str();
    let local = [("APP_DATABASE__DATABASE_NAME", name)];
    let local_json = [local[0], ("APP_LOG_FORMAT", "json")];
    // The local Postgres has no TLS, which production requires.
    let production = [
        local[0],
        ("APP_ENVIRONMENT", "production"),
        ("APP_DATABASE__REQUIRE_SSL", "false"),
    ];
    let production_text = [
        production[0],
        production[1],
        production[2],
        ("APP_LOG_FORMAT", "text"),
    ];
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
