//! End-to-end tests in a real headless Chromium, driven over WebDriver
//! (chromedriver) the way a person would use the service: open the form,
//! fill it in, submit, open the link from the email. Screenshots of every
//! page go to `target/tmp/screenshots/` for a person to look at.
//!
//! Every test starts its own chromedriver, which starts its own Chromium:
//! a dozen processes that outlive the test unless something ends them.
//! Killing chromedriver does not (Chromium is its child and carries on
//! without it), and only a test that gets to its end closes its WebDriver
//! session. So each browser gets a directory of its own, which every one of
//! its processes names on its command line, and the `Browser` guard kills
//! whatever still names it when dropped: after a pass, a failed assertion
//! or an early return alike. `scripts/test.sh` looks for the same names at
//! the end of a run.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs
//! them) and Linux's `/proc`; `CHROMIUM` and `CHROMEDRIVER` override the
//! binaries' paths, and `BROWSER_TEST_DIR` the directory the browsers'
//! directories go in.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::json;

/// A headless Chromium with a WebDriver session on its own chromedriver.
///
/// Dropping it ends chromedriver, Chromium and every helper process Chromium
/// started, and waits until they are gone. [`Browser::close`] also ends the
/// session first, which lets Chromium shut down cleanly; a test that never
/// gets there (it failed) still leaves nothing running.
struct Browser {
    client: Client,
    guard: BrowserProcesses,
}

/// The chromedriver process of one browser and the directory that marks
/// every process it leads to.
struct BrowserProcesses {
    driver: Child,
    directory: BrowserDirectory,
}

impl Drop for BrowserProcesses {
    fn drop(&mut self) {
        // chromedriver is our child: kill and reap it. Chromium is its
        // child and does not go with it; the sweep below ends it, its
        // zygotes and renderers, and the crash handlers Chromium moves into
        // sessions of their own (out of reach of any process-group kill).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Err(left) = end_processes_naming(&self.directory.marker(), Duration::from_secs(10)) {
            let message = format!("a browser's processes survived being killed: {left:#?}");
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

/// A browser's own directory, removed on drop: Chromium's profile, its
/// crash reports and chromedriver's log all go in it, so every process of
/// the browser has its path on its command line.
struct BrowserDirectory(PathBuf);

impl BrowserDirectory {
    fn create() -> Self {
        let root = std::env::var_os("BROWSER_TEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("newsletter-browsers"));
        let directory = root.join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&directory).unwrap();
        Self(directory)
    }

    /// What the command line of each of the browser's processes contains.
    fn marker(&self) -> String {
        format!("{}/", self.0.display())
    }
}

impl Drop for BrowserDirectory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running process, as `/proc` shows it.
struct Process {
    pid: i32,
    command: String,
}

impl std::fmt::Debug for Process {
    // Chromium's command lines run to a couple of thousand characters; the
    // start says which process it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let start: String = self.command.chars().take(160).collect();
        write!(f, "{} {start}", self.pid)
    }
}

/// Every running process whose command line contains `marker`.
fn processes_naming(marker: &str) -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid = entry.file_name().to_str()?.parse().ok()?;
            // Gone since the listing (or a zombie, whose command line is
            // empty): not running.
            let arguments = std::fs::read(entry.path().join("cmdline")).ok()?;
            let command = String::from_utf8_lossy(&arguments).replace('\0', " ");
            command.contains(marker).then_some(Process { pid, command })
        })
        .collect()
}

