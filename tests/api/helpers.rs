//! `spawn_app()` and the helpers every API test shares.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use newsletter::campaigns::ledger;
use newsletter::configuration::{DatabaseSettings, EmailBackend, Settings, get_configuration};
use newsletter::db::Db;
use newsletter::db::wakeups::{Notifier, Wakeups};
use newsletter::delivery::postmark::{EmailClient, Sender};
use newsletter::domain::{Newsletter, SubscriberEmail};
use newsletter::migrate::MIGRATOR;
use newsletter::outbox::DeliveryWorker;
use newsletter::startup::{Application, Stopper, campaign_sender, delivery_worker};
use reqwest::Url;
use secrecy::SecretString;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Logs are discarded unless `TEST_LOG` is set, in which case they go to
/// stdout (`TEST_LOG=1 cargo test some_test -- --nocapture`).
/// The process's log subscriber, shared by every test in it (`cargo test`
/// runs a whole binary in one process; nextest, each test in its own). Lines
/// go to stdout with `TEST_LOG` set, and to [`CAPTURED`] while a test
/// captures ([`capture_logs`]); otherwise nowhere, at no cost.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    use tracing_subscriber::filter::{EnvFilter, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry, fmt};
    // The shape the service writes in production: JSON, with every span's
    // fields on each line.
    fn json<S>() -> fmt::Layer<S, fmt::format::JsonFields, fmt::format::Format<fmt::format::Json>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(true)
    }
    let shown = std::env::var_os("TEST_LOG").is_some().then(|| {
        json()
            .with_writer(std::io::stdout)
            .with_filter(EnvFilter::new("debug"))
    });
    let captured = json()
        .with_writer(CAPTURED.clone())
        .with_filter(EnvFilter::new(CAPTURED_LEVELS))
        .with_filter(filter_fn(|_| CAPTURING.load(Ordering::Relaxed)));
    let _ = Registry::default().with(shown).with(captured).try_init();
});

/// What [`capture_logs`] keeps: the most verbose level the service's own
/// code logs at, and dependencies at `info`, as in production.
const CAPTURED_LEVELS: &str = "info,newsletter=trace";
static CAPTURED: LazyLock<CapturedLogs> = LazyLock::new(CapturedLogs::default);
static CAPTURING: AtomicBool = AtomicBool::new(false);

/// The public address tests configure. Deliberately not the address the app
/// listens on, so that tests can tell the two apart.
pub const BASE_URL: &str = "https://newsletter.test";

/// Where the app sends email: Postmark's batch endpoint.
pub const EMAIL_API: &str = "/email/batch";

/// Answers a batch the way Postmark does when it takes every message: 200
/// and one `ErrorCode: 0` entry per message, in order.
pub fn accept_every_message(request: &Request) -> ResponseTemplate {
    answer_each_message(request, |_| 0)
}

