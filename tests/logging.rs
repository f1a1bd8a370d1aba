//! What the service writes to its log, checked on the real output: JSON lines
//! that carry the request id, and never a token or a secret. This binary has
//! a single test because it installs the process-wide log subscriber.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

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
