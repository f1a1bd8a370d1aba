//! End-to-end tests in a real headless Chromium, driven over WebDriver
//! (chromedriver) the way a person would use the service: open the form,
//! fill it in, submit, open the link from the email; and the way an admin
//! runs the newsroom, from the account the command line creates to signing
//! out. Screenshots of every page, at desktop and phone widths, go to
//! `target/tmp/screenshots/` for a person to look at.
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

use std::io::{BufRead, BufReader, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use newsletter::admin::totp::{self, TotpSecret};
use reqwest::Url;
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
        let browser = Self {
            client,
            guard: processes,
        };
        browser.assert_as_wide_as(width).await;
        browser
    }

    /// Fails unless a page that asks for the device's width is laid out at
    /// `width`: a test that checks pages at a width must run at that width,
    /// and a switch Chromium ignored (or read differently) would have it
    /// check every page at some other width and pass. The viewport
    /// (`innerWidth`), which is exact, rather than the client area, which a
    /// page's vertical scrollbar narrows. Measured on a page of its own: a
    /// page without `<meta name="viewport">` (`about:blank`) is laid out 980
    /// px wide on a phone, whatever its screen.
    async fn assert_as_wide_as(&self, width: u32) {
        self.client
            .goto("data:text/html,<meta%20name=viewport%20content=width=device-width>")
            .await
            .unwrap();
        assert_eq!(
            self.inner_width().await,
            width,
            "the window is not as wide as asked"
        );
    }

    /// The width of the viewport the page is laid out in.
    async fn inner_width(&self) -> u32 {
        let width = self
            .client
            .execute("return window.innerWidth;", vec![])
            .await
            .unwrap();
        serde_json::from_value(width).unwrap()
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

    /// The element's text, or `None` while it is not there: found on a
    /// page that is being replaced (one that reloads itself), it is gone
    /// by the time its text is asked for.
    async fn text_of_if_there(&self, css: &str) -> Option<String> {
        self.client
            .find(Locator::Css(css))
            .await
            .ok()?
            .text()
            .await
            .ok()
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

    /// Waits for an element, for pages that have no heading of their own to
    /// wait for.
    async fn wait_for(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"))
    }

    /// Clicks the element `css` picks (a link, a button). Admin pages hold
    /// more than one submit button (the navigation's sign-out is one), so
    /// unlike [`Browser::submit`] this names which.
    async fn press(&self, css: &str) {
        self.wait_for(css).await.click().await.unwrap();
    }

    /// Waits until the address in the bar passes `check`: a page that
    /// reloads with the same heading (a search) has no other sign.
    async fn wait_for_address(&self, what: &str, check: impl Fn(&Url) -> bool) -> Url {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.client.current_url().await.unwrap();
            if check(&url) {
                return url;
            }
            assert!(Instant::now() < deadline, "never got to {what}; at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Signs in on the form, as a person types it; the caller waits for
    /// whichever page should follow.
    async fn sign_in(&self, app: &helpers::TestApp, username: &str, password: &str) {
        self.client
            .goto(&format!("{}/login", app.address))
            .await
            .unwrap();
        self.wait_for_heading("Sign in").await;
        self.fill("username", username).await;
        self.fill("password", password).await;
        self.press(r#"form[action="/login"] button[type=submit]"#)
            .await;
    }

    /// Presses "Sign out" in the navigation and waits for the sign-in page.
    async fn sign_out(&self) {
        self.press(".admin-nav button[type=submit]").await;
        self.wait_for_address("the sign-in page", |url| url.path() == "/login")
            .await;
        self.wait_for_heading("Sign in").await;
    }

    /// Whether the page can be scrolled sideways. A table in a `.scroll`
    /// box scrolls within it and does not count.
    async fn scrolls_sideways(&self) -> bool {
        let overflow = self
            .client
            .execute(
                "return document.documentElement.scrollWidth > window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        overflow == json!(true)
    }

    /// The element's box, asserting that it is shown, has a size and lies
    /// within the width of the window: nothing of it is cut off.
    async fn assert_shown_whole(&self, css: &str) -> (f64, f64) {
        let element = self.wait_for(css).await;
        assert!(element.is_displayed().await.unwrap(), "{css} is hidden");
        let (x, _, width, height) = element.rectangle().await.unwrap();
        assert!(width > 0.0 && height > 0.0, "{css} is {width}x{height}");
        let window = self
            .client
            .execute("return window.innerWidth;", vec![])
            .await
            .unwrap()
            .as_f64()
            .unwrap();
        assert!(
            x >= 0.0 && x + width <= window + 0.5,
            "{css} spans {x}..{} of a window {window} wide",
            x + width
        );
        (width, height)
    }

    /// Scrolls the page until the element `css` picks is at the top of the
    /// window, for a screenshot of what is below the first screen.
    async fn scroll_to(&self, css: &str) {
        let element = self.wait_for(css).await;
        let argument = serde_json::to_value(&element).unwrap();
        self.client
            .execute(
                "arguments[0].scrollIntoView({ block: 'start' });",
                vec![argument],
            )
            .await
            .unwrap();
    }

    /// The texts of every element `css` picks, in page order.
    async fn texts_of_all(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
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

/// The password every admin of these tests is created with.
const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Runs `newsletter admin create` the way an operator does: the built
/// binary, configured by the same files and `APP_*` variables as the app
/// under test and pointed at that app's database, with the password piped
/// in on standard input.
async fn create_admin_with_the_command(app: &helpers::TestApp, username: &str, email: &str) {
    use secrecy::ExposeSecret;
    let database = app.settings.database.clone();
    let arguments = ["admin", "create", "--username", username, "--email", email].map(String::from);
    // Waiting on a child process blocks: not on the runtime the app's
    // server and the browser's client share.
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_newsletter"))
            .args(&arguments)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("APP_DATABASE__HOST", &database.host)
            .env("APP_DATABASE__PORT", database.port.to_string())
            .env("APP_DATABASE__USERNAME", &database.username)
            .env("APP_DATABASE__PASSWORD", database.password.expose_secret())
            .env("APP_DATABASE__DATABASE_NAME", &database.database_name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the newsletter binary did not start");
        // Closed once written: the command reads one line, then the end.
        let mut stdin = command.stdin.take().unwrap();
        writeln!(stdin, "{ADMIN_PASSWORD}").unwrap();
        drop(stdin);
        command.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`newsletter admin create` failed ({}):\n{said}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        said.contains(&format!("Created the admin {username}.")),
        "{said}"
    );
}

/// Stores a subscriber directly, signed up (and, if `confirmed`, confirmed)
/// `days_ago`.
async fn store_subscriber(
    app: &helpers::TestApp,
    email: &str,
    name: &str,
    confirmed: bool,
    days_ago: i32,
) {
    sqlx::query(
        "INSERT INTO subscriptions (id, email, name, subscribed_at, status, confirmed_at) \
         VALUES ($1, $2, $3, now() - make_interval(days => $4), $5, \
                 CASE WHEN $6 THEN now() - make_interval(days => $4) END)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(email)
    .bind(name)
    .bind(days_ago)
    .bind(if confirmed {
        "confirmed"
    } else {
        "pending_confirmation"
    })
    .bind(confirmed)
    .execute(&app.db_pool)
    .await
    .unwrap();
}

/// Five subscribers: four signed up in the last 30 days (on three different
/// days), two of those confirmed, and one from long before.
async fn store_a_few_subscribers(app: &helpers::TestApp) {
    store_subscriber(app, "ada@example.com", "Ada Lovelace", true, 0).await;
    // The address does not give the name away: a search for part of the
    // name finds her by her name.
    store_subscriber(app, "gh@example.com", "Grace Hopper", false, 0).await;
    store_subscriber(app, "alan@example.com", "Alan Turing", true, 3).await;
    store_subscriber(app, "kj@example.com", "Katherine Johnson", false, 12).await;
    store_subscriber(app, "ewd@example.com", "Edsger Dijkstra", true, 45).await;
}

/// The dashboard's figures for [`store_a_few_subscribers`], and its chart
/// drawn whole with a bar on each of the three days with sign-ups.
async fn assert_the_dashboard_shows_the_list(browser: &Browser) {
    assert_eq!(browser.text_of("#total").await, "5");
    assert_eq!(browser.text_of(r#"dd[data-status="confirmed"]"#).await, "3");
    assert_eq!(
        browser
            .text_of(r#"dd[data-status="pending_confirmation"]"#)
            .await,
        "2"
    );
    assert_eq!(browser.text_of("#sign-ups").await, "4");
    assert_eq!(browser.text_of("#confirmation-rate").await, "50%");

    let (width, height) = browser.assert_shown_whole("svg#daily-chart").await;
    assert!(
        width >= 300.0 && height >= 100.0,
        "the chart is too small to read: {width}x{height}"
    );
    let bars = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#daily-chart rect.sign-ups')]\
               .map(bar => bar.getBoundingClientRect().height);",
            vec![],
        )
        .await
        .unwrap();
    let bars: Vec<f64> = serde_json::from_value(bars).unwrap();
    assert_eq!(bars.len(), 30, "a bar for each of the last 30 days");
    let drawn = bars.iter().filter(|height| **height > 0.0).count();
    assert_eq!(drawn, 3, "bars on the days with sign-ups: {bars:?}");
    // Today's date under the chart's right end, not cut off by the edge.
    browser
        .assert_shown_whole(".chart-labels span:last-child")
        .await;

    // A figure whose words run out of its box.
    let overflowing = browser
        .client
        .execute(
            "return [...document.querySelectorAll('.figures > div')]\
               .filter(box => box.scrollWidth > box.clientWidth)\
               .map(box => box.textContent.trim());",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflowing, json!([]), "figures too wide for their box");
}

/// Searches the subscriber list and waits for the results.
async fn search_subscribers(browser: &Browser, words: &str) {
    browser.fill("q", words).await;
    browser.press("form.search button[type=submit]").await;
    browser
        .wait_for_address("the search's results", |url| {
            url.path() == "/admin/subscribers"
                && url
                    .query_pairs()
                    .any(|(key, value)| key == "q" && value == words)
        })
        .await;
    browser.wait_for("#subscribers").await;
}

/// The names in the subscriber list as shown.
async fn names_listed(browser: &Browser) -> Vec<String> {
    browser
        .texts_of_all("#subscribers tbody td:nth-child(2)")
        .await
}

/// Turns on two-factor sign-in from its page, with the code an app would
/// show for the key on it; the key, that code and the recovery codes shown.
async fn enrol_a_second_factor(
    browser: &Browser,
    screenshots: &str,
) -> (TotpSecret, String, Vec<String>) {
    browser.press(r#".admin-nav a[href="/admin/totp"]"#).await;
    browser.wait_for_heading("Two-factor sign-in").await;
    let (width, height) = browser.assert_shown_whole("#totp-qr svg").await;
    assert!(
        width >= 150.0 && height >= 150.0,
        "the QR code is too small to scan: {width}x{height}"
    );
    browser.screenshot(&format!("{screenshots}-totp")).await;

    let shown = browser.text_of("#totp-secret").await;
    let base32: String = shown.chars().filter(|c| !c.is_whitespace()).collect();
    let key = totp_rs::Secret::try_from_base32(&base32)
        .unwrap_or_else(|e| panic!("the key {shown:?} is not base32: {e:?}"));
    let secret = TotpSecret::from_bytes(key.as_bytes().to_vec());
    let code = totp::code_at(&secret, std::time::SystemTime::now());
    browser.fill("password", ADMIN_PASSWORD).await;
    browser.fill("code", &code).await;
    browser
        .press(r#"form[action="/admin/totp"] button[type=submit]"#)
        .await;

    browser.wait_for_heading("Two-factor sign-in is on").await;
    let recovery_codes = browser.texts_of_all("#recovery-codes code").await;
    assert_eq!(recovery_codes.len(), 10, "{recovery_codes:?}");
    for shown in &recovery_codes {
        let groups: Vec<usize> = shown.split('-').map(str::len).collect();
        assert_eq!(groups, [4, 4, 4, 4], "not a recovery code: {shown:?}");
    }
    browser.assert_shown_whole("#recovery-codes").await;
    browser
        .screenshot(&format!("{screenshots}-recovery-codes"))
        .await;
    (secret, code, recovery_codes)
}

/// Signs out and checks the session is over: the sign-in page says so, and
/// the dashboard sends the browser back to it.
async fn sign_out_for_good(browser: &Browser, app: &helpers::TestApp, screenshot: &str) {
    browser.sign_out().await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.query(), Some("notice=signed-out"));
    assert_eq!(browser.text_of(".notice").await, "You are signed out.");
    browser.screenshot(screenshot).await;

    browser
        .client
        .goto(&format!("{}/admin/dashboard", app.address))
        .await
        .unwrap();
    browser
        .wait_for_address("the sign-in page", |url| url.path() == "/login")
        .await;
    browser.wait_for_heading("Sign in").await;
}

#[tokio::test]
async fn an_admin_created_with_the_command_signs_in_with_a_code_and_finds_subscribers_in_a_real_browser()
 {
    let app = helpers::spawn_app().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(1280, 900).await;

    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    assert_eq!(browser.path().await, "/admin/dashboard");
    assert_the_dashboard_shows_the_list(&browser).await;
    let activity = browser.texts_of_all("#audit-log td").await;
    assert!(
        activity.iter().any(|cell| cell == "admin-created")
            && activity.iter().any(|cell| cell == "from the command line"),
        "the command's work is in the audit log: {activity:?}"
    );
    browser.screenshot("admin-desktop-01-dashboard").await;
    browser.scroll_to("#chart-heading").await;
    browser.screenshot("admin-desktop-01-dashboard-below").await;

    browser
        .press(r#".admin-nav a[href="/admin/subscribers"]"#)
        .await;
    browser.wait_for_heading("Subscribers").await;
    assert_eq!(names_listed(&browser).await.len(), 5);
    browser.screenshot("admin-desktop-02-subscribers").await;
    search_subscribers(&browser, "hopp").await;
    assert_eq!(names_listed(&browser).await, ["Grace Hopper"]);
    browser
        .screenshot("admin-desktop-03-subscribers-search")
        .await;

    // A download lands out of WebDriver's reach: fetch what the export link
    // points at with the browser's own session instead.
    let export = browser
        .wait_for("a#export")
        .await
        .prop("href")
        .await
        .unwrap()
        .expect("the export link has an address");
    let session = browser.client.get_named_cookie("session").await.unwrap();
    let response = reqwest::Client::new()
        .get(&export)
        .header(
            reqwest::header::COOKIE,
            format!("session={}", session.value()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK, "{export}");
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert!(
        content_type.to_str().unwrap().starts_with("text/csv"),
        "{content_type:?}"
    );
    let file = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(file.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        ["email", "name", "status", "subscribed_at", "confirmed_at"]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|row| row.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 1, "only what the search found: {file}");
    assert_eq!(
        rows[0][..3],
        ["gh@example.com", "Grace Hopper", "pending_confirmation"]
    );

    let (secret, enrolment_code, _) = enrol_a_second_factor(&browser, "admin-desktop-04").await;

    browser.sign_out().await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Enter your code").await;
    assert_eq!(browser.path().await, "/login/code");
    browser.screenshot("admin-desktop-05-code").await;
    // The code that turned TOTP on counts as used: wait for the app to show
    // the next one, as a person would.
    let code = helpers::eventually_within(
        Duration::from_secs(35),
        "the authenticator's next code",
        || async {
            let code = totp::code_at(&secret, std::time::SystemTime::now());
            (code != enrolment_code).then_some(code)
        },
    )
    .await;
    browser.fill("code", &code).await;
    browser
        .press(r#"form[action="/login/code"] button[type=submit]"#)
        .await;
    browser.wait_for_heading("Dashboard").await;
    assert_eq!(browser.path().await, "/admin/dashboard");
    let account = browser.text_of("#account-heading + p").await;
    assert!(
        account.contains("Two-factor sign-in is on (10 recovery codes left)"),
        "{account}"
    );

    sign_out_for_good(&browser, &app, "admin-desktop-06-signed-out").await;
    browser.close().await;
}

#[tokio::test]
async fn on_a_phone_the_newsroom_fits_the_screen_and_a_recovery_code_signs_in() {
    let app = helpers::spawn_app().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(390, 844).await;

    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    assert_the_dashboard_shows_the_list(&browser).await;
    browser.assert_shown_whole(".admin-nav").await;
    assert!(!browser.scrolls_sideways().await, "the dashboard");
    browser.screenshot("admin-phone-01-dashboard").await;
    browser.scroll_to("#chart-heading").await;
    browser.screenshot("admin-phone-01-dashboard-chart").await;
    browser.scroll_to("#audit-heading").await;
    browser
        .screenshot("admin-phone-01-dashboard-activity")
        .await;

    browser
        .press(r#".admin-nav a[href="/admin/subscribers"]"#)
        .await;
    browser.wait_for_heading("Subscribers").await;
    // Every one of them has an address at example.com.
    search_subscribers(&browser, "example").await;
    assert_eq!(names_listed(&browser).await.len(), 5);
    // The table may be wider than a phone: its own box scrolls, the page
    // does not.
    assert!(!browser.scrolls_sideways().await, "the subscriber list");
    browser
        .assert_shown_whole(".scroll:has(> #subscribers)")
        .await;
    browser.assert_shown_whole("a#export").await;
    browser.screenshot("admin-phone-02-subscribers").await;
    build_a_segment(&browser, "admin-phone-02").await;

    // The attributes page, with the longest name there can be, and the
    // form it adds to a subscriber's page.
    browser
        .press(r#".admin-nav a[href="/admin/attributes"]"#)
        .await;
    browser.wait_for_heading("Attributes").await;
    let longest = "membership_renewal_reminder_sent_before_the_annual_meeting_2025";
    assert_eq!(longest.len(), 63);
    browser.fill("name", longest).await;
    browser.press("#new-attribute button[type=submit]").await;
    browser.wait_for("#attributes-notice").await;
    assert!(!browser.scrolls_sideways().await, "the attributes page");
    browser.assert_shown_whole("#new-attribute").await;
    browser.screenshot("admin-phone-02-attributes").await;
    browser
        .press(r#".admin-nav a[href="/admin/subscribers"]"#)
        .await;
    browser.wait_for_heading("Subscribers").await;
    browser.press("#subscribers tbody a").await;
    browser.wait_for("form#attributes").await;
    assert!(!browser.scrolls_sideways().await, "a subscriber's page");
    browser.assert_shown_whole("form#attributes").await;
    browser.scroll_to("#attributes-heading").await;
    browser
        .screenshot("admin-phone-02-subscriber-attributes")
        .await;

    let (_, _, recovery_codes) = enrol_a_second_factor(&browser, "admin-phone-03").await;
    assert!(!browser.scrolls_sideways().await, "the recovery codes");

    browser.sign_out().await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Enter your code").await;
    assert!(!browser.scrolls_sideways().await, "the code page");
    browser.screenshot("admin-phone-04-code").await;
    browser.fill("code", &recovery_codes[0]).await;
    browser
        .press(r#"form[action="/login/code"] button[type=submit]"#)
        .await;
    browser.wait_for_heading("Dashboard").await;
    let account = browser.text_of("#account-heading + p").await;
    assert!(
        account.contains("(9 recovery codes left)"),
        "the recovery code was used up: {account}"
    );

    sign_out_for_good(&browser, &app, "admin-phone-05-signed-out").await;
    browser.close().await;
}

/// Opens the segments from the navigation, counts a segment of everyone
/// and saves it, checking that neither page scrolls sideways; screenshots
/// are named after `prefix`.
async fn build_a_segment(browser: &Browser, prefix: &str) {
    browser
        .press(r#".admin-nav a[href="/admin/segments"]"#)
        .await;
    browser.wait_for_heading("Segments").await;
    assert!(!browser.scrolls_sideways().await, "the segments");
    browser.assert_shown_whole("#segment-form").await;
    browser.fill("segment-name", "Everyone").await;
    browser.press("button#count-button").await;
    let count = browser
        .wait_for("#segment-count")
        .await
        .text()
        .await
        .unwrap();
    assert!(count.contains("confirmed reader"), "{count}");
    browser.screenshot(&format!("{prefix}-segments")).await;
    browser.press("button#save-button").await;
    browser.wait_for_heading("Everyone").await;
    assert!(!browser.scrolls_sideways().await, "a segment's page");
    browser.assert_shown_whole("form#delete-segment").await;
    browser.screenshot(&format!("{prefix}-segment")).await;
}

/// Writes an issue on the compose form, as a person types it.
async fn write_an_issue(browser: &Browser, title: &str, content: &str) {
    browser
        .press(r#".admin-nav a[href="/admin/newsletters"]"#)
        .await;
    browser.wait_for_heading("Newsletters").await;
    browser.press("a#new-issue").await;
    browser.wait_for_heading("New issue").await;
    browser.fill("title", title).await;
    browser.fill("content", content).await;
}

/// Presses Publish, and answers the question its dialog asks (which must
/// be `question`) yes or no.
async fn press_publish(browser: &Browser, question: &str, answer: bool) {
    browser.press("button#publish-button").await;
    let asked = helpers::eventually("the publish dialog", || async {
        browser.client.get_alert_text().await.ok()
    })
    .await;
    assert_eq!(asked, question);
    if answer {
        browser.client.accept_alert().await.unwrap();
    } else {
        browser.client.dismiss_alert().await.unwrap();
    }
}

/// Presses Publish and answers its dialog yes.
async fn publish_from_the_form(browser: &Browser, question: &str) {
    press_publish(browser, question, true).await;
}

/// The text of the preview's frame, read from inside it.
async fn text_in_the_preview(browser: &Browser) -> String {
    browser.wait_for("iframe#preview-html").await;
    browser.client.enter_frame(0).await.unwrap();
    let text = browser.text_of("body").await;
    browser.client.enter_parent_frame().await.unwrap();
    text
}

/// The issue's state as its page shows it (the badge capitalises it).
async fn state_shown(browser: &Browser) -> String {
    browser.text_of("#issue-state").await.to_lowercase()
}

/// Whether the page has been loaded anew since [`mark_the_page`].
async fn page_was_reloaded(browser: &Browser) -> bool {
    let marked = browser
        .client
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    marked != json!(true)
}

async fn mark_the_page(browser: &Browser) {
    browser
        .client
        .execute("window.notReloaded = true;", vec![])
        .await
        .unwrap();
}

#[tokio::test]
async fn an_admin_writes_previews_tests_and_publishes_an_issue_and_watches_it_go_out() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;

    write_an_issue(
        &browser,
        "Winter issue",
        "## What is new\n\nThe **winter** programme is out.\n\n- Talks\n- Workshops\n\n[Read it all](https://example.com/winter)",
    )
    .await;
    browser.screenshot("newsletter-01-compose").await;

    browser.press("button#preview-button").await;
    browser.wait_for("#preview").await;
    assert_eq!(browser.text_of("#preview-subject").await, "Winter issue");
    let shown = text_in_the_preview(&browser).await;
    assert!(shown.contains("Hello Ada Lovelace,"), "{shown}");
    assert!(shown.contains("The winter programme is out."), "{shown}");
    let (_, height) = browser.assert_shown_whole("iframe#preview-html").await;
    assert!(
        height >= 300.0,
        "the preview is too small to read: {height}"
    );
    assert_eq!(browser.value_of("title").await, "Winter issue");
    browser.screenshot("newsletter-02-preview").await;

    browser.press("button#test-button").await;
    browser.wait_for("#compose-notice").await;
    assert_eq!(
        browser.text_of("#compose-notice").await,
        "Test sent to grace@example.com."
    );
    let test = &app.wait_for_emails(1).await[0];
    assert_eq!(test["To"], "grace@example.com");
    assert_eq!(test["Subject"], "[Test] Winter issue");

    // Cancelled in the dialog, the form is not sent, and stays as it was;
    // answered yes, it is published. A form sent anyway would publish
    // nothing either (the server asks again, on a page of its own), so what
    // tells is the page: the same one, not the server's question.
    mark_the_page(&browser).await;
    press_publish(&browser, "Send to 3 subscribers?", false).await;
    assert!(
        !page_was_reloaded(&browser).await,
        "cancelled, yet the form was sent"
    );
    assert!(
        browser.texts_of_all("#publish-question").await.is_empty(),
        "cancelled, yet the server asks again"
    );
    assert_eq!(browser.path().await, "/admin/newsletters");
    assert_eq!(browser.value_of("title").await, "Winter issue");
    publish_from_the_form(&browser, "Send to 3 subscribers?").await;
    browser
        .wait_for_address("the issue's page", |url| {
            url.path().starts_with("/admin/newsletters/") && !url.path().ends_with("/new")
        })
        .await;
    browser.wait_for_heading("Winter issue").await;
    browser.screenshot("newsletter-03-issue").await;
    mark_the_page(&browser).await;

    // The senders deliver it to the three confirmed subscribers; the page
    // follows them live.
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_shown(&browser).await != "done" {
        assert!(
            Instant::now() < deadline,
            "the issue never got done; it is {} at {}",
            state_shown(&browser).await,
            browser.text_of("#issue-percent").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.text_of("#issue-percent").await, "100%");
    assert_eq!(browser.text_of("#count-sent").await, "3");
    assert!(!page_was_reloaded(&browser).await, "the page reloaded");
    browser.screenshot("newsletter-04-progress-100").await;

    browser
        .press(r#".admin-nav a[href="/admin/newsletters"]"#)
        .await;
    browser.wait_for_heading("Newsletters").await;
    let row = browser.text_of("#issues tbody tr").await.to_lowercase();
    assert!(
        row.contains("winter issue") && row.contains("done"),
        "{row}"
    );
    browser.screenshot("newsletter-05-list").await;
    browser.close().await;
}

#[tokio::test]
async fn an_admin_saves_a_draft_comes_back_to_it_from_the_list_and_publishes_it() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;

    write_an_issue(&browser, "Spring issue", "The **spring** programme.").await;
    browser.press("button#save-draft-button").await;
    browser.wait_for_heading("Edit draft").await;
    let draft = browser.path().await;
    assert!(draft.starts_with("/admin/newsletters/drafts/"), "{draft}");
    assert_eq!(browser.value_of("title").await, "Spring issue");
    assert_eq!(
        browser.value_of("content").await,
        "The **spring** programme."
    );
    browser.screenshot("newsletter-draft-01-saved").await;

    // It waits in the list, above the issues, until it is opened again.
    browser
        .press(r#".admin-nav a[href="/admin/newsletters"]"#)
        .await;
    browser.wait_for_heading("Newsletters").await;
    assert_eq!(
        browser.texts_of_all("#drafts tbody a").await,
        ["Spring issue"]
    );
    browser.screenshot("newsletter-draft-02-list").await;
    browser.press("#drafts tbody a").await;
    browser.wait_for_heading("Edit draft").await;
    assert_eq!(browser.path().await, draft);

    // What is published is what the form shows, edited since the save.
    browser
        .fill("content", "The **spring** programme is out.")
        .await;
    publish_from_the_form(&browser, "Send to 3 subscribers?").await;
    let issue = browser
        .wait_for_address("the issue's page", |url| {
            url.path().starts_with("/admin/newsletters/") && !url.path().contains("/drafts/")
        })
        .await;
    browser.wait_for_heading("Spring issue").await;
    let id = draft.rsplit('/').next().unwrap();
    assert_eq!(issue.path(), format!("/admin/newsletters/{id}"));
    let content: String = sqlx::query_scalar("SELECT content FROM newsletter_issues")
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    assert_eq!(content, "The **spring** programme is out.");
    browser.screenshot("newsletter-draft-03-published").await;

    browser
        .press(r#".admin-nav a[href="/admin/newsletters"]"#)
        .await;
    browser.wait_for_heading("Newsletters").await;
    assert!(
        browser.texts_of_all("#drafts").await.is_empty(),
        "the published draft is still listed"
    );
    browser.close().await;
}

#[tokio::test]
async fn an_issues_page_follows_its_progress_in_place_and_fits_a_phone() {
    // No sender runs: the test moves the issue by hand, and an idle sender
    // would mark it done first, which ends the page's stream before the
    // test's own update.
    let app = helpers::spawn_app_with(|s| s.delivery.run_in_server = false).await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    let browser = Browser::start(390, 844).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;

    write_an_issue(
        &browser,
        "A long title that has to wrap on a phone screen",
        "Hello.",
    )
    .await;
    browser
        .client
        .execute(
            "document.getElementById('send_at').value = '2099-01-01T09:00';",
            vec![],
        )
        .await
        .unwrap();
    assert!(!browser.scrolls_sideways().await, "the compose form");
    browser.screenshot("newsletter-phone-01-compose").await;
    browser.scroll_to("#send_at").await;
    browser.assert_shown_whole("button#publish-button").await;
    browser
        .screenshot("newsletter-phone-01-compose-buttons")
        .await;
    browser.press("button#preview-button").await;
    browser.wait_for("#preview").await;
    assert!(!browser.scrolls_sideways().await, "the preview");
    browser.assert_shown_whole("iframe#preview-html").await;
    browser.screenshot("newsletter-phone-02-preview").await;
    publish_from_the_form(&browser, "Send to 0 subscribers?").await;
    browser.wait_for_heading("A long title").await;
    assert_eq!(state_shown(&browser).await, "scheduled");
    mark_the_page(&browser).await;
    let id: uuid::Uuid = browser
        .path()
        .await
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    sqlx::query(
        "UPDATE newsletter_issues SET send_at = now(), recipients = 8, sent = 2, \
         audience_complete = true WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser.text_of("#issue-percent").await != "25%" {
        assert!(Instant::now() < deadline, "the bar never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_shown(&browser).await, "sending");
    assert_eq!(browser.text_of("#count-queued").await, "6");
    assert!(!browser.scrolls_sideways().await, "the issue's page");
    browser.assert_shown_whole("#issue-progress").await;
    browser.screenshot("newsletter-phone-03-sending").await;

    sqlx::query(
        "UPDATE newsletter_issues SET sent = 7, failed = 1, state = 'done', \
         finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&app.db_pool)
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_shown(&browser).await != "done" || browser.text_of("#count-failed").await != "1" {
        assert!(Instant::now() < deadline, "the state never changed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.text_of("#issue-percent").await, "100%");
    // Done: nothing to pause or cancel, a failure to requeue.
    let offered = browser
        .client
        .execute(
            "return [...document.querySelectorAll('form[data-action]')]\
               .filter(form => !form.hidden).map(form => form.dataset.action);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(offered, json!(["requeue"]));
    assert!(!page_was_reloaded(&browser).await, "the page reloaded");
    browser.screenshot("newsletter-phone-04-done").await;

    browser
        .press(r#".admin-nav a[href="/admin/newsletters"]"#)
        .await;
    browser.wait_for_heading("Newsletters").await;
    assert!(!browser.scrolls_sideways().await, "the list");
    browser.screenshot("newsletter-phone-05-list").await;
    browser.close().await;
}

#[tokio::test]
async fn signing_out_in_another_tab_ends_an_issues_live_updates() {
    let app = helpers::spawn_app_with(|s| s.delivery.run_in_server = false).await;
    create_admin_with_the_command(&app, "hedy", "hedy@example.com").await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "hedy", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    write_an_issue(&browser, "Watched until sign-out", "Hello.").await;
    browser
        .client
        .execute(
            "document.getElementById('send_at').value = '2099-01-01T09:00';",
            vec![],
        )
        .await
        .unwrap();
    publish_from_the_form(&browser, "Send to 0 subscribers?").await;
    browser.wait_for_heading("Watched until sign-out").await;
    let live = async || {
        let state = browser
            .client
            .execute(
                "return document.getElementById('issue').dataset.live;",
                vec![],
            )
            .await
            .unwrap();
        state.as_str().unwrap_or_default().to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while live().await != "open" {
        assert!(Instant::now() < deadline, "the live updates never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let note = browser.wait_for("#live-ended").await;
    assert!(!note.is_displayed().await.unwrap(), "shown while live");
    let issue_tab = browser.client.window().await.unwrap();

    // A second tab shares the first one's session: signing out there ends
    // the session the issue's page streams under.
    let other_tab = browser.client.new_window(true).await.unwrap();
    browser
        .client
        .switch_to_window(other_tab.handle)
        .await
        .unwrap();
    browser
        .client
        .goto(&format!("{}/admin/dashboard", app.address))
        .await
        .unwrap();
    browser.wait_for_heading("Dashboard").await;
    browser.sign_out().await;
    browser.client.close_window().await.unwrap();
    browser.client.switch_to_window(issue_tab).await.unwrap();

    // The stream ends within a few seconds, the browser tries again after
    // its retry delay, is refused, and the page says the updates stopped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while live().await != "closed" {
        assert!(Instant::now() < deadline, "the live updates never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let note = browser.wait_for("#live-ended").await;
    assert!(
        note.is_displayed().await.unwrap(),
        "the page does not say so"
    );
    assert!(
        browser
            .text_of("#live-ended")
            .await
            .contains("Live updates have stopped"),
        "{}",
        browser.text_of("#live-ended").await
    );
    browser.screenshot("newsletter-live-updates-ended").await;
    browser.close().await;
}

/// The unsubscribe link in the HTML body of the issue sent to `address`.
fn unsubscribe_link_sent_to(emails: &[serde_json::Value], address: &str) -> Url {
    let email = emails
        .iter()
        .find(|email| email["To"].as_str().is_some_and(|to| to.contains(address)))
        .unwrap_or_else(|| panic!("no email to {address}"));
    let html = email["HtmlBody"].as_str().unwrap();
    let link = linkify::LinkFinder::new()
        .links(html)
        .map(|link| link.as_str().to_owned())
        .find(|link| link.contains("/unsubscribe/"))
        .unwrap_or_else(|| panic!("no unsubscribe link in {html}"));
    Url::parse(&link).unwrap()
}

#[tokio::test]
async fn a_reader_leaves_from_the_link_in_an_issue_and_the_admin_sees_it_on_their_page() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    write_an_issue(&browser, "Spring issue", "The **spring** programme is out.").await;
    publish_from_the_form(&browser, "Send to 3 subscribers?").await;
    browser.wait_for_heading("Spring issue").await;
    // The three confirmed subscribers get it.
    let emails = app.wait_for_emails(3).await;
    let link = app.local(&unsubscribe_link_sent_to(&emails, "ada@example.com"));

    // Opening the link, as a link scanner would, only shows the button.
    browser.client.goto(link.as_str()).await.unwrap();
    browser.wait_for_heading("Unsubscribe").await;
    browser.screenshot("unsubscribe-01-button").await;
    let status = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status FROM subscriptions WHERE email = 'ada@example.com'",
        )
        .fetch_one(&app.db_pool)
        .await
        .unwrap()
    };
    assert_eq!(status().await, "confirmed");

    browser
        .press(r#"form[action^="/unsubscribe/"] button[type=submit]"#)
        .await;
    browser.wait_for_heading("You are unsubscribed").await;
    browser.screenshot("unsubscribe-02-done").await;
    assert_eq!(status().await, "unsubscribed");
    // Left by mistake: the button sends her a link to confirm with, and
    // changes nothing until she uses it.
    let again = r#"form[action$="/resubscribe"] button[type=submit]"#;
    assert_eq!(browser.text_of(again).await, "Subscribe again");
    browser.press(again).await;
    browser.wait_for_heading("Check your inbox").await;
    let confirmation = &app.wait_for_emails(4).await[3];
    assert_eq!(confirmation["To"], "ada@example.com");
    assert_eq!(status().await, "unsubscribed");

    // The admin finds her and sees that she left.
    browser
        .client
        .goto(&format!("{}/admin/subscribers", app.address))
        .await
        .unwrap();
    search_subscribers(&browser, "ada@example.com").await;
    browser
        .press(r#"a[aria-label="Details of ada@example.com"]"#)
        .await;
    browser.wait_for_heading("ada@example.com").await;
    let shown = browser.text_of("#status").await;
    assert!(shown.starts_with("Unsubscribed since "), "{shown}");
    assert_ne!(browser.text_of("#unsubscribed-at").await, "–");
    let delivered = browser.text_of("#deliveries tbody").await;
    assert!(delivered.contains("Spring issue"), "{delivered}");
    browser.screenshot("unsubscribe-03-admin-sees-it").await;
    browser.close().await;
}

/// The window sizes every page must fit: a desktop's, and a phone's.
const SIZES: [(u32, u32); 2] = [(1280, 900), (390, 844)];

/// An address at the limits of what the form takes: a long local part and
/// a long domain, with no space to break at.
const LONG_ADDRESS: &str = "maximiliana.featherstonehaugh-unterschleissheim\
                            @correspondence.an-unusually-long-domain-name-for-mail.example.com";
const LONG_NAME: &str = "Maximiliana Wilhelmina Featherstonehaugh-Unterschleißheim \
                         von Oberammergau-Partenkirchen";
/// A title with a word longer than a phone is wide.
const LONG_TITLE: &str = "The winter programme: \
                          Supercalifragilisticexpialidocious-antidisestablishmentarianism \
                          and everything else that happens this season";

/// A list's name at the limit's edge, with a word longer than a phone is
/// wide.
const LONG_LIST_NAME: &str = "Supercalifragilisticexpialidocious-antidisestablishmentarianism \
                              and the rest";

/// One page the width test opens: its name (in failures and screenshots),
/// how to get to it, and an element only that page has, so that a refusal
/// or an error page in its place fails the test rather than passing it.
struct Stop {
    name: &'static str,
    visit: Visit,
    shows: &'static str,
}

enum Visit {
    /// Opens the address: a path on the app, or a whole URL.
    Open(String),
    /// Sends a form to the path from the page the browser is on, as a
    /// form on it without scripts would (adding the page's CSRF token, if
    /// it has one), and waits for the answer's page.
    Post(String, Vec<(&'static str, String)>),
}

impl Stop {
    fn open(name: &'static str, path: impl Into<String>, shows: &'static str) -> Self {
        Self {
            name,
            visit: Visit::Open(path.into()),
            shows,
        }
    }

    fn post(
        name: &'static str,
        path: impl Into<String>,
        fields: &[(&'static str, &str)],
        shows: &'static str,
    ) -> Self {
        let fields = fields
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        Self {
            name,
            visit: Visit::Post(path.into(), fields),
            shows,
        }
    }
}

/// What the width test's pages show, stored before any browser starts.
struct WideData {
    /// The subscriber with [`LONG_ADDRESS`] and [`LONG_NAME`].
    subscriber: uuid::Uuid,
    /// The confirmation link sent to a long address that signed up, and
    /// that email in the local inbox.
    confirmation_link: String,
    inbox_email: uuid::Uuid,
    /// A subscriber's own unsubscribe token, and a second subscriber's, to
    /// unsubscribe with.
    unsubscribe_token: String,
    leaving_token: String,
    test_send_token: String,
    /// A list with [`LONG_LIST_NAME`], which the long subscriber is on.
    list: uuid::Uuid,
    /// A finished import onto that list, with a long file name and long
    /// refused rows.
    import: uuid::Uuid,
}

/// Fills the list with what makes pages wide: long addresses and names in
/// many rows, and a sign-up by a long address, whose confirmation link it
/// keeps.
async fn store_wide_data(app: &helpers::TestApp) -> WideData {
    store_a_few_subscribers(app).await;
    store_subscriber(app, LONG_ADDRESS, LONG_NAME, true, 1).await;
    for n in 0..6 {
        let address = format!("{n}.{LONG_ADDRESS}");
        let name = format!("{LONG_NAME} the {n}th");
        store_subscriber(app, &address, &name, n % 2 == 0, n).await;
    }
    let ids: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, email FROM subscriptions WHERE email IN ($1, $2)")
            .bind(LONG_ADDRESS)
            .bind(format!("0.{LONG_ADDRESS}"))
            .fetch_all(&app.db_pool)
            .await
            .unwrap();
    let id_of = |address: &str| ids.iter().find(|(_, a)| a == address).unwrap().0;
    let keys = newsletter::keys::Keys::derive(&app.settings.application.hmac_secret).unwrap();

    let signing_up = format!("signing.up.{LONG_ADDRESS}");
    let response = app
        .post_subscriptions(
            serde_urlencoded::to_string([("name", LONG_NAME), ("email", &signing_up)]).unwrap(),
        )
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let (inbox_email, text): (uuid::Uuid, String) =
        helpers::eventually("the confirmation in the inbox", || async {
            sqlx::query_as("SELECT id, text_body FROM inbox_emails WHERE recipient = $1")
                .bind(&signing_up)
                .fetch_optional(&app.db_pool)
                .await
                .unwrap()
        })
        .await;
    let link = linkify::LinkFinder::new()
        .links(&text)
        .map(|link| link.as_str().to_owned())
        .find(|link| link.contains("/subscriptions/confirm?"))
        .unwrap_or_else(|| panic!("no confirmation link in {text}"));
    let confirmation_link = app.local(&Url::parse(&link).unwrap()).to_string();

    let list = store_list_with_a_long_name(app, id_of(LONG_ADDRESS)).await;
    let import = store_an_import_with_long_refusals(app, list).await;
    WideData {
        subscriber: id_of(LONG_ADDRESS),
        confirmation_link,
        inbox_email,
        unsubscribe_token: keys.unsubscribe_token(id_of(LONG_ADDRESS)).to_string(),
        leaving_token: keys
            .unsubscribe_token(id_of(&format!("0.{LONG_ADDRESS}")))
            .to_string(),
        test_send_token: keys.test_unsubscribe_token().to_string(),
        list,
        import,
    }
}

/// A finished import onto `list` whose file name and refused rows are as
/// long as they come.
async fn store_an_import_with_long_refusals(
    app: &helpers::TestApp,
    list: uuid::Uuid,
) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO imports (id, file_sha256, list_id, file_name, consent_source, started_by, \
             state, rows_read, rows_staged, memberships_added, subscribers_added, refused, \
             finished_at) \
         VALUES ($1, $2, $3, $4, $5, 'grace', 'done', 1204, 1200, 1200, 1200, 4, now())",
    )
    .bind(id)
    .bind(vec![1u8; 32])
    .bind(list)
    .bind(format!("{}.csv", LONG_LIST_NAME.replace(' ', "-")))
    .bind(LONG_TITLE)
    .execute(&app.db_pool)
    .await
    .unwrap();
    for line in 2..6 {
        sqlx::query("INSERT INTO import_refusals (import_id, line, reason) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(line)
            .bind(format!(
                "The address \"{line}.{LONG_ADDRESS}.\" is not a valid email address."
            ))
            .execute(&app.db_pool)
            .await
            .unwrap();
    }
    id
}

/// A list with [`LONG_LIST_NAME`] and a long description, with `reader`
/// on it.
async fn store_list_with_a_long_name(app: &helpers::TestApp, reader: uuid::Uuid) -> uuid::Uuid {
    use newsletter::subscribers::lists::{self, ListFields};
    let mut connection = app.db_pool.acquire().await.unwrap();
    let fields = ListFields {
        name: LONG_LIST_NAME.into(),
        description: LONG_TITLE.into(),
        public: true,
        double_opt_in: true,
    };
    let list = lists::create(&mut connection, &fields).await.unwrap();
    sqlx::query(
        "INSERT INTO memberships (list_id, subscriber_id, status) VALUES ($1, $2, 'pending')",
    )
    .bind(list.id)
    .bind(reader)
    .execute(&mut *connection)
    .await
    .unwrap();
    list.id
}

/// The pages anyone sees, opened signed out. `size` keeps the sign-ups of
/// the two window sizes apart.
fn public_pages(data: &WideData, size: u32) -> Vec<Stop> {
    let signing_up = format!("{size}.{LONG_ADDRESS}");
    let mistyped = format!("{size}.{LONG_ADDRESS}.");
    vec![
        Stop::open("home", "/", "form[action='/subscriptions']"),
        Stop::post(
            "check-inbox",
            "/subscriptions",
            &[("name", LONG_NAME), ("email", &signing_up)],
            "h1",
        ),
        Stop::open("home-again", "/", "form[action='/subscriptions']"),
        Stop::post(
            "subscribe-refused",
            "/subscriptions",
            &[("name", LONG_NAME), ("email", &mistyped)],
            "#email-error",
        ),
        // Confirms at the first size; says it was already at the second.
        Stop::open("confirmation", data.confirmation_link.clone(), "h1"),
        Stop::open(
            "confirmation-not-valid",
            "/subscriptions/confirm?subscription_token=not-a-token-at-all",
            "h1",
        ),
        Stop::open(
            "unsubscribe",
            format!("/unsubscribe/{}", data.unsubscribe_token),
            "#unsubscribe-address",
        ),
        Stop::open(
            "unsubscribe-from-a-test-email",
            format!("/unsubscribe/{}", data.test_send_token),
            "#test-send-notice",
        ),
        Stop::open(
            "about-to-leave",
            format!("/unsubscribe/{}", data.leaving_token),
            "form[action^='/unsubscribe/']",
        ),
        Stop::post(
            "unsubscribed",
            format!("/unsubscribe/{}", data.leaving_token),
            &[("List-Unsubscribe", "One-Click")],
            "h1",
        ),
        Stop::open("login", "/login", "form[action='/login']"),
    ]
}

/// The admin pages, opened signed in, in an order that makes each one's
/// data first (the issue is published before the list shows it). Another
/// page is one more line.
fn admin_pages(data: &WideData) -> Vec<Stop> {
    let key = uuid::Uuid::new_v4().to_string();
    let content = "# The winter programme\n\nTalks, workshops and \
                   [a very long link](https://example.com/a/very/long/path/that/goes/on/and/on).\n\n\
                   | One | Two | Three | Four | Five | Six | Seven | Eight |\n\
                   |---|---|---|---|---|---|---|---|\n\
                   | Monday | Tuesday | Wednesday | Thursday | Friday | Saturday | Sunday | Again |";
    let issue = |action, confirmed| {
        vec![
            ("idempotency_key", key.clone()),
            ("title", LONG_TITLE.to_owned()),
            ("content", content.to_owned()),
            ("send_at", "2099-01-01T09:00".to_owned()),
            ("action", String::from(action)),
            ("confirmed", String::from(confirmed)),
        ]
    };
    vec![
        Stop::open("dashboard", "/admin/dashboard", "#daily-chart"),
        Stop::open("subscribers", "/admin/subscribers", "#subscribers"),
        Stop::open(
            "subscriber",
            format!("/admin/subscribers/{}", data.subscriber),
            "#erase",
        ),
        Stop::open("lists", "/admin/lists", "#lists"),
        Stop::open("list", format!("/admin/lists/{}", data.list), "#edit-list"),
        Stop::post(
            "list-refused",
            "/admin/lists",
            &[("name", "")],
            "#name-error",
        ),
        Stop::open(
            "subscribers-on-a-list",
            format!("/admin/subscribers?list={}", data.list),
            "#subscribers",
        ),
        Stop::open("compose", "/admin/newsletters/new", "form.compose"),
        // Saved as a draft: its page, and its row in the list below.
        Stop {
            name: "draft",
            visit: Visit::Post("/admin/newsletters".into(), issue("save", "")),
            shows: "form#delete-draft",
        },
        Stop {
            name: "compose-preview",
            visit: Visit::Post("/admin/newsletters".into(), issue("preview", "")),
            shows: "#preview",
        },
        Stop {
            name: "publish-question",
            visit: Visit::Post("/admin/newsletters".into(), issue("publish", "")),
            shows: "#publish-question",
        },
        Stop {
            name: "issue",
            visit: Visit::Post("/admin/newsletters".into(), issue("publish", "yes")),
            shows: "#issue",
        },
        Stop::open("newsletters", "/admin/newsletters", "#issues"),
        Stop::open(
            "dashboard-after-publishing",
            "/admin/dashboard",
            "#audit-log",
        ),
        Stop::open("imports", "/admin/imports", "form#upload"),
        Stop::open(
            "import",
            format!("/admin/imports/{}", data.import),
            "table#refusals",
        ),
        Stop::open("inbox", "/admin/inbox", "#inbox"),
        Stop::open(
            "inbox-email",
            format!("/admin/inbox/{}", data.inbox_email),
            "iframe#email-html",
        ),
        Stop::open(
            "password",
            "/admin/password",
            "form[action='/admin/password']",
        ),
        Stop::open("totp", "/admin/totp", "form[action='/admin/totp']"),
    ]
}

impl Browser {
    /// Goes to the stop's page and waits for it.
    async fn visit(&self, app: &helpers::TestApp, stop: &Stop) {
        match &stop.visit {
            Visit::Open(path) => {
                let url = if path.starts_with("http") {
                    path.clone()
                } else {
                    format!("{}{path}", app.address)
                };
                self.client.goto(&url).await.unwrap();
            }
            Visit::Post(path, fields) => {
                self.client
                    .execute(
                        "const [path, fields] = arguments;\
                         const form = document.createElement('form');\
                         form.method = 'post';\
                         form.action = path;\
                         const token = document.querySelector('input[name=\"csrf_token\"]');\
                         const all = token ? [['csrf_token', token.value], ...fields] : fields;\
                         for (const [name, value] of all) {\
                           const input = document.createElement('input');\
                           input.type = 'hidden';\
                           input.name = name;\
                           input.value = value;\
                           form.appendChild(input);\
                         }\
                         document.body.appendChild(form);\
                         window.leavingForTheWidthTest = true;\
                         form.submit();",
                        vec![json!(path), json!(fields)],
                    )
                    .await
                    .unwrap();
                self.wait_for_the_next_page(stop.name).await;
            }
        }
        self.wait_for(stop.shows).await;
    }

    /// Waits until the page a form was sent from has been replaced by the
    /// answer's, loaded whole.
    async fn wait_for_the_next_page(&self, what: &str) {
        helpers::eventually(&format!("the {what} page to load"), || async {
            // While the answer loads there may be no page to run a script
            // in: that is not there yet either.
            let arrived = self
                .client
                .execute(
                    "return window.leavingForTheWidthTest !== true \
                       && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .is_ok_and(|arrived| arrived == json!(true));
            arrived.then_some(())
        })
        .await;
    }

    /// Why the page is wider than the window, if it is: the widths, and
    /// the outermost elements that reach past the window's right edge.
    async fn too_wide(&self) -> Option<String> {
        let measured = self
            .client
            .execute(
                "const root = document.documentElement;\
                 const width = root.clientWidth;\
                 const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') \
                   + (typeof e.className === 'string' && e.className.trim() \
                      ? '.' + e.className.trim().split(/\\s+/).join('.') : '');\
                 const scrolledAway = e => {\
                   const absolute = getComputedStyle(e).position === 'absolute';\
                   let positioned = false;\
                   for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {\
                     const style = getComputedStyle(a);\
                     positioned = positioned || style.position !== 'static';\
                     if (style.overflowX !== 'visible' && (!absolute || positioned)) {\
                       return true;\
                     }\
                   }\
                   return false;\
                 };\
                 const reaches = e => {\
                   const box = e.getBoundingClientRect();\
                   const right = getComputedStyle(e).overflowX === 'visible' \
                     ? Math.max(box.right, box.left + e.scrollWidth) : box.right;\
                   return right > width + 0.5 && !scrolledAway(e);\
                 };\
                 const past = [...document.body.querySelectorAll('*')]\
                   .filter(e => reaches(e) && ![...e.children].some(reaches))\
                   .slice(0, 5)\
                   .map(e => [e.parentElement.parentElement, e.parentElement, e]\
                     .filter(a => a && a !== document.body).map(name).join(' > '));\
                 return [root.scrollWidth, width, past];",
                vec![],
            )
            .await
            .unwrap();
        let (scroll_width, client_width, past): (f64, f64, Vec<String>) =
            serde_json::from_value(measured).unwrap();
        (scroll_width > client_width).then(|| {
            format!(
                "{scroll_width} px wide in a window {client_width} px wide; sticking out: {}",
                past.join(", ")
            )
        })
    }

    /// Visits each stop and notes, in `failures`, those that are wider
    /// than the window or whose footer does not line up with the content;
    /// a screenshot of each goes with the others.
    async fn check_widths(
        &self,
        app: &helpers::TestApp,
        stops: &[Stop],
        width: u32,
        failures: &mut Vec<String>,
    ) {
        for stop in stops {
            self.visit(app, stop).await;
            self.check_width(stop.name, width, failures).await;
        }
    }

    /// How far right of the content's left edge the footer's text starts,
    /// if the page has a footer: 0 when the two line up.
    async fn footer_offset(&self) -> Option<f64> {
        let offset = self
            .client
            .execute(
                "const footer = document.querySelector('footer.colophon');\
                 if (!footer) { return null; }\
                 const start = e => e.getBoundingClientRect().left \
                   + parseFloat(getComputedStyle(e).paddingLeft);\
                 return start(footer) - start(document.querySelector('main'));",
                vec![],
            )
            .await
            .unwrap();
        offset.as_f64()
    }

    async fn check_width(&self, name: &str, width: u32, failures: &mut Vec<String>) {
        // A page that does not ask for the device's width is laid out wider
        // than a phone, and would fit the window it made for itself.
        let laid_out = self.inner_width().await;
        if laid_out != width {
            failures.push(format!(
                "{name} at {width} px: laid out {laid_out} px wide (no viewport meta tag?)"
            ));
        }
        if let Some(why) = self.too_wide().await {
            failures.push(format!("{name} at {width} px: {why}"));
        }
        if let Some(offset) = self.footer_offset().await
            && offset.abs() > 0.5
        {
            failures.push(format!(
                "{name} at {width} px: the footer starts {offset} px right of the content"
            ));
        }
        self.screenshot(&format!("width-{width}-{name}")).await;
    }
}

/// Turns on two-factor sign-in for `username` directly in the database,
/// with a fresh key nobody needs: the test only opens the code page.
async fn turn_on_totp(app: &helpers::TestApp, username: &str) {
    use newsletter::admin::accounts;
    use newsletter::admin::totp_keys::{Place, TotpKeys};
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM admins WHERE username = $1")
        .bind(username)
        .fetch_one(&app.db_pool)
        .await
        .unwrap();
    let sealed = TotpKeys::from_settings(&app.settings.admin)
        .unwrap()
        .seal(&TotpSecret::generate(), Place::Account(id));
    let mut conn = app.db_pool.acquire().await.unwrap();
    accounts::enable_totp(&mut conn, id, &sealed, &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn every_page_fits_the_width_of_a_desktop_and_of_a_phone() {
    // Emails go to the local inbox, whose pages are among those checked.
    let app = helpers::spawn_app_with_the_inbox().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    create_admin_with_the_command(&app, "hedy", "hedy@example.com").await;
    turn_on_totp(&app, "hedy").await;
    let data = store_wide_data(&app).await;
    let mut failures = Vec::new();

    for (width, height) in SIZES {
        let browser = Browser::start(width, height).await;
        browser
            .check_widths(&app, &public_pages(&data, width), width, &mut failures)
            .await;

        browser.sign_in(&app, "hedy", ADMIN_PASSWORD).await;
        browser.wait_for_heading("Enter your code").await;
        browser.check_width("code", width, &mut failures).await;

        browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
        browser.wait_for_heading("Dashboard").await;
        browser
            .check_widths(&app, &admin_pages(&data), width, &mut failures)
            .await;
        browser.close().await;
    }

    assert!(
        failures.is_empty(),
        "pages wider than the window (which then scrolls sideways), or whose footer \
         is out of line:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_subscribers_confirmation_opened_in_the_inbox_confirms_them_when_its_link_is_clicked() {
    // The links in the email lead to this app, as they do in a local run.
    let app = helpers::spawn_app_with_the_inbox().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    let browser = Browser::start(1280, 900).await;
    browser.open_the_form(&app).await;
    browser.fill("name", "Ada Lovelace").await;
    browser.fill("email", "ada@example.com").await;
    browser.submit().await;
    browser.wait_for_heading("Check your inbox").await;

    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    browser.press(r#".admin-nav a[href="/admin/inbox"]"#).await;
    browser.wait_for_heading("Inbox").await;
    helpers::eventually("the confirmation email in the inbox", || async {
        browser.client.refresh().await.unwrap();
        browser
            .client
            .find(Locator::Css("#inbox td.title a"))
            .await
            .ok()
    })
    .await;
    assert_eq!(
        browser.text_of("#inbox td.recipient").await,
        "ada@example.com"
    );
    browser.screenshot("inbox-01-list").await;
    browser.press("#inbox td.title a").await;
    browser.wait_for("iframe#email-html").await;
    assert_eq!(browser.text_of("#email-to").await, "ada@example.com");
    let text = browser.text_of("#email-text").await;
    assert!(text.contains("/subscriptions/confirm?"), "{text}");
    browser.screenshot("inbox-02-email").await;

    // The link, clicked inside the email, opens in the whole window.
    browser.client.enter_frame(0).await.unwrap();
    browser.press(r#"a[href*="/subscriptions/confirm?"]"#).await;
    browser
        .wait_for_address("the confirmation page", |url| {
            url.path() == "/subscriptions/confirm"
        })
        .await;
    // Out of the frame, which went with the page that held it.
    browser.client.enter_parent_frame().await.unwrap();
    browser.wait_for_heading("Subscription confirmed").await;
    browser.screenshot("inbox-03-confirmed").await;
    assert_eq!(app.subscriber_status().await, "confirmed");
    browser.close().await;
}

/// The addresses the README's tour names, in order, as paths: what a
/// newcomer types into the browser, step by step.
fn paths_the_tour_names() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let tour = readme
        .split("\n## Try it\n")
        .nth(1)
        .expect("the README has its tour")
        .split("\n## ")
        .next()
        .unwrap();
    tour.split("<http://127.0.0.1:8000")
        .skip(1)
        .filter_map(|rest| rest.split('>').next())
        .map(|path| if path.is_empty() { "/" } else { path }.to_owned())
        .collect()
}

/// Opens a row of the local inbox: the newest email to `to` whose subject
/// starts with `subject`, waiting for it to arrive.
async fn open_from_the_inbox(browser: &Browser, app: &helpers::TestApp, to: &str, subject: &str) {
    let row = format!(
        "//table[@id='inbox']//tr[td[@class='recipient' and text()='{to}']]\
         /td[@class='title']/a[starts-with(normalize-space(.), '{subject}')]"
    );
    let link = helpers::eventually(&format!("“{subject}” to {to} in the inbox"), || async {
        browser
            .client
            .goto(&format!("{}/admin/inbox", app.address))
            .await
            .unwrap();
        browser.client.find(Locator::XPath(&row)).await.ok()
    })
    .await;
    link.click().await.unwrap();
    browser.wait_for("iframe#email-html").await;
}

/// Clicks the link inside the shown email whose address contains `part`,
/// and comes back out of the email's frame, which went with the page.
async fn click_in_the_email(browser: &Browser, part: &str) {
    browser.client.enter_frame(0).await.unwrap();
    browser.press(&format!(r#"a[href*="{part}"]"#)).await;
    browser
        .wait_for_address("the page the link leads to", |url| {
            !url.path().starts_with("/admin/inbox")
        })
        .await;
    browser.client.enter_parent_frame().await.unwrap();
}

#[tokio::test]
async fn a_newcomer_follows_the_readme_tour_from_subscribing_to_unsubscribing_with_the_local_inbox()
{
    let tour = paths_the_tour_names();
    assert_eq!(
        tour,
        [
            "/login",
            "/",
            "/admin/inbox",
            "/admin/subscribers",
            "/admin/newsletters/new",
            "/admin/newsletters",
        ],
        "the README's tour names other pages than this test walks through"
    );
    let app = helpers::spawn_app_with_the_inbox().await;
    let go = |path: &str| format!("{}{path}", app.address);
    let browser = Browser::start(1280, 900).await;

    // 1, 2: an admin from the command line, signed in.
    create_admin_with_the_command(&app, "ada", "ada@example.com").await;
    browser.sign_in(&app, "ada", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    browser.screenshot("tour-01-signed-in").await;

    // 3: a reader subscribes on the form.
    browser.client.goto(&go("/")).await.unwrap();
    browser.fill("name", "Reader").await;
    browser.fill("email", "reader@example.com").await;
    browser.submit().await;
    browser.wait_for_heading("Check your inbox").await;
    browser.screenshot("tour-02-subscribed").await;

    // 4, 5: the confirmation, found in the inbox, and its link pressed.
    open_from_the_inbox(&browser, &app, "reader@example.com", "").await;
    browser.screenshot("tour-03-confirmation-email").await;
    click_in_the_email(&browser, "/subscriptions/confirm?").await;
    browser.wait_for_heading("Subscription confirmed").await;
    browser.screenshot("tour-04-confirmed").await;
    browser
        .client
        .goto(&go("/admin/subscribers"))
        .await
        .unwrap();
    browser.wait_for_heading("Subscribers").await;
    let listed = browser.texts_of_all("table td").await;
    assert!(
        listed.iter().any(|cell| cell == "reader@example.com")
            && listed.iter().any(|cell| cell == "Confirmed"),
        "the reader is not listed as confirmed: {listed:?}"
    );

    // 6, 7: an issue written and previewed.
    browser
        .client
        .goto(&go("/admin/newsletters/new"))
        .await
        .unwrap();
    browser.wait_for_heading("New issue").await;
    browser.fill("title", "First light").await;
    browser
        .fill(
            "content",
            "# First light\n\nThe first issue, sent from the tour.",
        )
        .await;
    browser.press("button#preview-button").await;
    browser.wait_for("#preview").await;
    let preview = text_in_the_preview(&browser).await;
    assert!(
        preview.contains("The first issue, sent from the tour."),
        "{preview}"
    );
    assert_eq!(
        preview.matches("First light").count(),
        1,
        "the preview shows the title more than once: {preview}"
    );
    browser.screenshot("tour-05-preview").await;

    // 8: a test, to the admin's own address.
    browser.press("button#test-button").await;
    // The press returns before the next page is there, and the preview
    // page before it has no notice.
    browser.wait_for("#compose-notice").await;
    assert_eq!(
        browser.text_of("#compose-notice").await,
        "Test sent to ada@example.com."
    );

    // 9: published from the same form, once asked, and sent.
    publish_from_the_form(&browser, "Send to 1 subscriber?").await;
    browser.wait_for("#issue-state").await;
    helpers::eventually("the issue to be sent", || async {
        (state_shown(&browser).await == "done").then_some(())
    })
    .await;
    browser.screenshot("tour-06-published").await;
    browser
        .client
        .goto(&go("/admin/newsletters"))
        .await
        .unwrap();
    browser.wait_for_heading("Newsletters").await;

    // The test arrived as a test, and its unsubscribe link changes nothing.
    open_from_the_inbox(&browser, &app, "ada@example.com", "[Test] First light").await;
    browser.screenshot("tour-07-test-email").await;
    click_in_the_email(&browser, "/unsubscribe/").await;
    browser.wait_for("#test-send-notice").await;
    browser.press("form button[type=submit]").await;
    browser.wait_for_heading("Nothing changed").await;
    browser.screenshot("tour-08-test-unsubscribe").await;

    // 10: the reader leaves from the link in the issue.
    open_from_the_inbox(&browser, &app, "reader@example.com", "First light").await;
    browser.screenshot("tour-09-issue-email").await;
    click_in_the_email(&browser, "/unsubscribe/").await;
    assert_eq!(
        browser.text_of("#unsubscribe-address").await,
        "r•••@example.com"
    );
    browser.screenshot("tour-10-unsubscribe").await;
    browser.press("form button[type=submit]").await;
    browser.wait_for_heading("You are unsubscribed").await;
    browser.screenshot("tour-11-unsubscribed").await;
    assert_eq!(app.subscriber_status().await, "unsubscribed");
    browser.close().await;
}

#[tokio::test]
async fn a_browser_over_a_limit_gets_the_sites_page_saying_when_to_try_again_at_any_width() {
    let app = helpers::spawn_app_with(|settings| {
        settings.rate_limit.confirm_per_ip.burst = 1;
        settings.rate_limit.confirm_per_ip.per_period = 1;
        settings.rate_limit.confirm_per_ip.period_seconds = 3600;
    })
    .await;
    let link = format!(
        "{}/subscriptions/confirm?subscription_token={}",
        app.address,
        "a".repeat(32)
    );
    let mut failures = Vec::new();
    for (width, height) in SIZES {
        let browser = Browser::start(width, height).await;
        // The first click spends the budget (an unknown link), the next is
        // refused.
        browser.client.goto(&link).await.unwrap();
        browser.client.goto(&link).await.unwrap();
        browser.wait_for_heading("Too many requests").await;
        let said = browser.text_of("main").await;
        assert!(said.contains("Try again in 1 hour."), "{said}");
        browser
            .check_width(&format!("too-many-requests-{width}"), width, &mut failures)
            .await;
        browser.close().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// (list name, status) of the memberships of the subscriber at `email`, by
/// name.
async fn memberships_of(app: &helpers::TestApp, email: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT l.name, m.status FROM memberships m \
         JOIN lists l ON l.id = m.list_id \
         JOIN subscriptions s ON s.id = m.subscriber_id \
         WHERE s.email = $1 ORDER BY l.name",
    )
    .bind(email)
    .fetch_all(&app.db_pool)
    .await
    .unwrap()
}

/// Owned (list name, status) rows, to compare with [`memberships_of`].
fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

impl Browser {
    /// The lists the page offers as checkboxes, in page order, each with
    /// whether it is ticked. A list's description, if any, is left out.
    async fn lists_ticked(&self) -> Vec<(String, bool)> {
        let shown = self
            .client
            .execute(
                "return [...document.querySelectorAll('fieldset.lists label.choice')]\
                   .map(label => {\
                     const hint = label.querySelector('.hint');\
                     const name = label.textContent\
                       .replace(hint ? hint.textContent : '', '').trim();\
                     return [name, label.querySelector('input[type=checkbox]').checked];\
                   });",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(shown).unwrap()
    }

    /// Ticks, or unticks, the checkbox of the list named `list`, as a
    /// person clicks it: only if it is not that way already.
    async fn tick_list(&self, list: &str, ticked: bool) {
        let checkbox = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&format!(
                "//fieldset[contains(@class, 'lists')]//label[contains(@class, 'choice')]\
                 [normalize-space(text()[1]) = '{list}']/input[@type='checkbox']"
            )))
            .await
            .unwrap_or_else(|e| panic!("no checkbox for the list {list:?}: {e}"));
        if checkbox.prop("checked").await.unwrap().as_deref() != Some(&ticked.to_string()) {
            checkbox.click().await.unwrap();
        }
        assert_eq!(
            checkbox.prop("checked").await.unwrap().as_deref(),
            Some(ticked.to_string().as_str()),
            "the checkbox of {list:?} did not change"
        );
    }

    /// Chooses the option whose text is `label` in the select `css` picks.
    /// (Quoted in double quotes: an operator's label has an apostrophe.)
    async fn choose(&self, css: &str, label: &str) {
        self.wait_for(css)
            .await
            .select_by(Locator::XPath(&format!(
                ".//option[normalize-space(.) = \"{label}\"]"
            )))
            .await
            .unwrap_or_else(|e| panic!("no option {label:?} in {css}: {e}"));
    }

    /// The text of the option chosen in the select `css` picks.
    async fn chosen(&self, css: &str) -> String {
        let select = self.wait_for(css).await;
        let argument = serde_json::to_value(&select).unwrap();
        let text = self
            .client
            .execute(
                "return arguments[0].selectedOptions[0].textContent.trim();",
                vec![argument],
            )
            .await
            .unwrap();
        text.as_str().unwrap().to_owned()
    }

    /// Presses the button `css` picks and waits until the page it was on
    /// has been replaced by the answer's, loaded whole: for an answer that
    /// shows the same page again, with nothing else to tell it by.
    async fn press_for_a_new_page(&self, css: &str, what: &str) {
        mark_the_page(self).await;
        self.press(css).await;
        helpers::eventually(&format!("{what} to load"), || async {
            // While the answer loads there may be no page to run a script
            // in: that is not there yet either.
            let arrived = self
                .client
                .execute(
                    "return window.notReloaded !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .is_ok_and(|arrived| arrived == json!(true));
            arrived.then_some(())
        })
        .await;
    }
}

/// Builds, counts and saves a segment of the confirmed readers of the list
/// `list` with the builder's first row, from the navigation.
async fn build_a_segment_of_a_list(browser: &Browser, name: &str, list: &str) {
    browser
        .press(r#".admin-nav a[href="/admin/segments"]"#)
        .await;
    browser.wait_for_heading("Segments").await;
    browser.fill("segment-name", name).await;
    browser.choose("#field_1", &format!("On list {list}")).await;
    browser
        .choose("#op_1", "= (a list's status, an import, text, number)")
        .await;
    browser.fill("value_1", "confirmed").await;
    browser.press("button#count-button").await;
    let count = browser
        .wait_for("#segment-count")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(count, "1 confirmed reader matches.");
    // The count comes back with the form as it was sent.
    assert_eq!(browser.value_of("segment-name").await, name);
    assert_eq!(browser.chosen("#field_1").await, format!("On list {list}"));
    browser.screenshot("lists-walk-segment-counted").await;
    browser.press("button#save-button").await;
    browser.wait_for_heading(name).await;
}

/// Narrows the issue on the compose form to the readers of `list` alone,
/// and of those to `segment`, and has the form count them.
async fn narrow_the_issue(browser: &Browser, list: &str, segment: &str) {
    for (name, _) in browser.lists_ticked().await {
        browser.tick_list(&name, name == list).await;
    }
    browser.choose("#segment", segment).await;
    browser
        .press_for_a_new_page("button#count-button", "the counted form")
        .await;
    browser.wait_for_heading("New issue").await;
}

/// The link whose address contains `part` in the HTML body of the one
/// email titled `subject`, which must have gone to `address` alone.
fn link_in_the_issue(
    emails: &[serde_json::Value],
    subject: &str,
    address: &str,
    part: &str,
) -> Url {
    let issues: Vec<_> = emails
        .iter()
        .filter(|email| email["Subject"] == subject)
        .collect();
    let recipients: Vec<_> = issues.iter().map(|email| &email["To"]).collect();
    assert_eq!(recipients, [address], "who got {subject:?}");
    let html = issues[0]["HtmlBody"].as_str().unwrap();
    let link = linkify::LinkFinder::new()
        .links(html)
        .map(|link| link.as_str().to_owned())
        .find(|link| link.contains(part))
        .unwrap_or_else(|| panic!("no link to {part} in {html}"));
    Url::parse(&link).unwrap()
}

#[tokio::test]
async fn an_admin_makes_a_list_a_reader_joins_two_and_changes_them_and_an_issue_to_a_segment_goes_out()
 {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    // A reader of the default list alone, whom the issue must miss.
    store_subscriber(&app, "alan@example.com", "Alan Turing", true, 3).await;
    let reader = "ada@example.com";
    let mut failures = Vec::new();
    let (width, height) = SIZES[0];
    let browser = Browser::start(width, height).await;

    // 1. The admin makes a public list.
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    browser.press(r#".admin-nav a[href="/admin/lists"]"#).await;
    browser.wait_for_heading("Lists").await;
    browser.fill("name", "Events").await;
    browser
        .fill("description", "Talks and meetings, a few times a year.")
        .await;
    let public = browser.wait_for("#new-list #public").await;
    if !public.is_selected().await.unwrap() {
        public.click().await.unwrap();
    }
    browser.press("#new-list button[type=submit]").await;
    browser.wait_for("#list-notice").await;
    assert_eq!(browser.text_of("#list-name").await, "Events");
    browser.screenshot("lists-walk-list-made").await;

    // 2. A reader joins both lists on the form, and one email confirms both.
    browser.open_the_form(&app).await;
    assert_eq!(
        browser.lists_ticked().await,
        [
            ("Newsletter".to_owned(), true),
            ("Events".to_owned(), false)
        ]
    );
    browser.fill("name", "Ada Lovelace").await;
    browser.fill("email", reader).await;
    browser.tick_list("Events", true).await;
    browser
        .check_width("lists-subscribe-form", width, &mut failures)
        .await;
    browser.submit().await;
    browser.wait_for_heading("Check your inbox").await;
    assert_eq!(
        memberships_of(&app, reader).await,
        pairs(&[("Events", "pending"), ("Newsletter", "pending")])
    );
    let confirmations = app.wait_for_emails(1).await;
    assert_eq!(confirmations.len(), 1, "one email for both lists");
    assert_eq!(confirmations[0]["To"], reader);
    let link = app.local(&app.confirmation_links(&confirmations[0]).html);
    browser.client.goto(link.as_str()).await.unwrap();
    browser.wait_for_heading("Subscription confirmed").await;
    assert_eq!(
        memberships_of(&app, reader).await,
        pairs(&[("Events", "confirmed"), ("Newsletter", "confirmed")])
    );

    // 3. The admin narrows an issue to a segment of Events and sends it.
    browser
        .client
        .goto(&format!("{}/admin/dashboard", app.address))
        .await
        .unwrap();
    browser.wait_for_heading("Dashboard").await;
    build_a_segment_of_a_list(&browser, "Confirmed on Events", "Events").await;
    write_an_issue(
        &browser,
        "Spring meeting",
        "See you at the **spring** meeting.",
    )
    .await;
    // Before narrowing: both readers of the default list.
    assert_eq!(
        browser.text_of("#audience-count").await,
        "Send to 2 subscribers?"
    );
    narrow_the_issue(&browser, "Events", "Confirmed on Events").await;
    assert_eq!(
        browser.lists_ticked().await,
        [
            ("Newsletter".to_owned(), false),
            ("Events".to_owned(), true)
        ]
    );
    assert_eq!(browser.chosen("#segment").await, "Confirmed on Events");
    assert_eq!(
        browser.text_of("#audience-count").await,
        "Send to 1 subscriber?"
    );
    browser.scroll_to("#compose-lists").await;
    browser
        .check_width("lists-compose", width, &mut failures)
        .await;
    publish_from_the_form(&browser, "Send to 1 subscriber?").await;
    browser
        .wait_for_address("the issue's page", |url| {
            url.path().starts_with("/admin/newsletters/") && !url.path().ends_with("/new")
        })
        .await;
    browser.wait_for_heading("Spring meeting").await;
    helpers::eventually_within(Duration::from_secs(30), "the issue to be sent", || async {
        (state_shown(&browser).await == "done").then_some(())
    })
    .await;
    assert_eq!(browser.text_of("#count-sent").await, "1");
    browser.screenshot("lists-walk-issue-done").await;

    // 4. The reader leaves the default list from the link in the issue.
    let emails = app.wait_for_emails(2).await;
    let others: Vec<_> = emails
        .iter()
        .filter(|email| email["Subject"] != "Spring meeting")
        .collect();
    assert_eq!(
        others.len(),
        1,
        "one confirmation for both lists: {others:#?}"
    );
    let preferences = app.local(&link_in_the_issue(
        &emails,
        "Spring meeting",
        reader,
        "/preferences/",
    ));
    browser.client.goto(preferences.as_str()).await.unwrap();
    browser.wait_for_heading("Your lists").await;
    assert_eq!(
        browser.lists_ticked().await,
        [("Newsletter".to_owned(), true), ("Events".to_owned(), true)]
    );
    browser.tick_list("Newsletter", false).await;
    browser
        .press(r#"form[action^="/preferences/"] button[type=submit]"#)
        .await;
    browser.wait_for("#preferences-notice").await;
    assert_eq!(
        browser.text_of("#preferences-notice").await,
        "Your lists are saved."
    );
    assert_eq!(
        browser.lists_ticked().await,
        [
            ("Newsletter".to_owned(), false),
            ("Events".to_owned(), true)
        ]
    );
    assert_eq!(
        memberships_of(&app, reader).await,
        pairs(&[("Events", "confirmed"), ("Newsletter", "unsubscribed")])
    );
    browser
        .check_width("lists-preferences", width, &mut failures)
        .await;
    browser.close().await;

    // 5. The same three pages on a phone.
    let (width, height) = SIZES[1];
    let phone = Browser::start(width, height).await;
    phone.open_the_form(&app).await;
    phone
        .check_width("lists-subscribe-form", width, &mut failures)
        .await;
    phone.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    phone.wait_for_heading("Dashboard").await;
    write_an_issue(
        &phone,
        "Autumn meeting",
        "See you at the **autumn** meeting.",
    )
    .await;
    narrow_the_issue(&phone, "Events", "Confirmed on Events").await;
    assert_eq!(
        phone.text_of("#audience-count").await,
        "Send to 1 subscriber?"
    );
    phone.scroll_to("#compose-lists").await;
    phone
        .check_width("lists-compose", width, &mut failures)
        .await;
    phone.client.goto(preferences.as_str()).await.unwrap();
    phone.wait_for_heading("Your lists").await;
    phone
        .check_width("lists-preferences", width, &mut failures)
        .await;
    phone.close().await;

    assert!(
        failures.is_empty(),
        "pages wider than the window, or whose footer is out of line:\n{}",
        failures.join("\n")
    );
}

/// An issue with what tests a page's width: a wide table, a long link, and
/// (with [`LONG_TITLE`]) a word longer than a phone is wide.
const ARCHIVE_CONTENT: &str = "## What is new\n\nThe **winter** programme is out.\n\n\
     | One | Two | Three | Four | Five | Six | Seven | Eight |\n\
     | --- | --- | --- | --- | --- | --- | --- | --- |\n\
     | Talks | Workshops | Walks | Dinners | Readings | Films | Games | Music |\n\n\
     [a very long link](https://example.com/a/very/long/path/that/goes/on/and/on/and/on)";

#[tokio::test]
async fn an_admin_makes_an_issue_public_and_a_reader_opens_it_and_its_feed_at_any_width() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    store_a_few_subscribers(&app).await;
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;

    write_an_issue(&browser, LONG_TITLE, ARCHIVE_CONTENT).await;
    browser.press("input#public").await;
    browser.screenshot("archive-01-compose-public").await;
    publish_from_the_form(&browser, "Send to 3 subscribers?").await;
    browser
        .wait_for_address("the issue's page", |url| {
            url.path().starts_with("/admin/newsletters/") && !url.path().ends_with("/new")
        })
        .await;
    browser.wait_for("#publicity-state").await;
    let state = browser.text_of("#publicity-state").await;
    assert!(state.starts_with("Public"), "{state}");
    browser.scroll_to("#publicity").await;
    browser.screenshot("archive-02-issue-page-public").await;

    // Every email carries the link to the page the reader is about to open.
    let emails = app.wait_for_emails(3).await;
    let web_path = browser.text_of("a#web-version").await;
    assert!(
        web_path.starts_with("/archive/the-winter-programme-"),
        "{web_path}"
    );
    for email in &emails {
        let html = email["HtmlBody"].as_str().unwrap();
        assert!(
            html.contains(&format!(
                "{}{web_path}\">Read on the web</a>",
                helpers::BASE_URL
            )),
            "{html}"
        );
    }

    browser.press("a#web-version").await;
    browser.wait_for("article#issue").await;
    assert_eq!(browser.path().await, web_path);
    let shown = browser.text_of("article#issue").await;
    assert!(shown.contains("The winter programme is out."), "{shown}");
    for personal in ["Hello", "Unsubscribe", "Choose your lists"] {
        assert!(!shown.contains(personal), "{personal} in {shown}");
    }
    let mut failures = Vec::new();
    browser
        .check_width("archive-issue", 1280, &mut failures)
        .await;
    browser.screenshot("archive-03-web-version-desktop").await;

    // The feed the page links to lists the issue at the page's address.
    let feed_path = browser
        .wait_for("a#feed-link")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(feed_path, "/feed.xml");
    let feed = app.get(&feed_path).await.text().await.unwrap();
    assert!(
        feed.contains(&format!(
            r#"<link rel="alternate" type="text/html" href="{}{web_path}"/>"#,
            helpers::BASE_URL
        )),
        "{feed}"
    );

    browser.press(r#".archive-links a[href="/archive"]"#).await;
    browser.wait_for_heading("Archive").await;
    let listed = browser.texts_of_all("#archive-list li a").await;
    assert_eq!(listed, [LONG_TITLE]);
    browser.check_width("archive", 1280, &mut failures).await;
    browser.screenshot("archive-04-list-desktop").await;
    browser.close().await;

    let phone = Browser::start(390, 844).await;
    phone.assert_as_wide_as(390).await;
    phone
        .client
        .goto(&format!("{}{web_path}", app.address))
        .await
        .unwrap();
    phone.wait_for("article#issue").await;
    phone.check_width("archive-issue", 390, &mut failures).await;
    phone.screenshot("archive-05-web-version-phone").await;
    phone
        .client
        .goto(&format!("{}/archive", app.address))
        .await
        .unwrap();
    phone.wait_for_heading("Archive").await;
    phone.check_width("archive", 390, &mut failures).await;
    phone.screenshot("archive-06-list-phone").await;
    phone.close().await;
    assert!(
        failures.is_empty(),
        "archive pages wider than the window:\n{}",
        failures.join("\n")
    );
}

/// A CSV file in the temporary directory, removed when dropped.
struct ImportFile(PathBuf);

impl ImportFile {
    fn new(name: &str, contents: &str) -> Self {
        let directory = std::env::temp_dir().join(format!("import-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join(name);
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for ImportFile {
    fn drop(&mut self) {
        if let Some(directory) = self.0.parent() {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

/// Three readers and two rows the import refuses, on lines 3 and 5.
const IMPORTED: &str = "email,name\n\
    ada@example.com,Ada Lovelace\n\
    not an address,Nobody\n\
    grace@example.com,Grace Hopper\n\
    ada@example.com,Ada Again\n\
    hedy@example.com,Hedy Lamarr\n";

#[tokio::test]
async fn an_admin_imports_a_file_watches_it_finish_finds_a_reader_and_publishes_to_the_archive() {
    let app = helpers::spawn_app().await;
    app.mock_email_api_ok().await;
    create_admin_with_the_command(&app, "grace", "grace@example.com").await;
    let file = ImportFile::new("readers.csv", IMPORTED);
    let browser = Browser::start(1280, 900).await;
    browser.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    browser.wait_for_heading("Dashboard").await;
    let mut failures = Vec::new();

    browser
        .press(r#".admin-nav a[href="/admin/imports"]"#)
        .await;
    browser.wait_for_heading("Imports").await;
    browser
        .wait_for("input#file")
        .await
        .send_keys(&file.0.to_string_lossy())
        .await
        .unwrap();
    browser
        .fill(
            "consent_source",
            "Signed up on our old site's form, double opt-in",
        )
        .await;
    browser.screenshot("import-01-upload-form").await;
    browser.press("form#upload button[type=submit]").await;

    // The page follows the import to its end, then shows its report.
    browser
        .wait_for_address("the import's page", |url| {
            url.path().starts_with("/admin/imports/")
        })
        .await;
    // The page reloads itself once the import is done, for its report: the
    // server marks the page it renders for a finished import, which the
    // script never does, and which is not reloaded again.
    helpers::eventually("the import to be done", || async {
        let state = browser.text_of_if_there("#import-state").await?;
        (state.to_lowercase() == "done").then_some(())
    })
    .await;
    browser
        .wait_for(r#"section#import[data-finished="true"]"#)
        .await;
    browser.wait_for("table#refusals").await;
    let bar = browser
        .client
        .execute(
            "return document.getElementById('import-progress').value;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(bar, json!(100));
    assert_eq!(browser.text_of("#count-rows_read").await, "5");
    assert_eq!(browser.text_of("#count-memberships_added").await, "3");
    assert_eq!(browser.text_of("#count-refused").await, "2");
    let lines = browser.texts_of_all("#refusals tbody td.number").await;
    assert_eq!(lines, ["3", "5"]);
    browser.check_width("import", 1280, &mut failures).await;
    browser.scroll_to("#report").await;
    browser.screenshot("import-02-done-with-its-report").await;

    // An imported reader is among the subscribers.
    browser
        .press(r#".admin-nav a[href="/admin/subscribers"]"#)
        .await;
    browser.wait_for("#subscribers").await;
    search_subscribers(&browser, "hedy").await;
    assert_eq!(names_listed(&browser).await, ["Hedy Lamarr"]);
    browser.screenshot("import-03-subscriber-found").await;

    // The readers imported confirmed get a public issue, which the archive
    // and the feed show.
    write_an_issue(&browser, "The first issue after the move", ARCHIVE_CONTENT).await;
    browser.press("input#public").await;
    publish_from_the_form(&browser, "Send to 3 subscribers?").await;
    browser
        .wait_for_address("the issue's page", |url| {
            url.path().starts_with("/admin/newsletters/") && !url.path().ends_with("/new")
        })
        .await;
    let web_path = browser.text_of("a#web-version").await;
    browser.press("a#web-version").await;
    browser.wait_for("article#issue").await;
    assert_eq!(browser.path().await, web_path);
    browser
        .client
        .goto(&format!("{}/archive", app.address))
        .await
        .unwrap();
    browser.wait_for_heading("Archive").await;
    let listed = browser.texts_of_all("#archive-list li a").await;
    assert_eq!(listed, ["The first issue after the move"]);
    browser.screenshot("import-04-archive").await;
    let feed = app.get("/feed.xml").await.text().await.unwrap();
    assert!(
        feed.contains("<title>The first issue after the move</title>"),
        "{feed}"
    );
    assert!(feed.contains(&web_path), "{feed}");
    browser
        .client
        .goto(&format!("{}/admin/imports", app.address))
        .await
        .unwrap();
    browser.wait_for_heading("Imports").await;
    browser.check_width("imports", 1280, &mut failures).await;
    let import_page = browser
        .wait_for("#imports tbody td.title a")
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    browser.close().await;

    // Both pages on a phone.
    let phone = Browser::start(390, 844).await;
    phone.sign_in(&app, "grace", ADMIN_PASSWORD).await;
    phone.wait_for_heading("Dashboard").await;
    for (name, path, shows) in [
        ("imports", "/admin/imports".to_owned(), "form#upload"),
        ("import", import_page, "table#refusals"),
    ] {
        phone
            .client
            .goto(&format!("{}{path}", app.address))
            .await
            .unwrap();
        phone.wait_for(shows).await;
        phone.check_width(name, 390, &mut failures).await;
    }
    phone.close().await;
    assert!(
        failures.is_empty(),
        "import pages wider than the window:\n{}",
        failures.join("\n")
    );
}