/// Answers a batch with the error code `code_for` gives each message (0 for
/// accepted), as Postmark does when it refuses some messages of a batch.
pub fn answer_each_message(
    request: &Request,
    code_for: impl Fn(&serde_json::Value) -> i64,
) -> ResponseTemplate {
    let messages: Vec<serde_json::Value> =
        serde_json::from_slice(&request.body).expect("a batch is a JSON array");
    let answers: Vec<_> = messages
        .iter()
        .map(|message| {
            let code = code_for(message);
            serde_json::json!({
                "ErrorCode": code,
                "Message": if code == 0 { "OK" } else { "Refused by the test" },
                "To": message["To"],
                "MessageID": Uuid::new_v4().to_string(),
            })
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(answers)
}

/// What a browser puts in `Accept` when it navigates.
pub const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

pub struct TestApp {
    // Fields drop in order: the server first, so that it has finished every
    // request and stopped writing before its Redis keys and its database
    // go (see [`ServedApp`]).
    _server: ServedApp,
    pub address: String,
    pub port: u16,
    /// Where `GET /metrics` is served, e.g. `http://127.0.0.1:40123`.
    pub metrics_address: String,
    pub db_pool: PgPool,
    pub email_server: MockServer,
    pub api_client: reqwest::Client,
    /// The settings the app was built with.
    pub settings: Settings,
    _redis_keys: RedisKeys,
    // Dropped last: removes the database once the test is done with it.
    _database: TestDatabase,
}

/// The confirmation links found in one captured email.
pub struct ConfirmationLinks {
    pub html: Url,
    pub plain_text: Url,
}

impl TestApp {
    pub async fn post_subscriptions(&self, body: impl Into<String>) -> reqwest::Response {
        self.post_subscriptions_with(body, &[]).await
    }

    /// `POST /subscriptions` as a browser's form submission sends it.
    pub async fn submit_form(&self, body: impl Into<String>) -> reqwest::Response {
        self.post_subscriptions_with(body, &[("Accept", BROWSER_ACCEPT)])
            .await
    }

    /// `GET` as a browser does, asking for a page.
    pub async fn browse(&self, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.api_client
            .get(url)
            .header("Accept", BROWSER_ACCEPT)
            .send()
            .await
            .expect("Failed to send GET")
    }

    /// `POST /subscriptions` with extra headers.
    pub async fn post_subscriptions_with(
        &self,
        body: impl Into<String>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .api_client
            .post(format!("{}/subscriptions", self.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.into());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .await
            .expect("Failed to send POST /subscriptions")
    }

    /// `GET {path_and_query}` against the app.
    pub async fn get(&self, path_and_query: &str) -> reqwest::Response {
        self.api_client
            .get(format!("{}{path_and_query}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("Failed to send GET {path_and_query}: {e}"))
    }

    pub async fn get_confirm(&self, query: &str) -> reqwest::Response {
        self.get(&format!("/subscriptions/confirm{query}")).await
    }

    /// Makes the mock email API accept every message.
    pub async fn mock_email_api_ok(&self) {
        Mock::given(path(EMAIL_API))
            .and(method("POST"))
            .respond_with(accept_every_message)
            .mount(&self.email_server)
            .await;
    }

    /// The status of the one subscriber the test stored.
    pub async fn subscriber_status(&self) -> String {
        sqlx::query_scalar("SELECT status FROM subscriptions")
            .fetch_one(&self.db_pool)
            .await
            .expect("no subscriber was stored")
    }

    pub async fn subscriber_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM subscriptions")
            .fetch_one(&self.db_pool)
            .await
            .unwrap()
    }

    /// Opens a link from an email against this app: the link carries the
    /// configured public base URL, which does not resolve in tests.
    pub async fn click(&self, link: &Url) -> reqwest::Response {
        self.api_client
            .get(self.local(link))
            .send()
            .await
            .expect("Failed to open the link")
    }

    /// A link from an email, pointed at this app instead of the public URL.
    pub fn local(&self, link: &Url) -> Url {
        let mut local = link.clone();
        local.set_scheme("http").unwrap();
        local.set_host(Some("127.0.0.1")).unwrap();
        local.set_port(Some(self.port)).unwrap();
        local
    }

    /// Every request the mock email API has received so far.
    pub async fn email_api_requests(&self) -> Vec<Request> {
        self.email_server.received_requests().await.unwrap()
    }

    /// Every message sent to the mock email API so far (each attempt
    /// counts), in the order they were sent, whatever the batches were.
    pub async fn sent_emails(&self) -> Vec<serde_json::Value> {
        self.email_api_requests()
            .await
            .iter()
            .flat_map(|request| {
                serde_json::from_slice::<Vec<serde_json::Value>>(&request.body)
                    .expect("a batch is a JSON array")
            })
            .collect()
    }

    /// Waits until at least `n` messages have reached the mock email API.
    pub async fn wait_for_emails(&self, n: usize) -> Vec<serde_json::Value> {
        self.wait_for_emails_within(Duration::from_secs(10), n)
            .await
    }

    /// Like [`TestApp::wait_for_emails`], failing the test after `patience`.
    pub async fn wait_for_emails_within(
        &self,
        patience: Duration,
        n: usize,
    ) -> Vec<serde_json::Value> {
        eventually_within(
            patience,
            &format!("{n} emails reach the email API"),
            || async {
                let received = self.sent_emails().await;
                (received.len() >= n).then_some(received)
            },
        )
        .await
    }

    /// Waits until no message in the outbox is pending any more.
    pub async fn wait_for_outbox_to_settle(&self) -> Vec<OutboxRow> {
        eventually("the outbox to settle", || async {
            let rows = self.outbox().await;
            rows.iter().all(|r| r.status != "pending").then_some(rows)
        })
        .await
    }

    pub async fn outbox(&self) -> Vec<OutboxRow> {
        sqlx::query_as(
            "SELECT recipient, status, attempts, last_error, \
                    html_body IS NOT NULL OR text_body IS NOT NULL AS has_body, \
                    claimed_until IS NOT NULL AS claimed \
             FROM email_outbox ORDER BY enqueued_at",
        )
        .fetch_all(&self.db_pool)
        .await
        .unwrap()
    }

    /// A delivery worker like the ones the app runs, for tests that run the
    /// app without them (`delivery.run_in_server = false`).
    /// The real `newsletter` binary, set up for this test's database, Redis
    /// keys and public address, sending to the email API at `email_api`,
    /// its output discarded. Add the command and any other settings.
    pub fn newsletter_command(&self, email_api: &str) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_newsletter"));
        command
            .env(
                "APP_DATABASE__DATABASE_NAME",
                &self.settings.database.database_name,
            )
            .env(
                "APP_RATE_LIMIT__KEY_PREFIX",
                &self.settings.rate_limit.key_prefix,
            )
            .env("APP_APPLICATION__BASE_URL", BASE_URL)
            .env("APP_EMAIL_CLIENT__PROVIDERS", "postmark")
            .env("APP_EMAIL_CLIENT__BASE_URL", email_api)
            .env("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", "test-token")
            // A free port each: tests run side by side.
            .env("APP_METRICS__PORT", "0")
            .stdout(std::process::Stdio::null());
        command
    }

    /// A delivery worker of its own, as another process would run it, with
    /// a listener of its own that already listens: a message committed from
    /// now on wakes it.
    pub async fn delivery_worker(&self) -> DeliveryWorker {
        delivery_worker_for(&self.settings).await
    }

    /// Campaign senders of their own, as another process would run them,
    /// already listening for work.
    pub async fn campaign_sender(&self) -> newsletter::campaigns::sender::Sender {
        let wakeups = listening(&self.settings, ledger::WORK_CHANNEL).await;
        campaign_sender(&self.settings, wakeups, Notifier::silent()).unwrap()
    }

    pub fn confirmation_links(&self, email: &serde_json::Value) -> ConfirmationLinks {
        let body = email;
        let extract = |field: &str| {
            let text = body[field].as_str().unwrap();
            let links: Vec<_> = linkify::LinkFinder::new()
                .links(text)
                .filter(|l| *l.kind() == linkify::LinkKind::Url)
                .collect();
            assert_eq!(links.len(), 1, "expected one link in {field}: {text}");
            Url::parse(links[0].as_str()).unwrap()
        };
        ConfirmationLinks {
            html: extract("HtmlBody"),
            plain_text: extract("TextBody"),
        }
    }
}

/// A delivery worker for `settings`, as another process would run it; see
/// [`TestApp::delivery_worker`].
pub async fn delivery_worker_for(settings: &Settings) -> DeliveryWorker {
    let wakeups = listening(settings, newsletter::outbox::CHANNEL).await;
    delivery_worker(settings, Db::connect_lazy(&settings.database, 2), wakeups).unwrap()
}

/// A listener on `channel`, once it listens. It runs until the test ends.
pub async fn listening(settings: &Settings, channel: &'static str) -> Wakeups {
    let db = Db::connect_lazy(&settings.database, 1);
    let (wakeups, _runs_on) = Wakeups::start(db, &[channel], CancellationToken::new());
    tokio::time::timeout(Duration::from_secs(10), wakeups.listening())
        .await
        .expect("the listener did not listen within 10 s");
    wakeups
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The Basic credentials every test app takes on `/webhooks/postmark`.
pub const WEBHOOK_USERNAME: &str = "postmark";
pub const WEBHOOK_PASSWORD: &str = "webhook password for tests";

/// Like [`spawn_app`], with a chance to change the settings first.
/// An app run the way `scripts/run_local.sh` runs it: its emails go to the
/// local inbox, and the links in them lead back to it, its public address
/// being the one it listens on (a port found free first). Its claims
/// outlast the inbox's longest call: the database's acquire and work
/// timeouts together.
pub async fn spawn_app_with_the_inbox() -> TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    spawn_app_with(|settings| {
        settings.application.port = port;
        settings.application.base_url = format!("http://127.0.0.1:{port}");
        settings.email_client.providers = vec![EmailBackend::Inbox];
        settings.delivery.sending.claim_timeout_seconds = 60;
        settings.campaigns.sending.claim_timeout_seconds = 60;
    })
    .await
}

pub async fn spawn_app_with(customise: impl FnOnce(&mut Settings)) -> TestApp {
    LazyLock::force(&TRACING);
    let email_server = MockServer::start().await;

    let mut settings = get_configuration().expect("Failed to read the configuration");
    let database = TestDatabase::create(&settings.database).await;
    database.migrate().await;
    settings.database = database.settings.clone();
    settings.application.port = 0;
    settings.metrics.port = 0;
    settings.application.base_url = BASE_URL.to_owned();
    settings.email_client.providers = vec![EmailBackend::Postmark];
    // Tests about retries count every failed call as an attempt; those
    // about failover open circuits with settings of their own.
    settings.email_client.open_circuit_after_failures = 1_000;
    settings.email_client.base_url = email_server.uri();
    settings.email_client.authorization_token = Some(SecretString::from("test-token"));
    settings.email_client.timeout_milliseconds = 2_000;
    settings.delivery.sending.workers = 1;
    settings.delivery.sending.poll_interval_milliseconds = 200;
    settings.delivery.sending.claim_timeout_seconds = 5;
    settings.delivery.sending.backoff_base_milliseconds = 50;
    settings.delivery.sending.backoff_max_seconds = 1;
    settings.campaigns.sending.workers = 1;
    settings.campaigns.sending.poll_interval_milliseconds = 200;
    settings.campaigns.sending.claim_timeout_seconds = 5;
    settings.campaigns.sending.backoff_base_milliseconds = 50;
    settings.campaigns.sending.backoff_max_seconds = 1;
    settings.campaigns.messages_per_second = 100_000;
    settings.webhooks.postmark_username = Some(WEBHOOK_USERNAME.to_owned());
    settings.webhooks.postmark_password = Some(SecretString::from(WEBHOOK_PASSWORD));
    // Webhook receivers in tests are local: the tests about refused
    // addresses turn this off. Short waits between attempts.
    settings.outgoing_webhooks.allow_private_addresses = true;
    settings.outgoing_webhooks.workers = 1;
    settings.outgoing_webhooks.poll_interval_milliseconds = 200;
    settings.outgoing_webhooks.claim_timeout_seconds = 5;
    settings.outgoing_webhooks.timeout_milliseconds = 2_000;
    settings.outgoing_webhooks.connect_timeout_milliseconds = 1_000;
    settings.outgoing_webhooks.retry_delays_seconds = vec![0.2, 0.2, 0.2, 0.2];
    // Tests that are about retention run it themselves.
    settings.retention.enabled = false;
    // Keys of this test only; limits generous enough for any test that does
    // not set its own.
    settings.rate_limit.key_prefix = format!("test:{}:", Uuid::new_v4().simple());
    // Far above the production 5 ms: with the whole suite running on two
    // cores a check can take longer, and a check that falls back to the
    // in-process limiter splits a tight budget in two.
    settings.rate_limit.redis_timeout_milliseconds = 250;
    for limit in [
        &mut settings.rate_limit.per_ip,
        &mut settings.rate_limit.confirm_per_ip,
        &mut settings.rate_limit.per_address,
    ] {
        limit.burst = 10_000;
        limit.per_period = 10_000;
    }
    // The configured Redis itself: a test may send the app through a proxy
    // it cuts, or as a user it restricts, and its keys are deleted all the
    // same.
    let redis_uri = settings.redis_uri.clone();
    customise(&mut settings);
    let redis_keys = RedisKeys {
        uri: redis_uri,
        prefix: settings.rate_limit.key_prefix.clone(),
    };

    let server = ServedApp::start(settings.clone()).await;
    let port = server.port;
    let metrics_address = format!("http://{}", server.metrics_address);

    TestApp {
        _server: server,
        address: format!("http://127.0.0.1:{port}"),
        port,
        metrics_address,
        db_pool: database.pool.clone(),
        email_server,
        settings,
        _redis_keys: redis_keys,
        api_client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        _database: database,
    }
}

/// An [`Application`] served from a thread and a runtime of its own, and
/// stopped when dropped: the drop returns once it has finished the requests
/// in flight and stopped its background work.
///
/// A server on the test's own runtime could not be waited for in `Drop`, and
/// actix serves from threads of its own: it went on serving after the test,
/// and a request the test had given up on (a browser killed mid-sign-in, an
/// assertion that failed while a request was slowed down) finished after
/// [`RedisKeys`] had deleted the test's keys, and wrote sessions, remembered
/// browsers and sign-in counters back, some kept for 30 days. Hold it where
/// it drops before the Redis keys and the database it writes to.
pub struct ServedApp {
    pub port: u16,
    pub metrics_address: std::net::SocketAddr,
    stopper: Stopper,
    /// Says the thread is done: its runtime, and every task on it, gone.
    /// (In a mutex: a `TestApp` is shared between tasks.)
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long stopping may take before the drop gives up on it.
    patience: Duration,
}

impl ServedApp {
    pub async fn start(settings: Settings) -> Self {
        // A graceful stop waits out the shutdown timeout at most; the
        // delivery workers then finish the email in flight.
        let patience = Duration::from_secs(settings.application.shutdown_timeout_seconds)
            + Duration::from_secs(30);
        let (started, built) = tokio::sync::oneshot::channel();
        let (done, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("app under test".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let application = match Application::build(settings).await {
                        Ok(application) => application,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok((
                        application.port(),
                        application.metrics_address(),
                        application.stopper(),
                    )));
                    if let Err(e) = application.run_until_stopped().await {
                        eprintln!("The app under test stopped with an error: {e}");
                    }
                });
                // Whatever the app left spawned ends with its runtime.
                drop(runtime);
                let _ = done.send(());
            })
            .expect("Failed to start the app's thread");
        let (port, metrics_address, stopper) = built
            .await
            .expect("The app's thread ended before the app was built")
            .expect("Failed to build the application");
        Self {
            port,
            metrics_address,
            stopper,
            stopped: Mutex::new(stopped),
            thread: Some(thread),
            patience,
        }
    }
}

impl Drop for ServedApp {
    fn drop(&mut self) {
        self.stopper.stop();
        // This blocks the test's thread, which has nothing left to run; the
        // app runs on threads of its own and stops without it.
        let stopped = match self.stopped.get_mut() {
            Ok(stopped) => stopped.recv_timeout(self.patience),
            Err(poisoned) => poisoned.into_inner().recv_timeout(self.patience),
        };
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped {
            let message = format!(
                "the app under test did not stop within {:?}: it may write to Redis and its \
                 database after the test has removed them",
                self.patience
            );
            // Panicking again while a failed test unwinds would abort the
            // whole test binary and hide the first failure.
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
            return;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The Redis keys of one test, deleted when the test is done. They would
/// expire on their own, but a test run leaves nothing behind. `uri` is the
/// Redis the keys are in, reached directly: not through a proxy the test
/// may have cut. Keys it cannot delete fail the test (or, in a test that
/// failed already, are reported), rather than staying for up to 30 days.
pub struct RedisKeys {
    pub uri: SecretString,
    pub prefix: String,
}

impl RedisKeys {
    fn delete(&self) -> redis::RedisResult<()> {
        use secrecy::ExposeSecret;
        let client = redis::Client::open(self.uri.expose_secret())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(5))?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut connection)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query::<()>(&mut connection)?;
        }
        Ok(())
    }
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        if let Err(e) = self.delete() {
            let message = format!("the keys under {} were left in Redis: {e}", self.prefix);
            // Panicking again while a failed test unwinds would abort the
            // whole test binary and hide the first failure.
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// One row of `email_outbox`, as tests look at it.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub has_body: bool,
    pub claimed: bool,
}

/// Polls `check` until it returns `Some`, failing the test after 10 seconds.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(10), what, check).await
}

/// Like [`eventually`], failing the test after `patience`.
pub async fn eventually_within<T, F, Fut>(patience: Duration, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An email API that holds the answers to the requests it chooses until the
/// test releases them: a send stays in flight for exactly as long as a test
/// needs, whatever the machine's load, which a fixed delay cannot promise.
pub struct HeldEmailApi {
    pub uri: String,
    received: Arc<Mutex<Vec<Vec<serde_json::Value>>>>,
    /// A permit per held answer released; closed once every answer is.
    gate: Arc<Semaphore>,
}

/// What [`HeldEmailApi`] answers a batch with: a status and a JSON body.
type Answer = (u16, serde_json::Value);

impl HeldEmailApi {
    /// Holds every batch, then answers each of its messages with `code` (0
    /// for accepted).
    pub async fn answering_each_message(code: i64) -> Self {
        Self::start(
            |_| true,
            move |batch| {
                let answers: Vec<_> = batch
                    .iter()
                    .map(|_| serde_json::json!({ "ErrorCode": code, "Message": "Held answer" }))
                    .collect();
                (200, answers.into())
            },
        )
        .await
    }

    /// Holds every batch, then answers it with `status`.
    pub async fn answering_status(status: u16) -> Self {
        Self::start(|_| true, move |_| (status, serde_json::Value::Null)).await
    }

    /// Answers each batch with what `answer` gives it; those that `hold`
    /// picks only once released.
    pub async fn start(
        hold: impl Fn(&[serde_json::Value]) -> bool + Send + Sync + 'static,
        answer: impl Fn(&[serde_json::Value]) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let rules = Arc::new((hold, answer));
        let (accept_received, accept_gate) = (received.clone(), gate.clone());
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let (received, gate, rules) =
                    (accept_received.clone(), accept_gate.clone(), rules.clone());
                tokio::spawn(async move {
                    let Some(batch) = read_batch(&mut connection).await else {
                        return;
                    };
                    let (hold, answer) = &*rules;
                    let held = hold(&batch);
                    let (status, body) = answer(&batch);
                    received.lock().unwrap().push(batch);
                    if held {
                        // A request its client gave up on (the email
                        // client's timeout) must not take the permit of
                        // one still waiting: a release goes to a live
                        // request, or the test waits for an answer that
                        // went nowhere. The client sends nothing more on
                        // the connection, so a read ends only when it
                        // hangs up.
                        let mut probe = [0; 1];
                        tokio::select! {
                            // Err once closed: every answer is released.
                            permit = gate.acquire() => {
                                if let Ok(permit) = permit {
                                    permit.forget();
                                }
                            }
                            _ = connection.read(&mut probe) => return,
                        }
                    }
                    let body = body.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} Answer\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = connection.write_all(response.as_bytes()).await;
                    let _ = connection.shutdown().await;
                });
            }
        });
        Self {
            uri,
            received,
            gate,
        }
    }

    /// A Postmark client for this API, with a timeout far longer than any
    /// claim in the tests.
    pub fn client(&self) -> EmailClient {
        EmailClient::postmark(
            self.uri.clone(),
            Sender::new(
                &Newsletter::parse("Newsletter", "", "Newsletter").unwrap(),
                &SubscriberEmail::parse("newsletter@example.com").unwrap(),
            ),
            SecretString::from("test-token"),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    /// Every batch received so far, held or answered.
    pub fn requests(&self) -> Vec<Vec<serde_json::Value>> {
        self.received.lock().unwrap().clone()
    }

    pub async fn wait_for_requests(&self, n: usize) {
        eventually(
            &format!("{n} requests reach the held email API"),
            || async { (self.requests().len() >= n).then_some(()) },
        )
        .await
    }

    /// Lets the oldest held answer go.
    pub fn release_one(&self) {
        self.gate.add_permits(1);
    }

    /// Lets every held answer go, and answers later requests at once.
    pub fn release(&self) {
        self.gate.close();
    }
}

/// Reads one HTTP request and returns its body, a batch of messages.
async fn read_batch(connection: &mut tokio::net::TcpStream) -> Option<Vec<serde_json::Value>> {
    let mut request = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())?;
            let body = end + 4..end + 4 + length;
            if request.len() >= body.end {
                return serde_json::from_slice(&request[body]).ok();
            }
        }
        let read = connection.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..read]);
    }
}