/// Kills every process whose command line contains `marker` until none is
/// left, polling until `patience` runs out; the survivors if it does.
fn end_processes_naming(marker: &str, patience: Duration) -> Result<(), Vec<Process>> {
    let deadline = Instant::now() + patience;
    loop {
        // Listing again after each round catches a process forked (a
        // renderer from a zygote) between the listing and the kill.
        let left = processes_naming(marker);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left);
        }
        for process in &left {
            // SAFETY: kill(2) only sends a signal; no memory is involved. A
            // pid listed a moment ago names another process only once the
            // kernel's pid counter has wrapped round.
            unsafe { libc::kill(process.pid, libc::SIGKILL) };
        }
        // Drop cannot await: this blocks the thread of the test that is
        // ending, which has nothing else left to run.
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let directory = BrowserDirectory::create();
        // chromedriver stays in the test's process group: Ctrl-C reaches it
        // and its Chromium as it reaches the test, and they quit with it.
        let mut driver = Command::new(env_or("CHROMEDRIVER", "/usr/bin/chromedriver"))
            // Port 0: chromedriver takes a free port and says which.
            .arg("--port=0")
            // The log puts the marker on chromedriver's command line too.
            .arg(format!(
                "--log-path={}",
                directory.0.join("chromedriver.log").display()
            ))
            // Chromium keeps crash reports under its configuration
            // directory; this puts them, and the marker, on its crash
            // handlers' command lines (they get no --user-data-dir).
            .env("XDG_CONFIG_HOME", directory.0.join("config"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: apt-get install chromium chromium-driver");
        let stdout = driver.stdout.take().unwrap();
        let processes = BrowserProcesses { driver, directory };
        let port = listening_port(stdout).await;

        let profile = processes.directory.0.join("profile");
        let mut options = json!({
            "binary": env_or("CHROMIUM", "/usr/bin/chromium"),
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // Without these Chromium keeps calling home, which this
                // closed network refuses, and stalls.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                format!("--user-data-dir={}", profile.display()),
                format!("--window-size={width},{height}"),
            ],
        });
        // A desktop window cannot be made as narrow as a phone; emulate one.
        if width < 500 {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 2.0 }
            });
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        // chromedriver listens before it announces its port: one attempt.
        let client = ClientBuilder::rustls()
            .unwrap()
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver started no browser: {e}"));
        Self {
            client,
            guard: processes,
        }
    }

    /// Ends the WebDriver session, so that Chromium shuts down cleanly, then
    /// everything that is left, as dropping the browser does.
    async fn close(self) {
        self.client
            .clone()
            .close()
            .await
            .expect("the WebDriver session did not close");
    }

    /// Every process of this browser still running.
    fn processes(&self) -> Vec<Process> {
        processes_naming(&self.guard.directory.marker())
    }

    /// Opens the subscribe page and waits for it.
    async fn open_the_form(&self, app: &helpers::TestApp) {
        self.client
            .goto(&format!("{}/", app.address))
            .await
            .unwrap();
        self.wait_for_heading("Subscribe").await;
    }

    async fn fill(&self, id: &str, text: &str) {
        let field = self.client.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn value_of(&self, id: &str) -> String {
        let field = self.client.find(Locator::Id(id)).await.unwrap();
        field.prop("value").await.unwrap().unwrap_or_default()
    }

    async fn submit(&self) {
        self.client
            .find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Waits for a heading with this text: the page it belongs to has loaded.
    async fn wait_for_heading(&self, text: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&format!("//h1[contains(., \"{text}\")]")))
            .await
            .unwrap_or_else(|e| panic!("no heading {text:?}: {e}"));
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn screenshot(&self, name: &str) {
        let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&directory).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(directory.join(format!("{name}.png")), png).unwrap();
    }
}

fn env_or(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// Reads the port chromedriver announces on its standard output.
async fn listening_port(stdout: std::process::ChildStdout) -> u16 {
    let (announce, announced) = tokio::sync::oneshot::channel();
    // A thread keeps reading until chromedriver closes its output, so that
    // it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut announce = Some(announce);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let port = line
                .strip_prefix("ChromeDriver was started successfully on port ")
                .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
            if let Some(port) = port
                && let Some(announce) = announce.take()
            {
                let _ = announce.send(port);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), announced)
        .await
        .expect("chromedriver did not say which port it listens on within 10 s")
        .expect("chromedriver exited without listening")
}

