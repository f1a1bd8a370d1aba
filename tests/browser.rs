//! End-to-end tests in a real headless Chromium, driven over WebDriver
//! (chromedriver) the way a person would use the service: open the form,
//! fill it in, submit, open the link from the email. Screenshots of every
//! page go to `target/tmp/screenshots/` for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs
//! them); `CHROMIUM` and `CHROMEDRIVER` override the binaries' paths.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// A chromedriver process and a browser session on it, ended on drop.
struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing the driver takes its browser with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A directory removed on drop: each browser gets a fresh profile.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(env_or("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is missing: apt-get install chromium chromium-driver");
        let profile = TempDir(
            std::env::temp_dir().join(format!("newsletter-browser-{}", uuid::Uuid::new_v4())),
        );
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
                format!("--user-data-dir={}", profile.0.display()),
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
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = helpers::eventually("chromedriver to start a session", || {
            let capabilities = capabilities.clone();
            let webdriver = webdriver.clone();
            async move {
                ClientBuilder::rustls()
                    .unwrap()
                    .capabilities(capabilities)
                    .connect(&webdriver)
                    .await
                    .ok()
            }
        })
        .await;
        Self {
            client,
            driver,
            _profile: profile,
        }
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
}