/// A TCP forwarder between the app and Postgres that a test can cut and
/// restore, to play a database outage without touching the real server, or
/// freeze and thaw, to play a link that silently stops carrying bytes.
pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// Connections turned away while cut.
    refused: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether new connections start frozen.
    frozen: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<Link>>>,
}

/// One proxied connection: the task forwarding it, and whether it is frozen.
struct Link {
    forwarding: tokio::task::JoinHandle<()>,
    frozen: watch::Sender<bool>,
}

impl TcpProxy {
    /// Forwards to the Postgres server of the configuration.
    pub async fn to_postgres() -> Self {
        let database = get_configuration().unwrap().database;
        Self::start(database.host, database.port).await
    }

    /// Forwards to the Redis server of the configuration.
    pub async fn to_redis() -> Self {
        use secrecy::ExposeSecret;
        let uri = Url::parse(get_configuration().unwrap().redis_uri.expose_secret()).unwrap();
        Self::start(
            uri.host_str().unwrap().to_owned(),
            uri.port().unwrap_or(6379),
        )
        .await
    }

    pub async fn start(host: String, port: u16) -> Self {
        let target = Arc::new((host, port));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept_refused = refused.clone();
        let frozen = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accept_up, accept_frozen, accept_connections) =
            (up.clone(), frozen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    accept_refused.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: the client sees the connection close
                }
                let target = target.clone();
                let (frozen, thawed) = watch::channel(accept_frozen.load(Ordering::SeqCst));
                let forwarding = tokio::spawn(async move {
                    let (host, port) = &*target;
                    if let Ok(server) = tokio::net::TcpStream::connect((host.as_str(), *port)).await
                    {
                        let (from_client, to_client) = client.into_split();
                        let (from_server, to_server) = server.into_split();
                        tokio::join!(
                            forward(from_client, to_server, thawed.clone()),
                            forward(from_server, to_client, thawed),
                        );
                    }
                });
                accept_connections
                    .lock()
                    .unwrap()
                    .push(Link { forwarding, frozen });
            }
        });
        Self {
            port,
            up,
            refused,
            frozen,
            connections,
        }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.connections.lock().unwrap().drain(..) {
            link.forwarding.abort();
        }
    }

    /// How many connections were turned away while cut: proof that the app
    /// met the outage rather than slipping past it.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Stops carrying bytes, in both directions, on every connection, open
    /// or new, while keeping them all open: neither end hears anything, not
    /// even a close. A route that went dark, or a server that hangs, looks
    /// like this; unlike a cut, nothing tells the client to give up.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.freeze_open_connections();
    }

    /// Freezes the connections open now and carries new ones as before: what
    /// a client sees when the server it was talking to vanished and another
    /// took over its address (a failover), or when a middlebox forgot the
    /// connections it was tracking.
    pub fn freeze_open_connections(&self) {
        for link in self.connections.lock().unwrap().iter() {
            link.frozen.send_replace(true);
        }
    }

    /// Carries bytes again on every connection, those held while frozen
    /// first.
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        for link in self.connections.lock().unwrap().iter() {
            link.frozen.send_replace(false);
        }
    }
}