#[tokio::test]
async fn a_person_subscribes_and_confirms_in_a_real_browser() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    let browser = Browser::start(1280, 900).await;

    browser.open_the_form(&app).await;
    browser.screenshot("01-subscribe-form").await;
    browser.fill("name", "Ada Lovelace").await;
    browser.fill("email", "ada@example.com").await;
    browser.submit().await;

    browser.wait_for_heading("Check your inbox").await;
    browser.screenshot("02-check-your-inbox").await;

    let email = &app.wait_for_emails(1).await[0];
    let link = app.local(&app.confirmation_links(email).html);
    browser.client.goto(link.as_str()).await.unwrap();
    browser.wait_for_heading("Subscription confirmed").await;
    browser.screenshot("03-confirmed").await;
    assert_eq!(app.subscriber_status().await, "confirmed");

    browser.client.goto(link.as_str()).await.unwrap();
    browser.wait_for_heading("Already confirmed").await;
    browser.screenshot("04-already-confirmed").await;
    browser.close().await;
}

#[tokio::test]
async fn an_invalid_email_shows_the_reason_next_to_the_field_and_keeps_the_values() {
    let app = helpers::spawn_app().await;
    let browser = Browser::start(1280, 900).await;

    browser.open_the_form(&app).await;
    browser.fill("name", "Ada Lovelace").await;
    // The browser's own check accepts a dotless domain; the service does not.
    browser.fill("email", "ada@localhost").await;
    browser.submit().await;

    browser.wait_for_heading("Subscribe").await;
    let reason = browser.text_of("#email-error").await;
    browser.screenshot("05-invalid-email").await;
    assert!(reason.contains("not a valid email address"), "{reason}");
    assert_eq!(browser.value_of("name").await, "Ada Lovelace");
    assert_eq!(browser.value_of("email").await, "ada@localhost");
    assert_eq!(app.subscriber_count().await, 0);
    browser.close().await;
}

#[tokio::test]
async fn the_form_fits_a_phone_screen() {
    let app = helpers::spawn_app().await;
    let browser = Browser::start(390, 844).await;

    browser.open_the_form(&app).await;
    browser.screenshot("06-subscribe-form-on-a-phone").await;

    // Nothing wider than the screen: no sideways scrolling.
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(false));
    browser.close().await;
}

#[tokio::test]
async fn with_the_button_setting_the_link_confirms_only_after_a_press() {
    let app = helpers::spawn_app_with(|s| s.subscriptions.confirm_with_button = true).await;
    app.mock_email_api_ok().await;
    app.post_subscriptions("name=Ada&email=ada%40example.com")
        .await;
    let link = app.local(
        &app.confirmation_links(&app.wait_for_emails(1).await[0])
            .html,
    );
    let browser = Browser::start(1280, 900).await;

    browser.client.goto(link.as_str()).await.unwrap();
    browser.wait_for_heading("Confirm your subscription").await;
    browser.screenshot("07-confirm-button").await;
    assert_eq!(app.subscriber_status().await, "pending_confirmation");
    browser.submit().await;

    browser.wait_for_heading("Subscription confirmed").await;
    assert_eq!(app.subscriber_status().await, "confirmed");
    browser.close().await;
}

#[tokio::test]
async fn a_test_that_fails_with_its_browser_open_leaves_no_browser_process_running() {
    let mut marker = String::new();
    let mut driver = 0;
    let mut running = Vec::new();
    let failed = AssertUnwindSafe(async {
        let browser = Browser::start(1280, 900).await;
        marker = browser.guard.directory.marker();
        driver = browser.guard.driver.id() as i32;
        running = browser.processes();
        panic!("failing on purpose with the browser open");
    })
    .catch_unwind()
    .await;

    // The panic is ours, not one from starting the browser.
    let payload = failed.expect_err("the test body panics");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"failing on purpose with the browser open")
    );
    // There was something to clean up: chromedriver and Chromium, marked.
    assert!(running.iter().any(|p| p.pid == driver), "{running:#?}");
    assert!(
        running
            .iter()
            .any(|p| p.command.contains("--user-data-dir=")),
        "{running:#?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = processes_naming(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = processes_naming(&marker);
    }
    assert!(left.is_empty(), "still running: {left:#?}");
    assert!(!Path::new(&marker).exists(), "{marker} is still there");
}