/// Copies one direction of a proxied connection. While the link is frozen
/// what is read is held back, and so is the end of the stream: a close must
/// not get through a link that carries nothing.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await.unwrap_or(0);
        if frozen.wait_for(|frozen| !frozen).await.is_err() {
            return; // the proxy is gone
        }
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A pool of `max_connections` on a database of its own, migrated.
pub async fn database_with_pool(
    max_connections: u32,
    acquire_timeout_milliseconds: u64,
) -> (Db, TestDatabase) {
    let mut settings = get_configuration().expect("Failed to read the configuration");
    let database = TestDatabase::create(&settings.database).await;
    database.migrate().await;
    settings.database = database.settings.clone();
    settings.database.acquire_timeout_milliseconds = acquire_timeout_milliseconds;
    (
        Db::connect_lazy(&settings.database, max_connections),
        database,
    )
}

/// A database of its own for one test, with a random name, dropped (with any
/// connections still open to it) when the value is dropped.
pub struct TestDatabase {
    pub settings: DatabaseSettings,
    pub pool: PgPool,
}

impl TestDatabase {
    pub async fn create(template: &DatabaseSettings) -> Self {
        let mut settings = template.clone();
        settings.database_name = format!("test_{}", Uuid::new_v4().simple());
        let mut connection = PgConnection::connect_with(&settings.without_db())
            .await
            .expect("Failed to connect to Postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{}""#,
            settings.database_name
        )))
        .execute(&mut connection)
        .await
        .expect("Failed to create the test database");
        let pool = PgPool::connect_with(settings.with_db())
            .await
            .expect("Failed to connect to the test database");
        Self { settings, pool }
    }

    pub async fn migrate(&self) {
        MIGRATOR
            .run(&self.pool)
            .await
            .expect("Failed to migrate the test database");
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot be async, and the test's runtime may be shutting down:
        // do the cleanup on a thread with a runtime of its own.
        let settings = self.settings.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut connection = PgConnection::connect_with(&settings.without_db()).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                    settings.database_name
                )))
                .execute(&mut connection)
                .await?;
                Ok::<_, sqlx::Error>(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!(
                "Failed to drop test database {}: {e}",
                self.settings.database_name
            );
        }
    }
}

/// The variables of a production instance on this machine's Postgres
/// (which has no TLS) and `database_name`: fresh secrets of the right
/// lengths, an https address, credentials for the webhooks. What a real
/// deployment sets, so that production's start-up checks pass; a test
/// changes one to see it refused.
pub fn production_variables(database_name: &str) -> Vec<(&'static str, String)> {
    let fresh = || Uuid::new_v4().simple().to_string();
    vec![
        ("APP_ENVIRONMENT", "production".to_owned()),
        ("APP_DATABASE__REQUIRE_SSL", "false".to_owned()),
        ("APP_DATABASE__DATABASE_NAME", database_name.to_owned()),
        ("APP_DATABASE__PASSWORD", fresh()),
        (
            "APP_APPLICATION__HMAC_SECRET",
            format!("{}{}", fresh(), fresh()),
        ),
        // 32 bytes as 64 hex digits.
        ("APP_ADMIN__TOTP_KEY", format!("{}{}", fresh(), fresh())),
        (
            "APP_APPLICATION__BASE_URL",
            "https://news.example.com".to_owned(),
        ),
        ("APP_EMAIL_CLIENT__AUTHORIZATION_TOKEN", fresh()),
        ("APP_WEBHOOKS__POSTMARK_USERNAME", "postmark".to_owned()),
        ("APP_WEBHOOKS__POSTMARK_PASSWORD", fresh()),
    ]
}

/// Everything logged from the call on, as JSON lines (see
/// [`CAPTURED_LEVELS`]). Call it before [`spawn_app`], so that the app's
/// spans are recorded from their start. In a process that runs other tests
/// beside this one, their lines are captured too: look only for what this
/// test made. One test at a time may capture.
pub fn capture_logs() -> CapturedLogs {
    LazyLock::force(&TRACING);
    CAPTURED.0.lock().unwrap().clear();
    CAPTURING.store(true, Ordering::Relaxed);
    CAPTURED.clone()
}

/// What [`capture_logs`] collected.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
